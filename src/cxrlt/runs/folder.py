"""The run folder: its file names, its ownership and its one writer.

A run folder is claimed for cxrlt (`cxrlt.ownership`) before anything is
written into it, locked by its writer for the life of the command, and in a
multi-process launch written by global rank 0 only; the other ranks attach
to it and read. Layout::

    RUN_DIR/cxrlt.json, cxrlt.lock     ownership marker and writer lock
    RUN_DIR/config.yaml                resolved configuration (written last at start: a folder
                                       with it is a started run)
    RUN_DIR/environment.json           seed, library versions, command
    RUN_DIR/stages/NN-name/            stage.json (world size, effective batch, schedule steps),
                                       checkpoints/{last,best}.ckpt, logs/, done.json
    RUN_DIR/model.safetensors, model.json
    RUN_DIR/predictions*.csv, metrics*.json, plots/, report.md, report.html
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from cxrlt.errors import ConfigError
from cxrlt.ownership import FolderLock, OwnedFolder, check_claimable, claim, is_writer, owned, wait_for_writer

KIND = "run"
CONFIG = "config.yaml"
ENVIRONMENT = "environment.json"
STAGES = "stages"
HINT = "choose a new or empty --out folder"
# Top-level entries a run writes (recorded in the marker when the folder is claimed).
LAYOUT = (CONFIG, ENVIRONMENT, STAGES, "model.safetensors", "model.json", "predictions.csv",
          "predictions_val.csv", "predictions_test.csv", "metrics.json", "metrics_val.json", "metrics_test.json",
          "plots", "report.md", "report.html")


def _legacy_run(folder: Path) -> bool:
    """A run written before folders carried a marker: its config, and its environment file or stages."""
    return (folder / CONFIG).is_file() and ((folder / ENVIRONMENT).is_file() or (folder / STAGES).is_dir())


class RunFolder:
    """Paths of one run folder, and the rules for starting, resuming and writing it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def environment(self) -> Path:
        return self.path / ENVIRONMENT

    @property
    def stages(self) -> Path:
        return self.path / STAGES

    @property
    def started(self) -> bool:
        """Whether a run was started here (its configuration is saved)."""
        return self.config.is_file()

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
            raise ConfigError(f"{self.path} is not a run folder (no {CONFIG}); start one with `cxrlt train CONFIG`")

    def check_claimable(self) -> None:
        """Refuse now, writing nothing, a folder `claim` would refuse (before any slow work)."""
        check_claimable(self.path, KIND, adopt=_legacy_run, hint=HINT)

    def claim(self, *extra: str) -> OwnedFolder:
        """Mark the folder as a run (new or empty, or already a run): nothing foreign is touched.

        `extra` names entries beyond the run's own layout that the caller is
        about to write there (the demo's generated data, a smoke run's images).
        """
        folder = claim(self.path, KIND, adopt=_legacy_run, hint=HINT)
        folder.record(*LAYOUT, *extra)
        return folder

    @contextlib.contextmanager
    def writing(self, purpose: str) -> Iterator[FolderLock | None]:
        """Hold the folder's writer lock for the block (global rank 0); other ranks attach and hold nothing."""
        if not is_writer():
            wait_for_writer(self.path, lambda folder: (folder / CONFIG).is_file(), what=f"the run folder {self.path}")
            yield None
            return
        folder = owned(self.path, KIND) or self.claim()
        with folder.lock(purpose) as lock:
            yield lock
