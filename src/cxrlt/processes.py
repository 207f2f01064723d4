"""Worker process pools that leave Ctrl-C to their parent and never outlive it.

Two failure modes of a plain `ProcessPoolExecutor` that this module closes:

- A terminal's Ctrl-C reaches the whole process group. Workers that took it
  would each die mid-chunk with their own traceback; instead they ignore
  SIGINT and the parent decides what an interrupt means (finishing and
  recording the chunks in flight, then stopping with a resume hint).
- A parent killed with SIGKILL cannot shut its pool down, and the workers
  wait on a pipe whose write end they inherited themselves, so they would
  block forever under PID 1. On Linux every worker asks the kernel for
  SIGKILL when its parent dies (`PR_SET_PDEATHSIG`); a parent that died
  before the request took effect is caught by comparing the worker's parent
  pid with its creator's.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def worker_pool(workers: int, initializer: Callable[..., None] | None = None,
                initargs: tuple = ()) -> ProcessPoolExecutor:
    """A pool of `workers` processes set up by `start_worker`, then `initializer(*initargs)`."""
    return ProcessPoolExecutor(max_workers=workers, initializer=start_worker,
                               initargs=(os.getpid(), initializer, initargs))


def start_worker(creator: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> None:
    """Initializer of a worker process: ignore Ctrl-C, die with the `creator` process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # With the fork server the worker's parent is the server (which exits
    # with the creator); with fork and spawn it is the creator itself.
    die_with_parent(None if multiprocessing.get_start_method() == "forkserver" else creator)
    if initializer is not None:
        initializer(*initargs)


def die_with_parent(parent: int | None) -> None:
    """Ask the kernel (Linux) to SIGKILL this process when its parent dies; exit now if `parent` is already gone."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os._exit(1)  # the parent died before the request took effect


def follow_launcher() -> None:
    """In a rank started by a launcher (Lightning's, torchrun), die when the launcher dies.

    A launcher killed with SIGKILL cannot stop its ranks; without this they
    would train on, unobserved, and write the run folder while a resumed run
    starts.
    """
    if "LOCAL_RANK" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ:
        die_with_parent(os.getppid())
