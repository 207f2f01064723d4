"""Prepared cache: round trip, resume, atomicity, mismatches, bad images, stores."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import cxrlt.data.cache as cache_module
from cxrlt.data.cache import prepare_cache, read_cache_info
from cxrlt.data.images import load_image
from cxrlt.data.store import CacheStore, DecodingStore, open_store, screen_images
from cxrlt.data.table import LabelTable
from cxrlt.errors import ImageDecodeError, InputError, Interrupted

SIZE = 16


def make_table(folder: Path, n: int = 7, seed: int = 0) -> LabelTable:
    """n PNGs of different shapes (some non-square, one RGBA) and their table."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        height, width = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        pixels = rng.integers(0, 256, (height, width), dtype=np.uint8)
        image = Image.fromarray(pixels) if i != 2 else Image.fromarray(np.dstack([pixels] * 3 + [pixels]), "RGBA")
        name = f"img{i:02d}.png"
        image.save(folder / name)
        names.append(name)
    meta = pd.DataFrame({"image_id": [f"id{i}" for i in range(n)], "path": names, "patient_id": list(range(n))})
    labels = rng.integers(0, 2, (n, 2)).astype(np.float32)
    return LabelTable(meta, labels, ("A", "B"), folder)


@pytest.fixture
def table(tmp_path: Path) -> LabelTable:
    return make_table(tmp_path / "images")


def expected(table: LabelTable, size: int = SIZE) -> np.ndarray:
    return np.stack([load_image(p, size) for p in table.image_paths()])


class CountingLoader:
    """Stands in for `load_image` in this process; can fail after `stop_after` calls."""

    def __init__(self, stop_after: int | None = None):
        self.calls: list[str] = []
        self.stop_after = stop_after

    def __call__(self, path, size):
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt
        self.calls.append(str(path))
        return load_image(path, size)


@pytest.mark.parametrize("workers", [1, 2])
def test_round_trip_equals_load_image(tmp_path: Path, table: LabelTable, workers: int):
    out = prepare_cache(table, tmp_path / "cache", SIZE, workers=workers, progress=False)
    info = read_cache_info(out)
    assert info.complete and info.finished == len(table) and info.size == SIZE
    assert info.fingerprint == table.fingerprint()
    store = open_store(table, SIZE, out)
    assert isinstance(store, CacheStore) and len(store) == len(table) and store.size == SIZE
    np.testing.assert_array_equal(np.stack([store[i] for i in range(len(store))]), expected(table))


def test_store_of_a_subset_in_another_order(tmp_path: Path, table: LabelTable):
    out = prepare_cache(table, tmp_path / "cache", SIZE, workers=1, progress=False)
    part = table.subset([5, 1, 3])
    store = open_store(part, SIZE, out)
    full = expected(table)
    for i, row in enumerate([5, 1, 3]):
        np.testing.assert_array_equal(store[i], full[row])
    np.testing.assert_array_equal(store[-1], full[3])
    with pytest.raises(IndexError):
        store[3]


def test_resume_decodes_only_unfinished_rows(tmp_path: Path, table: LabelTable, monkeypatch):
    out = tmp_path / "cache"
    interrupted = CountingLoader(stop_after=3)
    monkeypatch.setattr(cache_module, "load_image", interrupted)
    with pytest.raises(Interrupted, match=r"stopped after 3 of 7 images \(they are kept\); run the same command again"):
        prepare_cache(table, out, SIZE, workers=1, progress=False)
    info = read_cache_info(out)
    assert not info.complete and info.finished == 3
    assert json.loads((out / "meta.json").read_text())["complete"] is False

    resumed = CountingLoader()
    monkeypatch.setattr(cache_module, "load_image", resumed)
    prepare_cache(table, out, SIZE, workers=1, progress=False)
    assert sorted(resumed.calls) == sorted(str(p) for p in table.image_paths()[3:])
    np.testing.assert_array_equal(np.stack([open_store(table, SIZE, out)[i] for i in range(len(table))]), expected(table))

    again = CountingLoader()
    monkeypatch.setattr(cache_module, "load_image", again)
    prepare_cache(table, out, SIZE, workers=1, progress=False)
    assert again.calls == []


def test_resume_with_worker_processes_keeps_finished_rows(tmp_path: Path, table: LabelTable, monkeypatch):
    out = tmp_path / "cache"
    monkeypatch.setattr(cache_module, "load_image", CountingLoader(stop_after=4))
    with pytest.raises(Interrupted):
        prepare_cache(table, out, SIZE, workers=1, progress=False)
    monkeypatch.undo()
    # Mark the finished rows' pixels: a resumed run must not write them again.
    pixels = np.load(out / "pixels.npy", mmap_mode="r+")
    pixels[:4] = 7
    pixels.flush()
    del pixels
    prepare_cache(table, out, SIZE, workers=2, progress=False)
    store = open_store(table, SIZE, out)
    full = expected(table)
    for row in range(len(table)):
        if row < 4:
            assert (store[row] == 7).all()
        else:
            np.testing.assert_array_equal(store[row], full[row])


def test_interrupt_with_worker_processes_keeps_running_chunks(tmp_path: Path, table: LabelTable, monkeypatch):
    original = cache_module._Progress.record
    interrupts = []

    def record_then_interrupt(self, done, failed, skip_bad, failures):
        original(self, done, failed, skip_bad, failures)
        if not interrupts:
            interrupts.append(len(done))
            raise KeyboardInterrupt  # Ctrl-C right after the first chunk came back

    monkeypatch.setattr(cache_module._Progress, "record", record_then_interrupt)
    out = tmp_path / "cache"
    with pytest.raises(Interrupted):
        prepare_cache(table, out, SIZE, workers=2, progress=False)
    monkeypatch.undo()
    info = read_cache_info(out)
    status = np.load(out / "done.npy")
    # The first chunk plus whatever the other worker was running when interrupted.
    assert not info.complete and 1 <= info.finished < len(table)
    pixels = np.load(out / "pixels.npy")
    full = expected(table)
    for row in np.flatnonzero(status == 1):
        np.testing.assert_array_equal(pixels[row], full[row])
    prepare_cache(table, out, SIZE, workers=2, progress=False)
    np.testing.assert_array_equal(np.load(out / "pixels.npy"), full)


def test_interrupted_cache_is_not_readable_as_complete(tmp_path: Path, table: LabelTable, monkeypatch):
    out = tmp_path / "cache"
    monkeypatch.setattr(cache_module, "load_image", CountingLoader(stop_after=2))
    with pytest.raises(Interrupted):
        prepare_cache(table, out, SIZE, workers=1, progress=False)
    with pytest.raises(InputError, match=r"incomplete \(2 of 7 images done"):
        open_store(table, SIZE, out)
    with pytest.raises(InputError, match="incomplete"):
        CacheStore(out, table.image_ids, SIZE)


def test_creation_interrupted_before_meta_starts_afresh(tmp_path: Path, table: LabelTable, monkeypatch):
    out = tmp_path / "cache"

    def stop(*args, **kwargs):  # killed while the pixel file was being created
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module.np.lib.format, "open_memmap", stop)
    with pytest.raises(Interrupted, match="stopped after 0 of 7 images"):
        prepare_cache(table, out, SIZE, workers=1, progress=False)
    monkeypatch.undo()
    assert (out / "index.json").is_file() and not (out / "meta.json").exists()
    prepare_cache(table, out, SIZE, workers=1, progress=False)
    assert read_cache_info(out).complete
    names = ["cxrlt.json", "cxrlt.lock", "done.npy", "index.json", "meta.json", "pixels.npy"]
    assert sorted(p.name for p in out.iterdir()) == names


def test_mismatched_size_refused_then_overwritten(tmp_path: Path, table: LabelTable):
    out = prepare_cache(table, tmp_path / "cache", SIZE, workers=1, progress=False)
    with pytest.raises(InputError, match=r"prepared at 16 x 16 pixels, not 24 x 24.*--overwrite"):
        prepare_cache(table, out, 24, workers=1, progress=False)
    with pytest.raises(InputError, match=r"prepared at 16 x 16 pixels but 24 x 24 are needed"):
        open_store(table, 24, out)
    prepare_cache(table, out, 24, workers=1, progress=False, overwrite=True)
    assert read_cache_info(out).size == 24
    np.testing.assert_array_equal(open_store(table, 24, out)[6], expected(table, 24)[6])


def test_mismatched_image_list_refused(tmp_path: Path, table: LabelTable):
    out = prepare_cache(table.subset([0, 1, 2]), tmp_path / "cache", SIZE, workers=1, progress=False)
    with pytest.raises(InputError, match=r"another image list \(3 images.*than this table \(7 images"):
        prepare_cache(table, out, SIZE, workers=1, progress=False)
    with pytest.raises(InputError, match=r"does not hold 4 of the 7 requested images \('id3', 'id4'"):
        open_store(table, SIZE, out)
    # A subset of the cached images is fine.
    assert len(open_store(table.subset([2, 0]), SIZE, out)) == 2


def test_non_cache_folder_is_not_touched(tmp_path: Path, table: LabelTable):
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"holds files cxrlt did not write \(notes.txt\); nothing was changed"):
        prepare_cache(table, out, SIZE, workers=1, progress=False, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    with pytest.raises(InputError, match="not a prepared image cache"):
        open_store(table, SIZE, out)


def test_bad_images_stop_with_the_list_then_skip_bad_records_them(tmp_path: Path, table: LabelTable, monkeypatch):
    paths = table.image_paths()
    paths[1].write_bytes(b"")
    paths[4].write_text("not a picture")
    out = tmp_path / "cache"
    with pytest.raises(ImageDecodeError) as info:
        prepare_cache(table, out, SIZE, workers=2, progress=False)
    message = str(info.value)
    assert "2 of 7 images cannot be decoded" in message and "--skip-bad" in message
    assert f"{paths[1]}: is empty" in message and f"{paths[4]}: is not an image" in message
    state = read_cache_info(out)
    assert not state.complete and state.finished == 5

    counter = CountingLoader()
    monkeypatch.setattr(cache_module, "load_image", counter)
    prepare_cache(table, out, SIZE, workers=1, progress=False, skip_bad=True)
    assert counter.calls == [str(paths[1]), str(paths[4])]  # only the unfinished rows
    state = read_cache_info(out)
    assert state.complete and set(state.bad) == {"id1", "id4"} and "empty" in state.bad["id1"]
    assert json.loads((out / "meta.json").read_text())["bad"] == 2

    with pytest.raises(ImageDecodeError, match=r"(?s)2 of the requested images could not be decoded.*id1: is empty"):
        open_store(table, SIZE, out)
    with pytest.raises(ImageDecodeError,
                       match=r"(?s)2 of the 7 images.*recorded as bad.*skip_bad: true.*img01.png: is empty"):
        screen_images(table.with_splits(["train"] * 7), SIZE, out)
    kept = screen_images(table.with_splits(["train"] * 7), SIZE, out, skip_bad=True)
    assert kept.image_ids == ["id0", "id2", "id3", "id5", "id6"]
    np.testing.assert_array_equal(kept.labels, table.labels[[0, 2, 3, 5, 6]])
    store = open_store(kept, SIZE, out)
    np.testing.assert_array_equal(store[1], load_image(paths[2], SIZE))


def test_stores_pickle_without_pixels(tmp_path: Path, table: LabelTable):
    out = prepare_cache(table, tmp_path / "cache", SIZE, workers=1, progress=False)
    store = open_store(table, SIZE, out)
    first = store[0]  # opens the memory map in this process
    clone = pickle.loads(pickle.dumps(store))
    assert clone._pixels is None and len(pickle.dumps(store)) < 2000
    np.testing.assert_array_equal(clone[0], first)
    decoding = open_store(table, SIZE)
    assert isinstance(decoding, DecodingStore)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(decoding))[3], expected(table)[3])


def test_decoding_store_reports_bad_file(tmp_path: Path, table: LabelTable):
    table.image_paths()[0].unlink()
    with pytest.raises(ImageDecodeError, match="img00.png: file not found"):
        DecodingStore(table.image_paths(), SIZE)[0]


def test_not_enough_disk_space_is_refused_before_writing(tmp_path: Path, table: LabelTable, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    needed = len(table) * SIZE * SIZE  # 7 x 16 x 16 = 1792 bytes
    with pytest.raises(InputError, match=rf"no space left on /\S*: 100 bytes free, {needed / 1e3:.1f} kB needed"
                                         r".*no image was decoded yet"):
        prepare_cache(table, tmp_path / "cache", SIZE, workers=1, progress=False)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["cxrlt.json", "cxrlt.lock"]


def test_damaged_cache_is_refused_and_can_be_rebuilt(tmp_path: Path, table: LabelTable):
    out = prepare_cache(table, tmp_path / "cache", SIZE, workers=1, progress=False)
    (out / "pixels.npy").unlink()
    with pytest.raises(InputError, match="damaged.*pixels.npy is missing"):
        open_store(table, SIZE, out)
    with pytest.raises(InputError, match="pixels.npy is missing.*--overwrite"):
        prepare_cache(table, out, SIZE, workers=1, progress=False)
    prepare_cache(table, out, SIZE, workers=1, progress=False, overwrite=True)
    np.testing.assert_array_equal(open_store(table, SIZE, out)[0], expected(table)[0])
