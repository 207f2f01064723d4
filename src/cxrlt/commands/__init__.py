"""Sub-commands of the `cxrlt` CLI: name -> module.

Each module defines HELP (one line), EXAMPLE (a real command line), optional
DESCRIPTION, `add_arguments(parser)` and `run(args) -> int`, and imports its
heavy dependencies inside `run`.
"""

COMMANDS: dict[str, str] = {
    "demo": "cxrlt.commands.demo",
    "prepare": "cxrlt.commands.prepare",
    "check": "cxrlt.commands.check",
    "stats": "cxrlt.commands.stats",
    "labels": "cxrlt.commands.labels",
    "train": "cxrlt.commands.train",
    "evaluate": "cxrlt.commands.evaluate",
    "predict": "cxrlt.commands.predict",
}
