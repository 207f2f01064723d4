"""Run, k-fold and sweep folders: their ownership and their one writer (the names are `cxrlt.layout`'s).

A folder is claimed for cxrlt (`cxrlt.ownership`: the marker `cxrlt.json`)
before anything is written into it, locked by its writer (`cxrlt.lock`) for
the life of the command, and in a multi-process launch written by global
rank 0 only; the other ranks attach to it and read. A run folder whose
`config.yaml` exists is a started run (the configuration is written last
at start, after everything that can fail has been checked).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from cxrlt.config import RunConfig, load_config
from cxrlt.errors import ConfigError
from cxrlt.layout import KFoldFiles, RunFiles, SweepFiles
from cxrlt.ownership import FolderLock, OwnedFolder, check_claimable, claim, is_writer, owned, wait_for_writer

KIND = "run"
HINT = "choose a new or empty --out folder"


def _legacy_run(folder: Path) -> bool:
    """A run written before folders carried a marker: its config, and its environment file or stages."""
    files = RunFiles(folder)
    return files.config.is_file() and (files.environment.is_file() or files.stages.is_dir())


class RunFolder(RunFiles):
    """A run folder's paths (`cxrlt.layout.RunFiles`) and the rules for starting, resuming and writing it."""

    @property
    def started(self) -> bool:
        """Whether a run was started here (its configuration is saved)."""
        return self.config.is_file()

    def load_config(self) -> RunConfig:
        """The resolved configuration saved in the run folder."""
        return load_config(self.config)

    def refuse_if_started(self) -> None:
        """A new run may not go into a folder that holds one."""
        if self.started:
            raise ConfigError(
                f"{self.path} already holds a run; continue it with `cxrlt train --resume {self.path}` "
                "or choose another --out folder"
            )

    def require_started(self) -> None:
        """`--resume` and re-evaluation need a started run."""
        if not self.started:
            raise ConfigError(f"{self.path} is not a run folder (no {self.CONFIG}); start one with `cxrlt train CONFIG`")

    def check_claimable(self) -> None:
        """Refuse now, writing nothing, a folder `claim` would refuse (before any slow work)."""
        check_claimable(self.path, KIND, adopt=_legacy_run, hint=HINT)

    def claim(self, *extra: str) -> OwnedFolder:
        """Mark the folder as a run (new or empty, or already a run): nothing foreign is touched.

        `extra` names entries beyond the run's own layout that the caller is
        about to write there (the demo's generated data, a smoke run's images).
        """
        folder = claim(self.path, KIND, adopt=_legacy_run, hint=HINT)
        folder.record(*self.ENTRIES, *extra)
        return folder

    @contextlib.contextmanager
    def writing(self, purpose: str) -> Iterator[FolderLock | None]:
        """Hold the folder's writer lock for the block (global rank 0); other ranks attach and hold nothing."""
        if not is_writer():
            wait_for_writer(self.path, lambda folder: RunFiles(folder).config.is_file(),
                            what=f"the run folder {self.path}")
            yield None
            return
        folder = owned(self.path, KIND) or self.claim()
        with folder.lock(purpose) as lock:
            yield lock


def _legacy_kfold(folder: Path) -> bool:
    """A k-fold folder written before folders carried a marker."""
    files = KFoldFiles(folder)
    return files.config.is_file() and files.state.is_file()


class KFoldFolder(KFoldFiles):
    """A k-fold folder's paths and ownership."""

    KIND = "kfold"

    @property
    def started(self) -> bool:
        return self.config.is_file()

    def claim(self) -> OwnedFolder:
        """Mark the folder as a k-fold run (new or empty, or already one): nothing foreign is touched."""
        folder = claim(self.path, self.KIND, adopt=_legacy_kfold, hint=HINT)
        folder.record(*self.ENTRIES)
        return folder

    def attach(self) -> None:
        """In a non-writing rank: wait until rank 0 holds the folder and has started it."""
        wait_for_writer(self.path, lambda folder: KFoldFiles(folder).config.is_file(),
                        what=f"the k-fold folder {self.path}")


class SweepFolder(SweepFiles):
    """A sweep folder's paths and ownership (a sweep never adopts an unmarked folder: it is newer than markers)."""

    KIND = "sweep"

    @property
    def started(self) -> bool:
        return self.base.is_file()

    def check_claimable(self) -> None:
        """Refuse now, writing nothing, a folder `claim` would refuse."""
        check_claimable(self.path, self.KIND, hint=HINT)

    def claim(self) -> OwnedFolder:
        """Mark the folder as a sweep (new or empty, or already one): nothing foreign is touched."""
        folder = claim(self.path, self.KIND, hint=HINT)
        folder.record(*self.ENTRIES)
        return folder
