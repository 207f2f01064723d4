"""Prepared image cache: every image decoded once into one memory-mapped array.

Decoding a 1024 x 1024 PNG costs ~11 ms; reading the same pixels from a
prepared cache costs microseconds, so training epochs stop being bound by
the decoder. `prepare_cache` writes a folder:

    meta.json     format, version, size, count, source fingerprint
                  (`LabelTable.fingerprint()`), and `complete: true` once
                  every row is finished (rewritten atomically, last)
    index.json    image ids (the key) and source paths, in row order
    pixels.npy    uint8 array (count, size, size), memory-mapped
    done.npy      uint8 per row: 0 pending, 1 decoded, 2 recorded as bad
    bad.json      image id -> reason, for rows recorded as bad (--skip-bad)

besides the marker `cxrlt.json` (the folder is cxrlt's; it lists the files
above, the only ones `--overwrite` removes) and the lock `cxrlt.lock` (one
`prepare` per folder at a time), both from `cxrlt.ownership`.

The pixel file gets all its disk blocks before any decoding, and worker
processes write rows straight into it with `pwrite` (a full disk is an
error, never a SIGBUS); the main process records finished rows in
`done.npy` only after the pixel file has been synced, so a checkpoint never
claims pixels the disk does not hold. An interrupted run (Ctrl-C, a crash,
a full disk) keeps every checkpointed row; running it again decodes only
the rest. Readers accept a cache only when `meta.json` says complete.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from cxrlt import __version__
from cxrlt.data.images import default_workers, error_reason, format_bad_images, load_image
from cxrlt.data.table import LabelTable
from cxrlt.errors import DiskFull, ImageDecodeError, InputError, Interrupted
from cxrlt.io import DISK_FULL, atomic_path, no_space_left, read_json, write_json
from cxrlt.ownership import OwnedFolder, claim
from cxrlt.processes import worker_pool

CACHE_FORMAT = "cxrlt-image-cache"
CACHE_VERSION = 1

META = "meta.json"
INDEX = "index.json"
PIXELS = "pixels.npy"
DONE = "done.npy"
BAD = "bad.json"
_CACHE_FILES = (META, INDEX, PIXELS, DONE, BAD)

PENDING, DECODED, BAD_IMAGE = 0, 1, 2

# Seconds between checkpoints of `done.npy` (each one syncs the pixel file).
_CHECKPOINT_SECONDS = 5.0


@dataclass(frozen=True)
class CacheInfo:
    """What a cache folder holds, read from its `meta.json`, index and status."""

    path: Path
    size: int
    count: int
    fingerprint: str
    complete: bool
    image_ids: list[str]
    bad: dict[str, str]
    finished: int

    def rows_of(self, image_ids: Sequence[str]) -> np.ndarray:
        """Row of each id in `pixels.npy`; InputError listing ids the cache lacks."""
        lookup = {image_id: row for row, image_id in enumerate(self.image_ids)}
        rows = np.fromiter((lookup.get(str(i), -1) for i in image_ids), dtype=np.int64, count=len(image_ids))
        missing = [str(image_ids[k]) for k in np.flatnonzero(rows < 0)]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise InputError(
                f"the prepared cache does not hold {len(missing)} of the {len(image_ids)} requested images "
                f"({shown}); it was prepared from another image list. Prepare a cache for this data "
                "(`cxrlt prepare CONFIG --out DIR`) or drop `data.images.cache`",
                self.path,
            )
        return rows


def read_cache_info(cache_dir: str | Path) -> CacheInfo:
    """Read and check a cache folder's metadata (complete or not).

    Raises InputError when the folder is not a cxrlt cache or was written by
    an incompatible version.
    """
    cache_dir = Path(cache_dir)
    if not (cache_dir / META).is_file():
        raise InputError(
            f"not a prepared image cache (no {META}); create one with `cxrlt prepare CONFIG --out {cache_dir}`",
            cache_dir,
        )
    meta = read_json(cache_dir / META)
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise InputError(f"{META} does not describe a {CACHE_FORMAT} folder", cache_dir)
    if meta.get("version") != CACHE_VERSION:
        raise InputError(
            f"cache format version {meta.get('version')} is not the version this cxrlt reads "
            f"({CACHE_VERSION}); prepare it again with `cxrlt prepare ... --overwrite`",
            cache_dir,
        )
    try:
        image_ids = [str(i) for i in read_json(cache_dir / INDEX)["image_ids"]]
        size, count, fingerprint = int(meta["size"]), int(meta["count"]), str(meta["fingerprint"])
        bad = read_json(cache_dir / BAD) if (cache_dir / BAD).is_file() else {}
        bad = {str(k): str(v) for k, v in bad.items()}
        pixels_shape = np.load(cache_dir / PIXELS, mmap_mode="r").shape
    except (KeyError, TypeError, ValueError, AttributeError, OSError) as exc:
        raise InputError(
            f"the prepared cache is damaged ({_describe(exc)}); prepare it again with `cxrlt prepare ... --overwrite`",
            cache_dir,
        ) from None
    expected_shape = (count, size, size)
    if len(image_ids) != count or pixels_shape != expected_shape:
        raise InputError(
            f"the prepared cache is damaged: {INDEX} lists {len(image_ids)} images and {PIXELS} has shape "
            f"{pixels_shape}, but {META} describes {expected_shape}; prepare it again with --overwrite",
            cache_dir,
        )
    status = _read_status(cache_dir, count)
    return CacheInfo(
        path=cache_dir,
        size=size,
        count=count,
        fingerprint=fingerprint,
        complete=bool(meta.get("complete", False)),
        image_ids=image_ids,
        bad=bad,
        finished=int(np.count_nonzero(status)),
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing entry {exc}"
    if isinstance(exc, FileNotFoundError):
        return f"{Path(exc.filename).name if exc.filename else 'a file'} is missing"
    return f"{type(exc).__name__}: {exc}"


def require_complete(info: CacheInfo) -> None:
    """InputError unless the cache was finished (its completion marker written)."""
    if not info.complete:
        raise InputError(
            f"the prepared cache is incomplete ({info.finished} of {info.count} images done; an earlier "
            "`cxrlt prepare` was interrupted or stopped on bad images). Run the same `cxrlt prepare` "
            "command again to finish it",
            info.path,
        )


def _read_status(cache_dir: Path, count: int) -> np.ndarray:
    path = cache_dir / DONE
    if not path.is_file():
        return np.zeros(count, dtype=np.uint8)
    try:
        status = np.load(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{DONE} is unreadable ({exc}); prepare the cache again with --overwrite", cache_dir) from None
    if status.shape != (count,):
        raise InputError(f"{DONE} has shape {status.shape}, expected ({count},)", cache_dir)
    return status.astype(np.uint8, copy=False)


# ----------------------------------------------------------------- prepare
def prepare_cache(
    table: LabelTable,
    out: str | Path,
    size: int,
    workers: int | None = None,
    progress: bool = True,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> Path:
    """Decode every image of `table` once into a (N, size, size) uint8 cache at `out`.

    Resumable: running it again on the same table and size decodes only rows
    not yet finished. `out` must be new, empty, or a cache folder (marked as
    cxrlt's, or a cache an earlier cxrlt wrote); anything else is refused
    before a file is touched. A cache of another image list or size is
    refused unless `overwrite` (then cxrlt's files are removed and it is
    rebuilt; files it did not write stay). One `prepare` writes a folder at a
    time (its lock). Images that cannot be decoded stop the run with the list
    of all of them (the good rows are kept); with `skip_bad` they are
    recorded as bad instead and the stores refuse them. `workers` processes
    decode in parallel (default: all available cores; 0 or 1: this process).

    Ctrl-C raises `Interrupted` and a full disk an InputError starting "no
    space left on"; both say how many images are kept, and running the same
    call again continues. Returns `out`.
    """
    out = Path(out)
    if size < 1:
        raise InputError(f"image size must be a positive number of pixels, got {size}")
    if len(table) == 0:
        raise InputError("the label table has no images; nothing to prepare")
    workers = default_workers() if workers is None else max(0, int(workers))
    try:
        folder = claim(out, "cache", adopt=_earlier_cache, hint="choose a new or empty folder for the prepared cache")
        with folder.lock("prepare"):
            _prepare(folder, table, size, workers, progress, skip_bad, overwrite)
    except KeyboardInterrupt:
        raise Interrupted(
            f"{out}: stopped after {_checkpointed(out, len(table))} of {len(table)} images (they are kept); "
            "run the same command again to continue"
        ) from None
    except BrokenProcessPool:
        raise InputError(
            f"a decoding worker process was killed (by the system: out of memory, or a full disk on a file system "
            f"that cannot reserve space ahead); {_kept(out, len(table))}. Run the same command again to continue, "
            "with fewer --workers if memory is short",
            out,
        ) from None
    except (OSError, DiskFull) as exc:
        # A row write fails with ENOSPC itself; a bookkeeping file arrives as DiskFull from `atomic_path`.
        if isinstance(exc, OSError) and exc.errno not in DISK_FULL:
            raise
        raise DiskFull(
            f"{no_space_left(out, _space_missing(out, len(table), size))} to finish the cache; "
            f"{_kept(out, len(table))}. Free some space (or choose another --out, or a smaller --size) and run the "
            "same command again to continue",
            out,
        ) from None
    return out


def _prepare(folder: OwnedFolder, table: LabelTable, size: int, workers: int, progress: bool, skip_bad: bool,
             overwrite: bool) -> None:
    """`prepare_cache` in a claimed and locked folder."""
    out = folder.path
    _open_cache(folder, table, size, overwrite)
    status = _read_status(out, len(table))
    bad = read_json(out / BAD) if (out / BAD).is_file() else {}
    if not (status == PENDING).any():
        _write_complete(out, table, size, status)
        return
    _allocate(out / PIXELS)
    paths = [str(p) for p in table.image_paths()]
    pending = np.flatnonzero(status == PENDING)
    # Chunks small enough to balance the load and to lose little on a kill,
    # large enough that inter-process overhead stays negligible.
    chunk = int(max(1, min(32, len(pending) // (max(workers, 1) * 4))))
    workers = min(workers, -(-len(pending) // chunk))
    # Worker processes start before the progress bar's monitor thread exists.
    pool = worker_pool(workers, _init_worker, (str(out / PIXELS),)) if workers > 1 else None
    failures: list[tuple[int, str]] = []
    try:
        if pool is not None:
            # Start every worker now (they open the pixel file in their initializer).
            list(pool.map(int, range(workers)))
        writer = _Progress(out, status, bad, table.image_ids, progress)
        try:
            if pool is None:
                _run_here(out / PIXELS, pending, paths, size, writer, failures, skip_bad)
            else:
                _run_pool(pool, pending, chunk, paths, size, workers, writer, failures, skip_bad)
        finally:
            writer.close()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if failures:
        failures.sort()
        listing = format_bad_images([(paths[row], reason) for row, reason in failures])
        raise ImageDecodeError(
            f"{len(failures)} of {len(table)} images cannot be decoded; the cache at {out} is not "
            f"complete. The {int(np.count_nonzero(status))} decoded images are kept and will not be "
            "decoded again. Fix these files (or drop their rows from the labels) and run the command "
            f"again, or pass --skip-bad (data.images.skip_bad) to record them as bad and leave them out:\n{listing}"
        )
    _write_complete(out, table, size, status)


def _kept(out: Path, count: int) -> str:
    kept = _checkpointed(out, count)
    return f"the {kept} images decoded so far are kept" if kept else "no image was decoded yet"


def _checkpointed(out: Path, count: int) -> int:
    """Rows the cache on disk records as finished (what a resumed run keeps)."""
    try:
        return int(np.count_nonzero(_read_status(out, count)))
    except InputError:
        return 0


# --------------------------------------------------------------- disk space
def _allocate(pixels: Path) -> None:
    """Give the pixel file all its disk blocks now, so a full disk shows before any decoding.

    Where the file system cannot allocate ahead, the file stays sparse and a
    full disk shows as ENOSPC from the row write that needs a new block
    (`_PixelWriter`), which stops the run the same way.
    """
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is None:
        return
    fd = os.open(pixels, os.O_RDWR)
    try:
        allocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def _space_missing(out: Path, count: int, size: int) -> int:
    """Bytes the pixel file still lacks on disk (all of it before it exists)."""
    try:
        stat = (out / PIXELS).stat()
    except FileNotFoundError:
        return count * size * size
    return max(0, stat.st_size - stat.st_blocks * 512)


class _PixelWriter:
    """Writes rows of the pixel file with `pwrite`.

    Not through a writable memory map: a store into a page the disk has no
    room for is a SIGBUS ("Bus error") that kills the process, where
    `pwrite` fails with ENOSPC and the run stops cleanly.
    """

    def __init__(self, path: Path):
        pixels = np.load(path, mmap_mode="r")
        self.offset, self.row_bytes = pixels.offset, int(np.prod(pixels.shape[1:]))
        del pixels
        self.fd = os.open(path, os.O_WRONLY)

    def write(self, row: int, image: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(image, dtype=np.uint8)).cast("B")
        position = self.offset + row * self.row_bytes
        while data:  # a short write is followed by one that raises (ENOSPC)
            written = os.pwrite(self.fd, data, position)
            data, position = data[written:], position + written

    def close(self) -> None:
        os.close(self.fd)


def _run_here(
    pixels_path: Path,
    pending: np.ndarray,
    paths: list[str],
    size: int,
    writer: "_Progress",
    failures: list[tuple[int, str]],
    skip_bad: bool,
) -> None:
    pixels = _PixelWriter(pixels_path)
    try:
        for row in pending.tolist():
            try:
                pixels.write(row, load_image(paths[row], size))
            except ImageDecodeError as exc:
                writer.record([], [(row, error_reason(exc))], skip_bad, failures)
            else:
                writer.record([row], [], skip_bad, failures)
    finally:
        pixels.close()


def _run_pool(
    pool: ProcessPoolExecutor,
    pending: np.ndarray,
    chunk: int,
    paths: list[str],
    size: int,
    workers: int,
    writer: "_Progress",
    failures: list[tuple[int, str]],
    skip_bad: bool,
) -> None:
    chunks = iter([pending[i : i + chunk] for i in range(0, len(pending), chunk)])
    running: set[Future] = set()

    def submit(count: int) -> None:
        for rows in _take(chunks, count):
            running.add(pool.submit(_decode_rows, rows.tolist(), [paths[r] for r in rows], size))

    try:
        submit(2 * workers)
        while running:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                done, failed = future.result()
                writer.record(done, failed, skip_bad, failures)
                submit(1)
    except BaseException:
        # Interrupted or failed: keep what the running chunks finish (workers
        # ignore Ctrl-C and end their chunk), then stop.
        for future in running:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        for future in running:
            if not future.cancelled() and future.exception() is None:
                done, failed = future.result()
                writer.record(done, failed, skip_bad, failures)
        raise


def _take(iterator: Iterator[np.ndarray], n: int) -> list[np.ndarray]:
    taken = []
    for _ in range(n):
        item = next(iterator, None)
        if item is None:
            break
        taken.append(item)
    return taken


_WORKER_PIXELS: dict[str, _PixelWriter] = {}


def _init_worker(pixels_path: str) -> None:
    _WORKER_PIXELS["pixels"] = _PixelWriter(Path(pixels_path))


def _decode_rows(rows: list[int], paths: list[str], size: int) -> tuple[list[int], list[tuple[int, str]]]:
    """Worker: decode `paths` into `rows` of the shared pixel file."""
    pixels = _WORKER_PIXELS["pixels"]
    done: list[int] = []
    failed: list[tuple[int, str]] = []
    for row, path in zip(rows, paths):
        try:
            pixels.write(row, load_image(path, size))
        except ImageDecodeError as exc:
            failed.append((row, error_reason(exc)))
        else:
            done.append(row)
    return done, failed


class _Progress:
    """Row status, bad-image reasons, checkpoints and the progress bar."""

    def __init__(self, out: Path, status: np.ndarray, bad: dict[str, str], ids: list[str], progress: bool):
        from cxrlt.progress import progress_bar

        self.out = out
        self.status = status
        self.bad = dict(bad)
        self.ids = ids
        self.dirty = False
        self.last_checkpoint = time.monotonic()
        self.pixels_fd = os.open(out / PIXELS, os.O_RDONLY)
        self.bar = progress_bar(
            total=len(status),
            initial=int(np.count_nonzero(status)),
            desc=f"preparing {status.shape[0]} images",
            unit="img",
            enabled=progress,
            smoothing=0.05,
        )

    def record(
        self, done: list[int], failed: list[tuple[int, str]], skip_bad: bool, failures: list[tuple[int, str]]
    ) -> None:
        """Mark rows decoded (or bad); checkpoint every few seconds."""
        if done:
            self.status[done] = DECODED
            self.dirty = True
        for row, reason in failed:
            if skip_bad:
                self.status[row] = BAD_IMAGE
                self.bad[self.ids[row]] = reason
                self.dirty = True
            else:
                failures.append((row, reason))
        self.bar.update(len(done) + len(failed))
        if self.dirty and time.monotonic() - self.last_checkpoint >= _CHECKPOINT_SECONDS:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Sync the pixel file, then record which rows it holds."""
        os.fsync(self.pixels_fd)
        if self.bad:
            write_json(self.out / BAD, self.bad)
        with atomic_path(self.out / DONE) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, self.status)
        self.dirty = False
        self.last_checkpoint = time.monotonic()

    def close(self) -> None:
        """Final checkpoint (also after an interrupt) and release resources."""
        try:
            if self.dirty:
                self.checkpoint()
        finally:
            os.close(self.pixels_fd)
            self.bar.close()


# ----------------------------------------------------------- folder state
def _earlier_cache(out: Path) -> bool:
    """Whether an unmarked folder is a cache written before caches were marked (only cache files in it)."""
    try:
        meta = read_json(out / META)
    except InputError:
        return False
    ours = all(child.name in _CACHE_FILES or _is_temporary(child.name) for child in out.iterdir())
    return ours and isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT


def _is_temporary(name: str) -> bool:
    """A temporary file `atomic_path` names after one of the cache files."""
    return any(name.startswith(f".{file}.") for file in _CACHE_FILES)


def _open_cache(folder: OwnedFolder, table: LabelTable, size: int, overwrite: bool) -> None:
    """Make the claimed `folder` a cache for (table, size): resumed, rebuilt if allowed, or new."""
    out = folder.path
    if (out / META).is_file():
        problem = _mismatch(out, table, size)
        if problem is None:
            folder.record(*_CACHE_FILES)  # a cache adopted from an earlier cxrlt may lack some yet
            return
        if not overwrite:
            raise InputError(
                f"{problem}. Choose another --out folder, or pass --overwrite to delete this cache and "
                "prepare it again",
                out,
            )
    # A cache being rebuilt, or what a creation stopped before meta.json
    # left (nothing finished): cxrlt's own files go, nothing else.
    folder.remove_owned()
    _create(folder, table, size)


def _mismatch(out: Path, table: LabelTable, size: int) -> str | None:
    try:
        meta = read_json(out / META)
    except InputError as exc:
        return f"its {META} is unreadable ({exc})"
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        return f"its {META} does not describe a {CACHE_FORMAT} folder"
    if meta.get("version") != CACHE_VERSION:
        return f"it was written in cache format version {meta.get('version')}, not {CACHE_VERSION}"
    if int(meta.get("size", -1)) != size:
        return f"it holds images prepared at {meta.get('size')} x {meta.get('size')} pixels, not {size} x {size}"
    if meta.get("fingerprint") != table.fingerprint() or int(meta.get("count", -1)) != len(table):
        return (
            f"it was prepared from another image list ({meta.get('count')} images, fingerprint "
            f"{meta.get('fingerprint')}) than this table ({len(table)} images, fingerprint {table.fingerprint()})"
        )
    try:
        read_cache_info(out)
    except InputError as exc:
        return error_reason(exc)
    return None


def _create(folder: OwnedFolder, table: LabelTable, size: int) -> None:
    count = len(table)
    out = folder.path
    needed = count * size * size
    if shutil.disk_usage(out).free < needed:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))  # before writing anything
    folder.record(*_CACHE_FILES)
    write_json(out / INDEX, {"image_ids": table.image_ids, "paths": [str(p) for p in table.image_paths()]})
    with atomic_path(out / PIXELS) as tmp:
        # Sparse at first; `_allocate` gives it its blocks before any row is written.
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(count, size, size)).flush()
    # meta.json last: a folder with it always has the index and pixel file.
    write_json(out / META, _meta(table, size, complete=False))


def _meta(table: LabelTable, size: int, complete: bool, bad: int = 0) -> dict:
    meta = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "size": size,
        "count": len(table),
        "dtype": "uint8",
        "fingerprint": table.fingerprint(),
        "complete": complete,
        "written_by": f"cxrlt {__version__}",
    }
    if complete:
        meta["bad"] = bad
    return meta


def _write_complete(out: Path, table: LabelTable, size: int, status: np.ndarray) -> None:
    """The completion marker: meta.json rewritten atomically, after everything else."""
    meta = read_json(out / META)
    if meta.get("complete"):
        return
    fd = os.open(out / PIXELS, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    with atomic_path(out / DONE) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, status)
    write_json(out / META, _meta(table, size, complete=True, bad=int(np.count_nonzero(status == BAD_IMAGE))))
