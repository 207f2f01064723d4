"""Small data sets with known bad files, shared by the reliability tests.

`make_dataset` writes a folder of PNGs (8-bit gray, 16-bit, RGBA: all
readable), optionally one file of each bad kind, a generic label CSV naming
all of them and a run config whose `data` section reads it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

CLASSES = ("Atelectasis", "Cardiomegaly")

# file name -> a fragment of the reason `decode_image` gives for it
BAD_FILES = {
    "missing.png": "file not found",
    "empty.png": "is empty (0 bytes)",
    "truncated.png": "cannot be decoded as PNG",
    "notes.png": "is not an image",
    "broken.dcm": "is a DICOM file without pixel data",
    "truncated.dcm": "DICOM pixel data cannot be decoded",
}


def png_bytes(pixels: np.ndarray, mode: str | None = None) -> bytes:
    """`pixels` encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def dicom_bytes(pixels: np.ndarray, **elements) -> bytes:
    """A single-frame MONOCHROME2 DICOM file (with preamble) holding uint8/uint16 `pixels`."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_good_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """n readable PNGs: mostly 8-bit gray, one 16-bit and one RGBA (names returned)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        height, width = int(rng.integers(24, 40)), int(rng.integers(24, 40))
        gray = rng.integers(0, 256, (height, width), dtype=np.uint8)
        if i == 0:
            data = png_bytes((gray.astype(np.uint16) * 257).astype(np.uint16))  # 16-bit
        elif i == 1:
            data = png_bytes(np.dstack([gray, gray, gray, np.full_like(gray, 128)]), "RGBA")
        else:
            data = png_bytes(gray)
        name = f"good{i:02d}.png"
        (folder / name).write_bytes(data)
        names.append(name)
    return names


def write_bad_images(folder: Path) -> list[str]:
    """One file of each kind in BAD_FILES (the missing one is not created)."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = png_bytes(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8))
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.png").write_text("patient notes, not a picture\n")
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + b"garbage" * 3)
    dicom = dicom_bytes(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32))
    (folder / "truncated.dcm").write_bytes(dicom[: len(dicom) - 700])
    return list(BAD_FILES)


def write_labels(path: Path, names: list[str], seed: int = 0) -> Path:
    """A generic label CSV (path, patient_id, split, one 0/1 column per class)."""
    rng = np.random.default_rng(seed)
    lines = ["path,patient_id,split," + ",".join(CLASSES)]
    splits = ["train", "train", "val", "test"]
    for i, name in enumerate(names):
        labels = ",".join(str(int(v)) for v in rng.integers(0, 2, len(CLASSES)))
        lines.append(f"{name},p{i},{splits[i % len(splits)]},{labels}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_config(path: Path, labels: Path, images: Path, **images_options) -> Path:
    """A run config whose data section reads `labels` with the csv source."""
    config = {
        "name": "bad-input",
        "data": {
            "sources": [{"name": "csv", "labels": str(labels), "images": str(images)}],
            "split": {"method": "source"},
            "images": {"size": 16, **images_options},
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def make_dataset(root: Path, n_good: int = 6, bad: bool = True) -> tuple[Path, list[str], list[str]]:
    """Images, labels and config under `root`; returns (config path, good names, bad names)."""
    images = root / "images"
    good = write_good_images(images, n_good)
    bad_names = write_bad_images(images) if bad else []
    labels = write_labels(root / "labels.csv", good + bad_names)
    return write_config(root / "run.yaml", labels, images), good, bad_names
