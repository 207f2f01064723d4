"""Decoding chest X-rays (PNG, JPEG, DICOM...) to uint8 grayscale, and resizing.

`decode_image` turns any supported file into a uint8 (H, W) array;
`load_image` adds the geometry every model input goes through: centre-crop to
a square, then resize to `size` x `size` by exact area averaging. This is the
geometry of TorchXRayVision's `XRayCenterCrop` followed by
`XRayResizer(size, engine="cv2")` (OpenCV's INTER_AREA), so identical
224 x 224 inputs can be compared with models trained there.

Intensity rules (the file's content, not its extension, decides the format):

- 8-bit grayscale is kept as stored.
- Colour (RGB, RGBA, palette, CMYK...) is collapsed to luminance
  L = 0.299 R + 0.587 G + 0.114 B (ITU-R 601, Pillow's integer version); an
  alpha channel is ignored, since it says nothing about the X-ray. A gray
  image stored as RGB(A) therefore comes back unchanged.
- Images with more than 8 bits (16-bit PNG/TIFF, DICOM without windowing)
  are scaled by their own value range: the darkest pixel becomes 0, the
  brightest 255, linearly, rounded half up (a constant image becomes 0).
  The nominal range would be wrong: a 16-bit PNG holding 12-bit data would
  land in 0..16.
- DICOM follows the standard display pipeline: stored values -> modality LUT
  (rescale slope/intercept or LUT sequence) -> VOI LUT sequence, or window
  centre/width (LINEAR, LINEAR_EXACT or SIGMOID, the first window when
  several are given), or else the value range as above -> inverted for
  MONOCHROME1 (or Presentation LUT Shape INVERSE) so bone is always bright.

Every failure a user's file can cause (missing, empty, truncated, not an
image, an undecodable DICOM) is raised as `ImageDecodeError` naming the file.
FIFOs and devices are refused without being opened, and no message quotes
the bytes of a file that is not an image (a mistyped path may name a
private file).
"""

from __future__ import annotations

import functools
import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

import numpy as np

from cxrlt.errors import ImageDecodeError, InputError

# File signatures: the first bytes decide the decoder, not the extension.
_PILLOW_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"BM", "BMP"),
)
# DICOM files written without the 128-byte preamble + "DICM" are still read
# when their name says DICOM.
_DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
_HEADER_BYTES = 132

# Rounding half up with a margin far below the spacing of exact averages
# (they are rationals with denominators < 1e7), so ties do not depend on
# floating-point noise.
_TIE_EPS = 1e-9


def decode_image(path: str | Path) -> np.ndarray:
    """Decode an image file to a uint8 grayscale array of shape (H, W).

    Supports PNG (8 and 16 bit), JPEG, TIFF, BMP, JPEG 2000 and DICOM; see
    the module docstring for the intensity rules. Raises `ImageDecodeError`
    (naming the file and the reason) for anything that is not a readable
    image.
    """
    return _decode(Path(path), draft_size=None)


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Decode `path` and return it as a uint8 (size, size) model-ready square.

    Geometry: centre-crop to a square (TorchXRayVision's `XRayCenterCrop`
    offsets), then `resize_square` (exact area averaging when shrinking).
    JPEGs at least twice `size` are decoded at a reduced DCT scale (1/2,
    1/4 or 1/8, never below `size`) before the area resize: ~3x faster for a
    2048-px JPEG to 224, and DCT scaling is itself a block average, so the
    result stays anti-aliased. It is not bit-identical to a full decode: on a
    2500 x 2048 radiograph the mean difference is ~1 gray level, larger at
    sharp edges, because the reduced grid rounds the crop offset to whole
    reduced pixels.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return crop_and_resize(_decode(Path(path), draft_size=size), size)


def center_crop(image: np.ndarray) -> np.ndarray:
    """The centred square of side min(H, W) (a view, no copy).

    Offsets follow TorchXRayVision: start = W // 2 - side // 2, so an odd
    surplus leaves the extra column on the right (row at the bottom).
    """
    height, width = image.shape[:2]
    side = min(height, width)
    top = height // 2 - side // 2
    left = width // 2 - side // 2
    return image[top : top + side, left : left + side]


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square uint8 image to (size, size).

    Shrinking averages the exact area each output pixel covers (fractional
    input pixels weighted by their overlap), i.e. OpenCV's INTER_AREA, the
    anti-aliased choice for large reductions; values are rounded half up.
    Enlarging (e.g. 128-px thumbnails to 224) is bilinear with pixel centres
    aligned (Pillow), where area averaging would give blocky nearest-neighbour
    output.
    """
    side = image.shape[0]
    if image.ndim != 2 or image.shape[1] != side:
        raise ValueError(f"expected a square 2-D image, got shape {image.shape}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if side == size:
        return np.array(image, dtype=np.uint8, order="C")  # a copy, never a view of the caller's array
    if side < size:
        from PIL import Image

        return np.array(Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).resize((size, size), Image.BILINEAR))
    weights = _area_weights(side, size)
    # Sparse (size x side) weights: two products cost ~(side + size) * side
    # multiply-adds instead of side^2 * size for dense matrices. scipy takes
    # the uint8 image as it is and computes in float64 (the result type), so
    # no float copy of the full-size image is made first.
    rows = weights @ image
    out = weights @ np.ascontiguousarray(rows.T)
    return _round_to_uint8(out.T)


def crop_and_resize(image: np.ndarray, size: int) -> np.ndarray:
    """`center_crop` then `resize_square`: the geometry of every model input."""
    return resize_square(center_crop(image), size)


@functools.lru_cache(maxsize=128)  # one per distinct (crop side, size): ~40 kB each
def _area_weights(n_in: int, n_out: int):  # -> scipy.sparse.csr_matrix
    """(n_out x n_in) matrix: the share of each input pixel in each output pixel.

    Output pixel j covers input interval [j s, (j + 1) s) with s = n_in / n_out;
    input pixel i covers [i, i + 1); the weight is their overlap divided by s,
    so every row sums to 1.
    """
    import scipy.sparse

    scale = n_in / n_out
    start = np.arange(n_out) * scale
    stop = start + scale
    first = np.floor(start).astype(np.int64)
    span = int(np.ceil(scale)) + 1  # an interval of length s touches at most ceil(s) + 1 pixels
    cols = first[:, None] + np.arange(span)[None, :]
    overlap = np.minimum(stop[:, None], cols + 1) - np.maximum(start[:, None], cols)
    keep = (overlap > 1e-12) & (cols < n_in)
    rows = np.broadcast_to(np.arange(n_out)[:, None], cols.shape)
    return scipy.sparse.csr_matrix(
        (overlap[keep] / scale, (rows[keep], cols[keep])), shape=(n_out, n_in)
    )


# --------------------------------------------------------------- decoding
def _decode(path: Path, draft_size: int | None) -> np.ndarray:
    with _open_image(path) as handle:
        header, kind = _read_kind(handle, path)
        if kind == "DICOM":
            image = _decode_dicom(handle, path, has_preamble=header[128:132] == b"DICM")
        else:
            image = _decode_pillow(handle, path, kind, draft_size)
    if image.ndim != 2 or image.size == 0:
        raise ImageDecodeError(f"decoded to an array of shape {image.shape}, not a 2-D image", path)
    if not image.flags.writeable:
        image = image.copy()  # arrays over Pillow's bytes are read-only; callers may edit theirs
    return image


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _open_image(path: Path) -> BinaryIO:
    """`path` opened for reading, if it is a regular file.

    FIFOs, devices and sockets are refused from their `stat`, unopened:
    opening a FIFO blocks until something writes to it, and a device can be
    endless or act on being opened. The file is opened non-blocking and
    checked again, so a path swapped for a FIFO in between cannot hang us.
    """
    try:
        _refuse_special(os.stat(path).st_mode, path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImageDecodeError("file not found", path) from None
    except OSError as exc:
        raise ImageDecodeError(f"cannot be opened ({exc.strerror or exc})", path) from None
    try:
        _refuse_special(os.fstat(fd).st_mode, path)
    except BaseException:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _refuse_special(mode: int, path: Path) -> None:
    if stat.S_ISDIR(mode):
        raise ImageDecodeError("is a folder, not an image file", path)
    for test, kind in _SPECIAL_FILES:
        if test(mode):
            raise ImageDecodeError(f"is {kind}, not a regular file; refused without reading it", path)
    if not stat.S_ISREG(mode):
        raise ImageDecodeError("is not a regular file; refused without reading it", path)


def _read_kind(handle: BinaryIO, path: Path) -> tuple[bytes, str]:
    """The file's first bytes and its format from them (the handle is rewound)."""
    header = handle.read(_HEADER_BYTES)
    if not header:
        raise ImageDecodeError("is empty (0 bytes)", path)
    handle.seek(0)
    kind = _sniff(header, path)
    if kind is None:
        # Never the bytes themselves: a mistyped path may name a private file.
        raise ImageDecodeError(
            "is not an image: not a PNG, JPEG, TIFF, BMP, JPEG 2000 or DICOM file (its first "
            f"{len(header)} bytes match none of their signatures; the content is not shown)",
            path,
        )
    return header, kind


def _sniff(header: bytes, path: Path) -> str | None:
    if header[128:132] == b"DICM":
        return "DICOM"
    for signature, kind in _PILLOW_SIGNATURES:
        if header.startswith(signature):
            return kind
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return "DICOM"
    return None


def _library_failure(exc: BaseException) -> bool:
    """True for exceptions a decoder raises on bad input (not memory exhaustion or interrupts)."""
    return isinstance(exc, Exception) and not isinstance(exc, MemoryError)


def _decode_pillow(handle: BinaryIO, path: Path, kind: str, draft_size: int | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(handle) as image:
            if image.format == "JPEG":
                # Decode straight to luminance (skips chroma upsampling) and,
                # for a small target, at a reduced DCT scale.
                image.draft("L", (draft_size, draft_size) if draft_size else image.size)
            image.load()
            return _pillow_to_gray(image)
    except ImageDecodeError:
        raise
    except Exception as exc:
        if not _library_failure(exc):
            raise
        raise ImageDecodeError(f"cannot be decoded as {kind} ({_describe(exc)})", path) from None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _pillow_to_gray(image) -> np.ndarray:  # image: PIL.Image.Image
    mode = image.mode
    if mode == "L":
        return np.asarray(image)
    if mode in ("LA", "La"):
        return np.asarray(image.getchannel("L"))
    if mode.startswith("I") or mode == "F":
        return scale_to_uint8(np.asarray(image))
    # RGB, RGBA (alpha ignored), palette, CMYK, 1-bit...: Pillow's ITU-R 601 luminance.
    return np.asarray(image.convert("L"))


def _round_to_uint8(values: np.ndarray) -> np.ndarray:
    """Round half up and clip to 0..255."""
    return np.floor(values + (0.5 + _TIE_EPS)).clip(0, 255).astype(np.uint8)


def scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map an array's own range [min, max] linearly onto 0..255 (rounded half up).

    A constant array maps to 0. Non-finite values are refused (ValueError).
    """
    values = np.asarray(values)
    if values.size == 0:
        return values.astype(np.uint8)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError("pixel values include NaN or infinity")
    low = values.min()
    high = values.max()
    if high == low:
        return np.zeros(values.shape, dtype=np.uint8)
    return _round_to_uint8((values.astype(np.float64) - float(low)) * (255.0 / (float(high) - float(low))))


# ------------------------------------------------------------------- DICOM
def dicom_study_uid(path: str | Path) -> str | None:
    """The StudyInstanceUID of a DICOM file (header only), or None for other files and DICOMs without one."""
    path = Path(path)
    if path.suffix.lower() not in _DICOM_SUFFIXES:
        return None
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"], force=True)
        except Exception as exc:
            if not _library_failure(exc):
                raise
            raise ImageDecodeError(f"cannot be read as DICOM ({exc})", path) from None
    value = str(dataset.get("StudyInstanceUID", "") or "").strip()
    return value or None


def _decode_dicom(handle: BinaryIO, path: Path, has_preamble: bool) -> np.ndarray:
    # pydicom warns about every header value off the standard (common in real
    # archives and irrelevant to the pixels); failures are raised as errors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _decode_dicom_quietly(handle, path, has_preamble)


def _decode_dicom_quietly(handle: BinaryIO, path: Path, has_preamble: bool) -> np.ndarray:
    import pydicom

    try:
        dataset = pydicom.dcmread(handle, force=not has_preamble)
    except Exception as exc:
        if not _library_failure(exc):
            raise
        raise ImageDecodeError(f"cannot be read as DICOM ({_dicom_detail(exc, has_preamble)})", path) from None
    if not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageDecodeError("is a DICOM file without pixel data (not an image)", path)
    frames = _int_or(dataset.get("NumberOfFrames"), 1)
    if frames > 1:
        raise ImageDecodeError(
            f"is a multi-frame DICOM ({frames} frames); cxrlt reads single-frame radiographs", path
        )
    _set_missing_transfer_syntax(dataset)
    try:
        pixels = dataset.pixel_array
    except Exception as exc:
        if not _library_failure(exc):
            raise
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = getattr(syntax, "name", str(syntax)) if syntax is not None else "unknown"
        raise ImageDecodeError(f"DICOM pixel data cannot be decoded (transfer syntax {syntax_name}): "
                               f"{_dicom_detail(exc, has_preamble)}", path) from None
    try:
        return _dicom_to_gray(dataset, pixels)
    except Exception as exc:
        if not _library_failure(exc):
            raise
        raise ImageDecodeError(f"DICOM pixel values cannot be mapped to gray levels "
                               f"({_dicom_detail(exc, has_preamble)})", path) from None


def _dicom_detail(exc: BaseException, has_preamble: bool) -> str:
    """The library's reason, for a file with the DICOM preamble only.

    A file read as DICOM because of its name alone may be anything (a
    mistyped path), and pydicom's messages quote the values it parsed.
    """
    if has_preamble:
        return _describe(exc)
    return "no 'DICM' preamble, read because of its name, and not valid DICOM; its content is not shown"


def _set_missing_transfer_syntax(dataset) -> None:
    """Give a file without file meta (no preamble) the encoding it was read with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom import uid

    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = dataset.original_encoding
    if implicit is None:
        return
    if meta is None:
        meta = dataset.file_meta = FileMetaDataset()
    if implicit:
        meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian


def _dicom_to_gray(dataset, pixels: np.ndarray) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi

    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if pixels.ndim == 3:
        # Colour DICOM (pydicom returns RGB for YBR too): luminance, then as gray.
        luminance = pixels[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        if _int_or(dataset.get("BitsStored"), 8) <= 8:
            return _round_to_uint8(luminance)
        return scale_to_uint8(luminance)
    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    out = None
    voi_sequence = dataset.get("VOILUTSequence")
    if voi_sequence:
        # LUT inputs are whole numbers; the LUT's own output range maps to
        # 0..255 (robust to descriptors declaring more bits than the table uses).
        entries = int(voi_sequence[0].LUTDescriptor[0]) or 65536
        first = int(voi_sequence[0].LUTDescriptor[1])
        table = np.asarray(apply_voi(np.arange(first, first + entries, dtype=np.int64), dataset, index=0), dtype=np.float64)
        low, high = float(table.min()), float(table.max())
        if high > low:
            mapped = np.asarray(apply_voi(np.rint(values).astype(np.int64), dataset, index=0), dtype=np.float64)
            out = _round_to_uint8((mapped - low) * (255.0 / (high - low)))
    if out is None:
        out = _window(values, dataset)
    if out is None:
        out = scale_to_uint8(values)
    shape = str(dataset.get("PresentationLUTShape", "")).strip().upper()
    if photometric == "MONOCHROME1" or shape == "INVERSE":
        out = 255 - out
    return out


def _window(values: np.ndarray, dataset) -> np.ndarray | None:
    """DICOM window centre/width (PS3.3 C.11.2.1.2) onto 0..255; None if absent or invalid."""
    center = _first_float(dataset.get("WindowCenter"))
    width = _first_float(dataset.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(dataset.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
    if function == "LINEAR_EXACT":
        if width <= 0:
            return None
        scaled = ((values - center) / width + 0.5) * 255.0
    elif function == "SIGMOID":
        if width <= 0:
            return None
        scaled = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    else:
        if width < 1:
            return None
        if width == 1:
            # Degenerate LINEAR window: a threshold at c - 0.5.
            scaled = np.where(values > center - 0.5, 255.0, 0.0)
        else:
            scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return _round_to_uint8(np.clip(scaled, 0.0, 255.0))


def _first_float(value) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        # A multi-valued window: the first one is the default view.
        if len(value) == 0:
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int_or(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# ---------------------------------------------------------------- scanning
def check_image(path: str | Path, quick: bool = False) -> str | None:
    """Why `path` cannot be read as an image, or None when it can.

    The full check decodes the file (`decode_image`). The quick one reads a
    PNG's chunks and checks their CRCs and the closing IEND chunk without
    inflating the pixels (~1.2 ms instead of ~17 ms for a 1024 x 1024 NIH
    film), which catches truncated and damaged files; only a deflate stream
    corrupted with matching CRCs (crafted, not a disk or copy error) passes
    it and fails at decoding. Other formats are decoded either way.
    """
    path = Path(path)
    try:
        if quick:
            with _open_image(path) as handle:
                if _read_kind(handle, path)[1] == "PNG":
                    _verify_png(handle, path)
                    return None
        decode_image(path)
    except ImageDecodeError as exc:
        return error_reason(exc)
    return None


def _verify_png(handle: BinaryIO, path: Path) -> None:
    from PIL import Image

    try:
        with Image.open(handle) as image:
            image.verify()
    except Exception as exc:
        if not _library_failure(exc):
            raise
        raise ImageDecodeError(f"cannot be decoded as PNG ({_describe(exc)})", path) from None


def error_reason(exc: InputError) -> str:
    """An InputError's message without its leading "path: " (for lists keyed by file)."""
    text = str(exc)
    prefix = f"{exc.path}: " if exc.path is not None else ""
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def default_workers() -> int:
    """CPU cores this process may use (the default number of worker processes)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def scan_images(
    paths: Iterable[str | Path], workers: int | None = None, progress: bool = True, quick: bool = False
) -> list[tuple[Path, str]]:
    """Check every file (`check_image`) and return all that fail, as (path, reason) pairs.

    Runs in `workers` processes (default: all available cores; 0 or 1 runs in
    this process) with a progress bar, so one pass over a data set lists every
    bad file at once instead of stopping at the first. Ctrl-C stops it at
    once (queued files are dropped, not checked).
    """
    from cxrlt.processes import worker_pool
    from cxrlt.progress import progress_bar

    paths = [Path(p) for p in paths]
    workers = default_workers() if workers is None else workers
    check = functools.partial(check_image, quick=quick)
    bad: list[tuple[Path, str]] = []
    if workers <= 1 or len(paths) < 2:
        with progress_bar(total=len(paths), desc="checking images", unit="img", enabled=progress) as bar:
            for path in paths:
                reason = check(path)
                if reason is not None:
                    bad.append((path, reason))
                bar.update(1)
        return bad
    chunk = max(1, min(64, len(paths) // (workers * 8)))
    # The pool is started before the progress bar's monitor thread exists.
    pool = worker_pool(min(workers, len(paths)))
    try:
        results = pool.map(check, [str(p) for p in paths], chunksize=chunk)
        with progress_bar(total=len(paths), desc="checking images", unit="img", enabled=progress) as bar:
            for path, reason in zip(paths, results):
                if reason is not None:
                    bad.append((path, reason))
                bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return bad


def format_bad_images(bad: Sequence[tuple[Path | str, str]], limit: int = 20) -> str:
    """One line per bad file ("path: reason"), the first `limit` and a count of the rest."""
    lines = [f"  {path}: {reason}" for path, reason in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)
