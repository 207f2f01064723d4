"""Folders cxrlt owns: a marker written first, an exclusive lock, removal of our own entries only.

Every folder cxrlt writes into as a whole (a run, a k-fold run, a prepared
cache, a sweep) is either new, or already marked as cxrlt's by the marker
file `cxrlt.json`, which is the first thing written into it. The marker
names the folder's kind and lists the top-level entries cxrlt created there;
cleanup and `--overwrite` remove those entries and nothing else. A folder
that holds anything without the marker belongs to somebody else and is
refused *before* anything in it is touched, naming what is there.

One writer per folder: `FolderLock` takes an exclusive `flock` on
`cxrlt.lock` for the life of the writing process. The kernel releases it
when the process exits or dies, so a lock file left by a crash is not a
held lock (the stale-lock rule needs no timeout or pid check). A second
process stops at once with a message naming the holder.

Multi-process training (DDP) has one writer, global rank 0; the other ranks
*attach* (`wait_for_writer`): they wait until the writer holds the lock of
the folder they were launched for, then read, never write.

This module is the one owner of the marker and lock file names.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from cxrlt import __version__
from cxrlt.errors import InputError
from cxrlt.io import read_json, write_json

MARKER = "cxrlt.json"
LOCK = "cxrlt.lock"
# Entries of an owned folder that belong to the ownership mechanism itself.
BOOKKEEPING = (MARKER, LOCK)
SHOWN = 6  # entries named in a refusal


def check_name(name: str, what: str = "run name") -> str:
    """A plain folder name: no separator, no `..`, not absolute, not hidden, not empty."""
    text = str(name)
    if (not text or text in (".", "..") or text.startswith(".") or "/" in text or "\\" in text
            or os.sep in text or "\x00" in text or len(text) > 200):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise InputError(
            f"the {what} {shown!r} is not a plain folder name: use letters, digits, '-', '_' (no '/', no '..', "
            "not starting with '.')"
        )
    return text


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _listing(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def read_marker(folder: str | Path) -> dict | None:
    """The marker of `folder`, or None when it has none (or an unreadable one)."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        marker = read_json(path)
    except InputError:
        return None
    return marker if isinstance(marker, dict) and "kind" in marker else None


@dataclass
class OwnedFolder:
    """A folder marked as cxrlt's, of one kind ("run", "kfold", "cache", "sweep", "demo")."""

    path: Path
    kind: str

    def marker(self) -> dict:
        """The marker's content (kind, version, created, entries)."""
        return read_marker(self.path) or {"kind": self.kind, "entries": []}

    def entries(self) -> list[str]:
        """Top-level entries cxrlt created here (besides the marker and lock)."""
        return list(self.marker().get("entries", []))

    def record(self, *names: str) -> None:
        """Note top-level entries cxrlt is about to create (call before writing them)."""
        marker = self.marker()
        known = list(marker.get("entries", []))
        new = [name for name in names if name not in known and name not in BOOKKEEPING]
        if new:
            marker["entries"] = known + new
            write_json(self.path / MARKER, marker)

    def remove_owned(self, names: Iterable[str] | None = None) -> list[str]:
        """Delete recorded entries (all, or those of `names` that are recorded); return what was removed.

        Temporary files named after a recorded entry (`.NAME.xxxx`, left by an
        interrupted atomic write) go too. Anything not recorded stays.
        """
        recorded = self.entries()
        targets = recorded if names is None else [name for name in names if name in recorded]
        removed = []
        for child in list(self.path.iterdir()):
            if child.name in targets or _is_temporary_of(child.name, targets):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink(missing_ok=True)
                removed.append(child.name)
        remaining = [name for name in recorded if name not in targets]
        marker = self.marker()
        marker["entries"] = remaining
        write_json(self.path / MARKER, marker)
        return removed

    def lock(self, purpose: str = "") -> "FolderLock":
        """An exclusive lock on this folder (a context manager; `acquire` raises if another process holds it)."""
        return FolderLock(self.path, purpose or self.kind)


def _is_temporary_of(name: str, recorded: Iterable[str]) -> bool:
    return name.startswith(".") and any(name.startswith(f".{entry}.") for entry in recorded)


def claim(folder: str | Path, kind: str, adopt: Callable[[Path], bool] | None = None,
          hint: str = "choose a new or empty folder") -> OwnedFolder:
    """Make `folder` cxrlt's, as `kind`, without touching anything that is not ours.

    - absent or empty: created and marked (the marker is the first file);
    - marked as `kind`: returned as it is (what it holds is the caller's business);
    - marked as another kind: refused;
    - unmarked but `adopt(folder)` recognises it as a `kind` folder written
      by an earlier cxrlt: marked, with its current entries recorded;
    - anything else: refused, naming what is there.
    """
    folder = Path(folder)
    state = check_claimable(folder, kind, adopt, hint)
    if state == "owned":
        return OwnedFolder(folder, kind)
    owned_folder = _mark(folder, kind)
    if state == "adopt":
        owned_folder.record(*(name for name in _entries(folder) if name not in BOOKKEEPING))
    return owned_folder


def check_claimable(folder: str | Path, kind: str, adopt: Callable[[Path], bool] | None = None,
                    hint: str = "choose a new or empty folder") -> str:
    """What `claim` would do ("new", "owned" or "adopt"), or its refusal, without writing anything."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"exists and is not a folder; {hint}", folder)
    if not folder.is_dir():
        return "new"
    marker = read_marker(folder)
    if marker is not None:
        if marker["kind"] != kind:
            raise InputError(f"holds a cxrlt {marker['kind']} folder, not a {kind}; {hint}", folder)
        return "owned"
    present = [name for name in _entries(folder) if name not in BOOKKEEPING]
    if not present:
        return "new"
    if adopt is not None and adopt(folder):
        return "adopt"
    raise InputError(
        f"holds files cxrlt did not write ({_listing(present)}); nothing was changed. cxrlt writes only into "
        f"new or empty folders and its own {kind} folders; {hint}", folder
    )


def _mark(folder: Path, kind: str) -> OwnedFolder:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder ({exc.strerror})", folder) from None
    write_json(folder / MARKER, {"kind": kind, "cxrlt": __version__,
                                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                 "entries": []})
    return OwnedFolder(folder, kind)


def owned(folder: str | Path, kind: str) -> OwnedFolder | None:
    """`folder` as an owned folder of `kind` when its marker says so, else None."""
    marker = read_marker(folder)
    return OwnedFolder(Path(folder), kind) if marker is not None and marker["kind"] == kind else None


# ------------------------------------------------------------------- lock
def launch_id() -> str | None:
    """What identifies one multi-process launch in the environment (torchrun's run id or the rendezvous port)."""
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return f"torchelastic:{os.environ['TORCHELASTIC_RUN_ID']}"
    if os.environ.get("MASTER_PORT"):
        return f"{os.environ.get('MASTER_ADDR', '')}:{os.environ['MASTER_PORT']}"
    return None


class FolderLock:
    """Exclusive `flock` on FOLDER/cxrlt.lock, held from `acquire` to `release` (or process end)."""

    def __init__(self, folder: str | Path, purpose: str):
        self.folder = Path(folder)
        self.purpose = purpose
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK

    def acquire(self) -> "FolderLock":
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise _in_use(self.folder) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                  "command": " ".join(sys.argv)[:300], "launch": launch_id(),
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        with suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _in_use(folder: Path) -> InputError:
    return InputError(
        f"is in use by another cxrlt process ({describe_holder(folder)}); one process writes a folder at a time. "
        "Wait for it to finish (or stop it), or choose another folder", folder
    )


def refuse_if_locked(folder: str | Path) -> None:
    """Stop at once when another process holds `folder`'s lock (before any slow work)."""
    if is_locked(folder):
        raise _in_use(Path(folder))


def holder_info(folder: str | Path) -> dict:
    """What the last holder of the lock wrote about itself ({} if nothing readable)."""
    try:
        info = json.loads((Path(folder) / LOCK).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def describe_holder(folder: str | Path) -> str:
    info = holder_info(folder)
    if not info:
        return "holder unknown"
    return (f"pid {info.get('pid')} on {info.get('host')}, `{info.get('command', '')}`, "
            f"since {info.get('since')}")


def is_locked(folder: str | Path) -> bool:
    """Whether some process holds the folder's lock right now."""
    import fcntl

    path = Path(folder) / LOCK
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def wait_for_writer(folder: str | Path, ready: Callable[[Path], bool], timeout: float | None = None,
                    what: str = "the run folder") -> None:
    """Block until the writer process holds `folder`'s lock and `ready(folder)` is true.

    Used by the non-writing ranks of a multi-process launch. When both the
    writer and this process know their launch id, they must match, so a rank
    never attaches to a folder another launch is writing. `timeout` defaults
    to $CXRLT_ATTACH_TIMEOUT seconds, else 600.
    """
    folder = Path(folder)
    limit = float(os.environ.get("CXRLT_ATTACH_TIMEOUT", 600)) if timeout is None else timeout
    deadline = time.monotonic() + limit
    mine = launch_id()
    while True:
        if is_locked(folder) and ready(folder):
            theirs = holder_info(folder).get("launch")
            if mine is None or theirs is None or theirs == mine:
                return
        if time.monotonic() > deadline:
            raise InputError(
                f"this process is not rank 0 of a multi-process launch and waited {limit:.0f} s for "
                f"rank 0 to open {what}; rank 0 did not (it may have stopped with an error: see its output). "
                "Set CXRLT_ATTACH_TIMEOUT to wait longer", folder
            )
        time.sleep(0.2)


# ------------------------------------------------------------ process rank
_RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


def is_writer() -> bool:
    """Whether this process writes shared outputs: global rank 0 of a multi-process launch, or a lone process.

    torchrun and MPI-style launchers set RANK (or their own variable) before
    the program starts, SLURM sets SLURM_PROCID for each of its tasks;
    Lightning's own launcher starts the other local ranks with LOCAL_RANK
    (and NODE_RANK on other machines) set, while its rank-0 process starts
    with none of them.
    """
    for name in _RANK_VARIABLES:
        if os.environ.get(name, "0").strip() not in ("", "0"):
            return False
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and os.environ.get("SLURM_PROCID", "0") != "0":
        return False
    local = os.environ.get("LOCAL_RANK", "0").strip() or "0"
    node = (os.environ.get("NODE_RANK") or os.environ.get("GROUP_RANK") or "0").strip()
    return local == "0" and node == "0"

