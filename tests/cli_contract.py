"""The contract every `cxrlt` command keeps when it refuses bad input, as one assertion.

`assert_refused(argv, says=[...], keep=[folder])` runs `cxrlt ARGV` and
checks that it

- exits with the error's code (2 unless told otherwise), also when the
  command would otherwise run for ever or exhaust memory (`process=True`
  runs it in a fresh interpreter with a time and memory limit);
- prints one short paragraph on stderr, "cxrlt COMMAND: error: ...",
  containing every fragment of `says` (the file, the line, the key, what
  was expected), and no traceback on stderr or stdout;
- leaves every file and folder under each `keep` folder exactly as it was
  (no output, no partial output, no stray temporary file, the user's own
  files unchanged), and none of the `absent` paths in existence.

`run_cxrlt` is the runner alone, for tests that check a successful run's
output.
"""

from __future__ import annotations

import hashlib
import io
import os
import resource
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cxrlt

SRC = Path(cxrlt.__file__).resolve().parents[1]  # a fresh process runs the same code as this one
MESSAGE_LIMIT = 2000  # characters: a paragraph, not a dump of the bad value


@dataclass(frozen=True)
class Outcome:
    """What one `cxrlt` invocation did."""

    code: int | None  # None: it was stopped at the time limit
    out: str
    err: str


def run_cxrlt(argv: Sequence[str], process: bool = False, timeout: float = 60,
              memory: int | None = None) -> Outcome:
    """Run `cxrlt ARGV` in this interpreter (stdout and stderr captured), or with `process=True` in a
    fresh one stopped after `timeout` seconds, its address space limited to `memory` bytes when given."""
    argv = [str(a) for a in argv]
    if process:
        def limit() -> None:
            if memory is not None:
                resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

        env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
        try:
            done = subprocess.run([sys.executable, "-m", "cxrlt", *argv], env=env, capture_output=True, text=True,
                                  timeout=timeout, preexec_fn=limit)
        except subprocess.TimeoutExpired as exc:
            return Outcome(None, _text(exc.stdout), _text(exc.stderr))
        return Outcome(done.returncode, done.stdout, done.stderr)
    from cxrlt.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refusing the command line
            code = exc.code if isinstance(exc.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue())


def assert_refused(
    argv: Sequence[str],
    says: Iterable[str],
    keep: Iterable[Path] = (),
    absent: Iterable[Path] = (),
    code: int = 2,
    process: bool = False,
    timeout: float = 60,
    memory: int | None = None,
) -> str:
    """Run `cxrlt ARGV` and assert the refusal contract (module docstring); return the message."""
    argv = [str(a) for a in argv]
    keep = list(keep)
    before = {folder: snapshot(folder) for folder in keep}
    outcome = run_cxrlt(argv, process=process, timeout=timeout, memory=memory)
    assert outcome.code is not None, f"cxrlt {' '.join(argv)[:200]} did not finish within {timeout} s"
    assert "Traceback" not in outcome.err and "Traceback" not in outcome.out, outcome.err[-3000:]
    assert outcome.code == code, (outcome.code, outcome.err[-3000:])
    command = next(a for a in argv if not a.startswith("-"))
    prefix = f"cxrlt {command}: error: "
    assert outcome.err.startswith(prefix), outcome.err[:3000]
    message = outcome.err[len(prefix):].strip()
    assert len(message) <= MESSAGE_LIMIT, f"{len(message)}-character message: {message[:500]}..."
    assert "\n\n" not in message, message
    for fragment in says:
        assert fragment in message, (fragment, message)
    for folder in keep:
        after = snapshot(folder)
        assert after == before[folder], f"files under {folder} changed: {_changes(before[folder], after)}"
    for path in absent:
        assert not Path(path).exists(), f"{path} was written"
    return message


def snapshot(folder: Path) -> dict[str, str | None]:
    """Every path under `folder` (relative) -> its content hash (None for a folder)."""
    folder = Path(folder)
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        for path in sorted(folder.rglob("*"))
    }


def _changes(before: dict[str, str | None], after: dict[str, str | None]) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    return f"added {added}, removed {removed}, changed {changed}"


def _text(data: bytes | str | None) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data or ""
