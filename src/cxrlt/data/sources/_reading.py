"""Shared CSV reading for the label-file readers: fast, strict, with line numbers.

Every reader goes through `CsvFile`: the file (plain or gzip) is read into
memory once, each record's field count is checked against the header (the
C parser would silently pad a short, truncated row with blanks), and then
pandas' C engine parses only the columns the reader asks for, with explicit
dtypes. Rows keep their 1-based line number in the file (the header is
line 1), so any later check can name the offending lines.

Line numbers are exact for files without quoted fields; for quoted files the
records are located with the `csv` module, which also handles line breaks
inside quotes.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import io
import re
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pandas.errors

from cxrlt.errors import InputError, echo
from cxrlt.labels import CHEXPERT14, CXRLT2023, CXRLT2024, CXRLT2024_ZERO_SHOT, NIH14, canonical_key

SHOWN = 5  # offending lines listed in an error message


_KNOWN_FINDINGS = {
    canonical_key(name) for name in NIH14 + CHEXPERT14 + CXRLT2023 + CXRLT2024 + CXRLT2024_ZERO_SHOT
}


def is_known_finding(name: str) -> bool:
    """Whether `name` spells a finding of a built-in label space (any spelling)."""
    return canonical_key(name) in _KNOWN_FINDINGS


def column_key(name: str) -> str:
    """Header names compared without case, spaces or punctuation."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (judged by content, not name)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except IsADirectoryError:
        raise InputError("is a folder, expected a file", path) from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"gzip file is damaged or truncated ({exc})", path) from None
    return data


def quote(value: Any) -> str:
    """A field's value as quoted text for messages (pandas may parse categories as numbers), cut when long."""
    return echo(str(value))


def format_lines(lines: Sequence[int], details: Sequence[str] | None = None, total: int | None = None) -> str:
    """'line 5 (x), line 9 (y) and 3 more' from the first offending lines."""
    items = []
    for i, line in enumerate(lines[:SHOWN]):
        detail = f" ({details[i]})" if details is not None and details[i] else ""
        items.append(f"line {int(line)}{detail}")
    total = len(lines) if total is None else total
    more = f" and {total - len(items)} more" if total > len(items) else ""
    return ", ".join(items) + more


class CsvFile:
    """A delimited label file: header, per-record field check, typed columns.

    Args:
        path: the file (plain or gzip).
        what: what the file should be, for messages ("NIH label file").
        sep: the field separator.
    """

    def __init__(self, path: str | Path, what: str, sep: str = ","):
        self.path = Path(path)
        self.what = what
        self.sep = sep
        data = read_bytes(self.path)
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise InputError(f"is not UTF-8 text (byte {exc.start}); expected a {what} (CSV)", self.path, line) from None
        if not text.strip():
            raise InputError(f"is empty; expected a {what} (CSV) starting with a header line", self.path)
        self._data = data
        if '"' in text:
            header, counts, lines, blank, last = self._scan_quoted(text)
        else:
            header, counts, lines, blank, last = self._scan_plain(data)
        # A record ends where the next begins; one spanning several lines holds a quoted line break.
        ends = np.append(lines[1:] - 1, last) if len(lines) else lines
        if not header or all(not name.strip() for name in header):
            raise InputError(f"line 1 is blank; expected the header line of a {what}", self.path, 1)
        self.header = [name.strip() for name in header]
        self._blank = blank
        bad = np.flatnonzero((counts != len(header)) & ~blank)
        if len(bad):
            details = [f"{int(counts[i])} fields" for i in bad[:SHOWN]]
            raise InputError(
                f"rows with a wrong number of fields (the header has {len(header)}): "
                + format_lines(lines[bad], details) + _runaway_hint(lines[bad[0]], ends[bad[0]]),
                self.path,
                int(lines[bad[0]]),
            )
        if blank.all():
            raise InputError(f"has a header but no data rows; expected a {what}", self.path)
        self.lines: np.ndarray = lines[~blank]
        self._ends = ends[~blank]

    # ------------------------------------------------------------ scanning
    def _scan_plain(self, data: bytes) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, int]:
        """Field counts per line by counting separators (no quotes in the file)."""
        raw = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(raw == ord("\n"))
        if raw[-1] != ord("\n"):
            ends = np.append(ends, len(raw))
        starts = np.concatenate([[0], ends[:-1] + 1])
        seps = np.flatnonzero(raw == ord(self.sep))
        # separators before each line end, differenced: separators per line
        counts = np.diff(np.searchsorted(seps, ends), prepend=0) + 1
        length = ends - starts
        has_cr = (length > 0) & (raw[np.minimum(ends - 1, len(raw) - 1)] == ord("\r"))
        blank = (length - has_cr) == 0
        first = data[: ends[0]].decode("utf-8").rstrip("\r")
        header = first.split(self.sep)
        lines = np.arange(2, len(ends) + 1)
        return header, counts[1:], lines, blank[1:], len(ends)

    def _scan_quoted(self, text: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, int]:
        """Records located by the csv module (quoted fields may hold line breaks)."""
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=self.sep)
        counts, lines, blank = [], [], []
        previous = 0
        header: list[str] | None = None
        try:
            for record in reader:
                start = previous + 1
                previous = reader.line_num
                if header is None:
                    header = record
                    continue
                counts.append(len(record))
                lines.append(start)
                blank.append(len(record) == 0)
        except csv.Error as exc:
            if "field limit" in str(exc):
                # The reader gives up deep inside the runaway field; the quote was opened where the record began.
                raise InputError(
                    f'a quoted field opened on this line is never closed: it runs on to line {reader.line_num}, past '
                    f'the CSV field size limit; check this line for an unbalanced quote (")', self.path, previous + 1,
                ) from None
            raise InputError(f"cannot be split into fields ({exc})", self.path, reader.line_num) from None
        # A quote left open in the last record swallows the rest of the file (or of its own line) without an
        # error from the lenient reader; a strict reader of that record alone says it ended inside quotes.
        if lines and self._ends_inside_quotes(text, lines[-1]):
            raise InputError(
                f'a quoted field opened on this line is never closed: it runs on to the end of the file (line '
                f'{reader.line_num}); check this line for an unbalanced quote (")', self.path, lines[-1],
            )
        return (
            header or [],
            np.asarray(counts, dtype=np.int64),
            np.asarray(lines, dtype=np.int64),
            np.asarray(blank, dtype=bool),
            reader.line_num,
        )

    def _ends_inside_quotes(self, text: str, first_line: int) -> bool:
        """Whether the file's last record, from line `first_line` to the end, ends inside a quoted field."""
        tail = text.split("\n", first_line - 1)[-1]
        try:
            for _ in csv.reader(io.StringIO(tail, newline=""), delimiter=self.sep, strict=True):
                pass
        except csv.Error as exc:
            return "unexpected end of data" in str(exc)
        return False

    def shown_header(self) -> str:
        """The header for messages: its column names, unless line 1 is not a list of columns.

        A single field means the file is probably not a label table at all (a
        mistyped path), so its first line is not repeated: it may be private.
        """
        if len(self.header) > 1:
            return ", ".join(self.header)
        return (f"one field, not columns separated by {self.sep!r} (its content is not shown; is this "
                f"a {self.what}?)")

    # ------------------------------------------------------------- columns
    def find(self, *names: str) -> str | None:
        """The header name matching any of `names` (ignoring case and punctuation)."""
        keys = {column_key(name) for name in names}
        for column in self.header:
            if column_key(column) in keys:
                return column
        return None

    def require(self, expected: Mapping[str, Sequence[str]]) -> dict[str, str]:
        """Map each role to its header column; one error lists every missing one.

        `expected` maps a role to the accepted spellings, the first being the
        one named in messages.
        """
        found: dict[str, str] = {}
        missing = []
        for role, names in expected.items():
            column = self.find(*names)
            if column is None:
                shown = self.header if len(self.header) > 1 else []  # see shown_header
                close = difflib.get_close_matches(names[0], shown, n=1, cutoff=0.6)
                hint = f" (found {close[0]!r}: renamed?)" if close else ""
                missing.append(f"{names[0]!r}{hint}")
            else:
                found[role] = column
        if missing:
            raise InputError(
                f"the header lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"expected in a {self.what}; the header has: {self.shown_header()}",
                self.path,
                1,
            )
        return found

    def read(self, dtypes: Mapping[str, Any]) -> pd.DataFrame:
        """Parse the named columns with their dtypes; blank lines are dropped.

        Only empty fields are missing (NA, null... are kept as text), so a
        value is never silently turned into a blank.
        """
        columns = list(dtypes)
        repeated = sorted({c for c in columns if self.header.count(c) > 1})
        if repeated:
            raise InputError(f"the header names the column(s) {', '.join(map(repr, repeated))} twice", self.path, 1)
        # Our own unique names replace the header row, so that stripped or
        # repeated header names cannot confuse pandas' column matching.
        names = [name if self.header.index(name) == i else f"{name}\x00{i}" for i, name in enumerate(self.header)]
        try:
            frame = pd.read_csv(
                io.BytesIO(self._data),
                sep=self.sep,
                engine="c",
                header=0,
                names=names,
                usecols=columns,
                dtype=dict(dtypes),
                skip_blank_lines=False,
                keep_default_na=False,
                na_values=[""],
                index_col=False,
            )
        except pandas.errors.ParserError as exc:
            raise InputError(f"cannot be parsed as CSV ({exc})", self.path) from None
        if len(frame) != len(self._blank):
            raise InputError(
                f"rows could not be delimited consistently ({len(frame)} parsed, {len(self._blank)} expected); "
                "check for unbalanced quotes",
                self.path,
            )
        frame = frame[columns][~self._blank].reset_index(drop=True)
        self._refuse_line_breaks(frame, dtypes)
        return frame

    def _refuse_line_breaks(self, frame: pd.DataFrame, dtypes: Mapping[str, Any]) -> None:
        """Refuse a value that a quote opened on one line and closed lines later made of several rows.

        Such a value spans lines. In an id or path column (read as text) a
        line break is never right; in another column it is refused when a
        line inside it has as many fields as a row (it swallowed rows).
        """
        spanning = np.flatnonzero(self._ends > self.lines)
        for column in frame.columns if len(spanning) else ():
            values = [str(value) for value in frame[column].iloc[spanning]]  # few: only multi-line records
            broken = np.array([("\n" in value or "\r" in value)
                               and (dtypes[column] is str or self._holds_rows(value)) for value in values])
            if broken.any():
                row = spanning[np.flatnonzero(broken)[0]]
                start, end = int(self.lines[row]), int(self._ends[row])
                raise InputError(
                    f'column {column!r} holds a value running from this line to line {end}: a quote (") opened '
                    f"here closes only on line {end}, so the rows between became part of one value; close the "
                    "quote on this line",
                    self.path,
                    start,
                )

    def _holds_rows(self, value: str) -> bool:
        """Whether a line of `value` after its first has the header's number of fields."""
        return any(line.count(self.sep) == len(self.header) - 1 for line in value.splitlines()[1:])

    # -------------------------------------------------------------- errors
    def row_error(self, problem: str, rows: np.ndarray, details: Sequence[str] | None = None) -> InputError:
        """An InputError at the first of `rows` (positions or mask) listing a few lines."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        lines = self.lines[rows]
        if len(rows) == 1:  # the location prefix already names the line
            detail = f"; found {details[0]}" if details else ""
            return InputError(f"{problem}{detail}", self.path, int(lines[0]))
        return InputError(f"{problem}: {format_lines(lines, details, len(rows))}", self.path, int(lines[0]))

    def check_required_values(self, frame: pd.DataFrame, columns: Iterable[str]) -> None:
        """Every row must have a value in each of `columns`."""
        for column in columns:
            blank = frame[column].isna().to_numpy()
            if blank.any():
                raise self.row_error(f"column {column!r} is blank", blank)

    def check_unique(self, values: pd.Series, column: str) -> None:
        """Raise when `values` (one per row) repeat, listing the repeated rows."""
        repeated = values.duplicated(keep=False).to_numpy()
        if repeated.any():
            rows = np.flatnonzero(repeated)
            first = values.iloc[rows[0]]
            details = [repr(values.iloc[i]) for i in rows[:SHOWN]]
            raise self.row_error(
                f"{column} must be unique but repeats (first {first!r})", rows, details
            )


def _runaway_hint(start: int, end: int) -> str:
    """Say so when a record spans several lines: a quote opened on its first line and closed only lines later."""
    if end == start:
        return ""
    return (f" (the record starting on line {int(start)} runs to line {int(end)}: "
            'is a quote (") opened there and not closed?)')


def parse_categorical(
    values: pd.Series, convert: Callable[[str], float | None]
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a categorical column through `convert` applied once per category.

    Returns float32 values (NaN for blank fields) and a mask of rows whose
    text `convert` rejected (returned None).
    """
    categorical = values.astype("category") if not isinstance(values.dtype, pd.CategoricalDtype) else values
    categories = categorical.cat.categories
    decoded = np.empty(len(categories) + 1, dtype=np.float32)
    invalid = np.zeros(len(categories) + 1, dtype=bool)
    for i, text in enumerate(categories):
        value = convert(str(text))
        if value is None:
            invalid[i] = True
            decoded[i] = np.nan
        else:
            decoded[i] = value
    decoded[-1] = np.nan  # code -1: blank field
    codes = categorical.cat.codes.to_numpy()
    return decoded[codes], invalid[codes]


def number(text: str) -> float | None:
    """A float from a field's text, or None when it is not a number."""
    try:
        return float(text.strip())
    except ValueError:
        return None


def label_values(allowed: Sequence[float]) -> Callable[[str], float | None]:
    """A converter accepting numbers equal to one of `allowed` (1, 1.0, 1.00...)."""
    allowed_set = {float(a) for a in allowed}

    def convert(text: str) -> float | None:
        value = number(text)
        if value is None or value not in allowed_set:
            return None
        return value

    return convert


def read_label_columns(
    file: CsvFile,
    frame: pd.DataFrame,
    columns: Sequence[str],
    allowed: Sequence[float],
    expected: str,
) -> np.ndarray:
    """Decode label columns to a float32 matrix (NaN = blank), checking values.

    One error lists the first offending lines over all columns, with the
    column and the text found.
    """
    convert = label_values(allowed)
    matrix = np.empty((len(frame), len(columns)), dtype=np.float32)
    offending: list[tuple[int, str, str]] = []
    n_bad = 0
    for j, column in enumerate(columns):
        values, invalid = parse_categorical(frame[column], convert)
        matrix[:, j] = values
        if invalid.any():
            rows = np.flatnonzero(invalid)
            n_bad += len(rows)
            offending.extend((int(r), column, str(frame[column].iloc[r])) for r in rows[:SHOWN])
    if offending:
        offending.sort()
        rows = np.array([r for r, _, _ in offending])
        details = [f"{column!r} is {text!r}" for _, column, text in offending]
        raise InputError(
            f"label values outside {expected}: "
            + format_lines(file.lines[rows], details, n_bad),
            file.path,
            int(file.lines[rows[0]]),
        )
    return matrix


def apply_policies(labels: np.ndarray, uncertain: str, blank: str) -> np.ndarray:
    """Resolve -1 (uncertain) and NaN (not mentioned) by the chosen policies.

    uncertain: "ones" -> 1, "zeros" -> 0, "ignore" -> NaN (masked);
    blank: "zeros" -> 0, "ignore" -> NaN.
    """
    labels = labels.copy()
    if blank == "zeros":
        labels[np.isnan(labels)] = 0.0
    labels[labels == -1.0] = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[uncertain]
    return labels


def normalise_sex(values: pd.Series) -> pd.Series:
    """'M' / 'F' from the spellings the datasets use; anything else is missing."""
    mapping = {"m": "M", "male": "M", "f": "F", "female": "F"}
    return values.astype("str").str.strip().str.lower().map(mapping)


def normalise_split(file: CsvFile, values: pd.Series, column: str) -> pd.Series:
    """train / val / test from a split column (validate, valid, validation -> val)."""
    mapping = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
               "validation": "val", "test": "test", "testing": "test"}
    text = values.astype("str").str.strip().str.lower()
    mapped = text.map(mapping)
    bad = (values.notna() & mapped.isna()).to_numpy()
    if bad.any():
        rows = np.flatnonzero(bad)
        raise file.row_error(
            f"column {column!r} has split names other than train, val (validate) or test",
            rows,
            [quote(values.iloc[r]) for r in rows[:SHOWN]],
        )
    return mapped


def check_images_folder(images: Path | None) -> Path | None:
    """The image folder, which must exist when given."""
    if images is not None and not Path(images).is_dir():
        raise InputError("image folder not found (expected a folder of images)", images)
    return None if images is None else Path(images)
