"""Errors a user can act on.

Every problem caused by input (a file, a row, a config key) is raised as a
`CxrltError` whose message is one paragraph naming what was wrong, where, and
what was expected. The CLI prints that paragraph and exits non-zero without a
traceback (unless `--debug`); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

ECHO_LIMIT = 80  # characters of a user's value quoted back in a message

# reprlib stops at a few items per level, so quoting even a huge nested value costs little.
_ECHO = reprlib.Repr()
_ECHO.maxlevel, _ECHO.maxlist, _ECHO.maxtuple, _ECHO.maxdict, _ECHO.maxset = 3, 6, 6, 6, 6
_ECHO.maxstring = _ECHO.maxother = _ECHO.maxlong = ECHO_LIMIT


def echo(value: Any, limit: int = ECHO_LIMIT) -> str:
    """`repr(value)` cut to about `limit` characters, for messages that quote what the user gave.

    A message quoting a value must stay one readable paragraph however large
    the value is (a long string, a list of thousands of items).
    """
    return clip(_ECHO.repr(value), limit)


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` cut to `limit` characters ("..." marks the cut)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CxrltError(Exception):
    """Base class of the errors the CLI reports as a plain message."""

    exit_code = 2


class InputError(CxrltError):
    """A data file (labels, images, predictions) is missing or malformed."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
        self.path = None if path is None else Path(path)
        self.line = line


class ConfigError(CxrltError):
    """A configuration value is unknown, missing or of the wrong type."""


class ImageDecodeError(InputError):
    """An image file cannot be read as a picture."""


class DiskFull(InputError):
    """A write failed, or would fail, for lack of space; the previous version of the file is kept."""


class TrainingDiverged(CxrltError):
    """The loss became NaN or infinite; training stopped."""

    exit_code = 3


class Interrupted(CxrltError):
    """The user stopped the command (Ctrl-C / SIGINT); the message says where it stopped and how to go on."""

    exit_code = 130
