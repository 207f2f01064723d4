"""Image stores: uint8 (size, size) pixels by row of a LabelTable.

A store is what datasets index: `len(store)`, `store[i]` (a fresh uint8 array
of shape (size, size), the image of row i) and `store.size`. Two kinds:

- `DecodingStore` decodes the original file on every access (no preparation;
  ~13 ms for a 1024 x 1024 PNG).
- `CacheStore` reads a cache written by `cxrlt prepare` (microseconds).

Both pickle cheaply (paths or row numbers, never pixels): DataLoader worker
processes each open the memory map themselves on first access.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from cxrlt.data.cache import BAD, PIXELS, read_cache_info, require_complete
from cxrlt.data.images import format_bad_images, load_image, scan_images
from cxrlt.data.table import LabelTable
from cxrlt.errors import ImageDecodeError, InputError

log = logging.getLogger(__name__)


class ImageStore(Protocol):
    """Anything that gives uint8 (size, size) pixels by table row."""

    size: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


class DecodingStore:
    """Decodes, crops and resizes the original files on access (`load_image`)."""

    def __init__(self, paths: Sequence[str | Path], size: int):
        self.paths = [str(p) for p in paths]
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return load_image(self.paths[_check_index(index, len(self.paths))], self.size)

    def __repr__(self) -> str:
        return f"DecodingStore({len(self)} images, size={self.size})"


class CacheStore:
    """Reads rows of a prepared cache (`cxrlt prepare`) by image id.

    `image_ids` may be any subset of the cache's images, in any order; row i
    of the store is the image `image_ids[i]`. Refuses an incomplete cache, a
    cache prepared at another size, ids the cache does not hold and images
    the cache recorded as bad (drop those with `screen_images`).
    """

    def __init__(self, cache_dir: str | Path, image_ids: Sequence[str], size: int):
        info = read_cache_info(cache_dir)
        require_complete(info)
        if info.size != int(size):
            raise InputError(
                f"the cache holds images prepared at {info.size} x {info.size} pixels but {size} x {size} "
                "are needed (data.images.store_size, or data.images.size when unset); prepare a cache at "
                f"that size (`cxrlt prepare CONFIG --out DIR --size {size}`) or change the size",
                info.path,
            )
        image_ids = [str(i) for i in image_ids]
        rows = info.rows_of(image_ids)
        if info.bad:
            bad = [(image_id, info.bad[image_id]) for image_id in image_ids if image_id in info.bad]
            if bad:
                raise ImageDecodeError(
                    f"{len(bad)} of the requested images could not be decoded when the cache was prepared "
                    f"(listed in {info.path / BAD}); set data.images.skip_bad: true to leave them out of the run "
                    f"(in code: `cxrlt.data.store.screen_images(..., skip_bad=True)`):\n{format_bad_images(bad)}"
                )
        self.cache_dir = info.path
        self.size = info.size
        self.rows = rows
        self._pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> np.ndarray:
        if self._pixels is None:
            # Opened on first use in each process (DataLoader workers included).
            self._pixels = np.load(self.cache_dir / PIXELS, mmap_mode="r")
        return np.array(self._pixels[self.rows[_check_index(index, len(self.rows))]])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pixels"] = None
        return state

    def __repr__(self) -> str:
        return f"CacheStore({len(self)} images, size={self.size}, cache={self.cache_dir})"


def _check_index(index: int, length: int) -> int:
    index = int(index)
    if not -length <= index < length:
        raise IndexError(f"image index {index} is out of range for a store of {length} images")
    return index % length


def open_store(table: LabelTable, size: int, cache: str | Path | None = None) -> ImageStore:
    """The store for `table` at `size`: the prepared `cache` when given, else decoding.

    A cache is refused (InputError) when incomplete, prepared at another
    size, or missing some of the table's images.
    """
    if cache is not None:
        return CacheStore(cache, table.image_ids, size)
    return DecodingStore(table.image_paths(), size)


def screen_images(table: LabelTable, size: int, cache: str | Path | None = None, skip_bad: bool = False,
                  progress: bool = True) -> LabelTable:
    """Find unreadable images before any work, in every split of `table`; return the rows to use.

    Only rows assigned to a split (train, val, test) are checked: the others
    are never read. With a prepared `cache`, its list of images recorded as
    bad is the check (no decoding), and the cache must be complete, of
    `size`, and hold every checked image. Without one, each file is checked
    once now (`scan_images(quick=True)`: a PNG's chunks and CRCs, other
    formats decoded), ~1.2 ms per 1024 x 1024 NIH PNG instead of ~17 ms for
    a decode.

    Bad images raise ImageDecodeError listing all of them with the
    `data.images.skip_bad` advice; with `skip_bad` their rows are left out
    (with a warning listing them). Splits were assigned before, so they do
    not depend on which files are readable.
    """
    part = table.subset(_in_a_split(table))
    bad, where = _bad_images(part, cache, progress)
    if bad and not skip_bad:
        raise ImageDecodeError(
            f"{len(bad)} of the {len(part)} images of the train, val and test splits cannot be read{where}. Fix or "
            f"remove them, or set data.images.skip_bad: true to leave them out of the run:\n{format_bad_images(bad)}"
        )
    if bad:
        if len(bad) == len(part):
            raise InputError(f"none of the {len(part)} images can be read (data.images.skip_bad left out all of "
                             f"them):\n{format_bad_images(bad)}")
        log.warning("data.images.skip_bad: leaving out %d of %d images that cannot be decoded:\n%s",
                    len(bad), len(part), format_bad_images(bad))
        unreadable = {str(path) for path, _ in bad}
        readable = np.array([str(path) not in unreadable for path in table.image_paths()])
        table = table.subset(readable | ~_in_a_split(table))
    if cache is not None:
        CacheStore(cache, table.subset(_in_a_split(table)).image_ids, size)  # same size, holds them all
    return table


def _in_a_split(table: LabelTable) -> np.ndarray:
    return table.meta["split"].notna().to_numpy(dtype=bool)


def _bad_images(table: LabelTable, cache: str | Path | None, progress: bool) -> tuple[list[tuple[Path, str]], str]:
    """(path, reason) of every unreadable image of `table`, and where the list comes from."""
    paths = table.image_paths()
    if cache is None:
        return scan_images(paths, progress=progress, quick=True), ""
    info = read_cache_info(cache)
    require_complete(info)
    bad = [(path, info.bad[image_id]) for image_id, path in zip(table.image_ids, paths) if image_id in info.bad]
    return bad, f" (recorded as bad when the cache was prepared; listed in {info.path / BAD})"
