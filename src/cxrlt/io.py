"""Atomic file output: every file the toolkit writes is complete or absent.

All writers go through `atomic_path`, which hands out a temporary name in the
destination folder and renames it over the destination only when the block
finishes without an exception (rename within one file system is atomic).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from cxrlt.errors import ConfigError, DiskFull, InputError

# Errors a write raises when the file system (or the user's quota) is full.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it to `path`.

    The temporary file keeps the destination's suffix (or `suffix`) so that
    libraries choosing a format by extension (matplotlib, pandas) still work.
    On failure the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        # mkstemp creates 0600 files; give the result the usual permissions.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in DISK_FULL:
            raise disk_full(path) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def disk_full(path: str | Path, need: int | None = None) -> DiskFull:
    """The error for a write to `path` that did not (or would not) fit; the previous version of the file is kept."""
    path = Path(path)
    return DiskFull(f"{no_space_left(path.parent, need)}; {path.name} was not written and its previous version (if any) is kept. Free some "
                    "space, or write to another disk", path)


def ensure_space(path: str | Path, need: int) -> None:
    """Refuse (DiskFull) before writing `need` bytes to `path` when its disk has less free."""
    probe = Path(path).parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if shutil.disk_usage(probe).free < need:
        raise disk_full(path, need)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically (NaN is written as null)."""
    return write_text(path, json.dumps(_finite_or_none(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, reporting a missing or malformed file as an InputError."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", path, exc.lineno) from None


def write_dataframe_csv(path: str | Path, frame: Any, **kwargs: Any) -> Path:
    """Write a pandas DataFrame to CSV atomically (index omitted by default)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)
    return Path(path)


def save_figure(path: str | Path, figure: Any, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    kwargs.setdefault("dpi", 120)
    kwargs.setdefault("bbox_inches", "tight")
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    finally:
        plt.close(figure)
    return Path(path)




def no_space_left(path: str | Path, needed: int | None) -> str:
    """'no space left on MOUNT: N free, M needed' (or without the need, when unknown): how every full-disk error starts."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    mount = probe.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    need = f", {format_size(needed)} needed" if needed is not None else ""
    return f"no space left on {mount}: {format_size(free)} free{need}"


def format_size(n: int) -> str:
    """A byte count for people: 812 bytes, 3.4 MB, 1.25 GB (powers of 1000)."""
    if n < 1000:
        return f"{n} bytes"
    if n < 1e6:
        return f"{n / 1e3:.1f} kB"
    if n < 1e9:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e9:.2f} GB"


def _finite_or_none(obj: Any) -> Any:
    """Replace NaN/inf floats (not valid JSON) by None, recursively."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(value) for value in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _finite_or_none(obj.item())
    return obj


def safe_name(text: str) -> str:
    """`text` as one file name: letters, digits, '.', '-' and '_' (runs of anything else become one '_').

    The guard for a name taken from a data file (an image id, a class name)
    that decides where the toolkit writes: the result has no separator and
    does not start with '.', so it stays in the folder it is joined to.
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return cleaned or "unnamed"


def check_output(
    path: str | Path, option: str, *, folder: bool = False, inputs: Iterable[str | Path | None] = ()
) -> Path:
    """Refuse, before any work, an output path the command cannot or must not write.

    Commands call this first for each output option, so that a bad `--out`
    costs nothing rather than all the scoring before it. A file output must
    not be an existing folder (`folder=False`), a folder output not an
    existing file; the nearest existing parent must be a folder the user may
    write in; and the path must not be one of `inputs` (the files the same
    command reads), which the output would replace. ConfigError names the
    option; returns `path` as a Path.
    """
    path = Path(path)
    if not folder and path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give the path of a file to write (it may be inside "
                          "that folder)")
    if folder and path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file; give a folder to write into")
    for given in inputs:
        if given is not None and Path(given).resolve() == path.resolve():
            raise ConfigError(f"{option} {path}: is also an input of this command; writing there would replace "
                              "it, give another name")
    start = path if folder else path.parent
    existing = next(p for p in (start, *start.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{option} {path}: {existing} is a file, so no folder can be made there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: no permission to write in {existing}")
    return path


def user_cache_dir() -> Path:
    """Where generated data is kept between runs: $CXRLT_CACHE, else $XDG_CACHE_HOME/cxrlt, else ~/.cache/cxrlt."""
    if os.environ.get("CXRLT_CACHE"):
        return Path(os.environ["CXRLT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cxrlt"
