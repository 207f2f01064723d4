"""`python -m cxrlt` runs the command-line interface."""

from cxrlt.cli import main

raise SystemExit(main())
