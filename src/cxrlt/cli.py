"""The `cxrlt` command line: one sub-command per module in `cxrlt.commands`.

Command modules import their heavy dependencies (torch, pandas...) inside
`run`, so `cxrlt --help` stays fast. Errors caused by input are printed as
one paragraph with a non-zero exit code; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import textwrap
import warnings
from typing import Sequence

from cxrlt import __version__
from cxrlt.commands import COMMANDS
from cxrlt.errors import CxrltError, Interrupted
from cxrlt.processes import follow_launcher
from cxrlt.progress import ENV_DISABLE


class CommandParser(argparse.ArgumentParser):
    """A sub-command's parser: its positionals (CONFIG, KEY=VALUE overrides...) may come before, between
    or after the options, as in `cxrlt train CONFIG --out DIR train.epochs=3`.

    Plain argparse stops filling a `nargs="*"` positional at the first option,
    so overrides after an option were "unrecognized". A parser with its own
    sub-commands (`cxrlt labels graph`) cannot be parsed intermixed and keeps
    the plain rules.
    """

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        nested = any(action.nargs == argparse.PARSER for action in self._actions)
        if self._intermixing or nested:
            return super().parse_known_args(args, namespace)
        # parse_known_intermixed_args parses in two passes, each through parse_known_args.
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command attached."""
    parser = argparse.ArgumentParser(
        prog="cxrlt",
        description="Multi-label, long-tailed disease recognition on chest X-rays.",
        epilog="Run `cxrlt COMMAND --help` for the options and an example of each command.",
    )
    parser.add_argument("--version", action="version", version=f"cxrlt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP + ("\n\n" + textwrap.dedent(module.DESCRIPTION).strip() if getattr(module, "DESCRIPTION", "") else ""),
            epilog="example:\n" + textwrap.indent(textwrap.dedent(module.EXAMPLE).strip(), "  "),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks for errors")
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def _configure_output(quiet_progress: bool) -> None:
    """Our INFO messages to stderr; library chatter down to warnings."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    ours = logging.getLogger("cxrlt")
    ours.handlers[:] = [handler]
    ours.setLevel(logging.INFO)
    ours.propagate = False
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    if quiet_progress:
        os.environ[ENV_DISABLE] = "1"  # every bar of the toolkit, also in worker processes


def user_message(exc: CxrltError) -> str:
    """The error's own paragraph, also when it was raised in a DataLoader worker process.

    PyTorch re-raises a worker's exception with the worker's formatted
    traceback as its message; of that, only the text after the final
    "module.ErrorName: " is ours.
    """
    text = str(exc)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        marker = f"\n{type(exc).__module__}.{type(exc).__qualname__}: "
        position = text.rfind(marker)
        if position >= 0:
            return text[position + len(marker):].strip()
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cxrlt` console script; returns the exit code."""
    follow_launcher()
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_output(quiet_progress=getattr(args, "no_progress", False))
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except Interrupted as exc:
        print(f"cxrlt {args.command}: interrupted: {user_message(exc)}", file=sys.stderr)
        return exc.exit_code
    except CxrltError as exc:
        if args.debug:
            raise
        print(f"cxrlt {args.command}: error: {user_message(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"cxrlt {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`cxrlt methods | head`): stop quietly as Unix tools do. Pointing stdout at
        # /dev/null keeps the interpreter's final flush from raising the same error again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # killed by SIGPIPE, as a shell reports it


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
