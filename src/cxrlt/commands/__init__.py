"""Sub-commands of the `cxrlt` CLI: name -> module.

Each module defines HELP (one line), EXAMPLE (a real command line), optional
DESCRIPTION, `add_arguments(parser)` and `run(args) -> int`, and imports its
heavy dependencies inside `run`.
"""

COMMANDS: dict[str, str] = {
    "labels": "cxrlt.commands.labels",
}
