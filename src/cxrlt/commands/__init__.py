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
    "pseudo-label": "cxrlt.commands.pseudo_label",
    "train": "cxrlt.commands.train",
    "kfold": "cxrlt.commands.kfold",
    "sweep": "cxrlt.commands.sweep",
    "evaluate": "cxrlt.commands.evaluate",
    "compare": "cxrlt.commands.compare",
    "report": "cxrlt.commands.report",
    "predict": "cxrlt.commands.predict",
    "export": "cxrlt.commands.export",
    "push": "cxrlt.commands.push",
    "ensemble": "cxrlt.commands.ensemble",
    "submission": "cxrlt.commands.submission",
    "cam": "cxrlt.commands.cam",
    "localise": "cxrlt.commands.localise",
    "methods": "cxrlt.commands.methods",
}
