"""Decoding (PNG 8/16 bit, RGBA, JPEG, DICOM), geometry and bad files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import cxrlt.data.images as images_module
from cxrlt.data.images import (
    center_crop,
    check_image,
    crop_and_resize,
    decode_image,
    load_image,
    resize_square,
    scale_to_uint8,
    scan_images,
)
from cxrlt.errors import ImageDecodeError
from dicom_files import write_dicom

RGBA_NIH = ("00001369_000.png", "00002578_000.png")


def half_up(x):
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.uint8)


# ------------------------------------------------------------------ real NIH
def test_real_nih_pngs_decode_and_join_their_label_rows(shared_data: Path):
    folder = shared_data / "nih" / "images"
    names = sorted(p.name for p in folder.glob("*.png"))
    assert len(names) == 123
    chosen = sorted(set(names[:4]) | set(RGBA_NIH))
    labels = pd.read_csv(shared_data / "nih" / "Data_Entry_2017_v2020.csv.gz")
    rows = labels.set_index("Image Index")
    for name in chosen:
        image = decode_image(folder / name)
        assert image.shape == (1024, 1024) and image.dtype == np.uint8
        with Image.open(folder / name) as original:
            raw = np.asarray(original)
        if name in RGBA_NIH:
            # Gray stored as RGBA (opaque): luminance of R = G = B is that value.
            assert raw.shape == (1024, 1024, 4)
            assert (raw[..., 0] == raw[..., 1]).all() and (raw[..., 0] == raw[..., 2]).all()
            np.testing.assert_array_equal(image, raw[..., 0])
        else:
            np.testing.assert_array_equal(image, raw)
        # The file name is the label file's key; the patient id is its prefix.
        row = rows.loc[name]
        assert int(row["Patient ID"]) == int(name[:8])
        assert isinstance(row["Finding Labels"], str) and row["Finding Labels"]
    assert set(names) <= set(labels["Image Index"])


def test_real_nih_load_224_and_256_match_reference_averages(shared_data: Path):
    path = shared_data / "nih" / "images" / RGBA_NIH[0]
    full = decode_image(path).astype(np.float64)
    # 1024 -> 256 is an integer factor: exact area = torch's 4x4 average pooling.
    pooled = F.avg_pool2d(torch.from_numpy(full)[None, None], 4)[0, 0].numpy()
    np.testing.assert_array_equal(load_image(path, 256), half_up(pooled))
    # 1024 -> 224 (s = 32/7): exact area = W x W^T with overlap weights W,
    # which are multiples of 1/32: integer arithmetic keeps ties exact.
    weights = np.rint(_dense_area_weights(1024, 224) * 32)
    assert np.array_equal(weights.sum(axis=1), np.full(224, 32))
    # Whole numbers below 2^53: float64 products are exact.
    sums = (weights @ full @ weights.T).astype(np.int64)  # = 1024 x the mean
    np.testing.assert_array_equal(load_image(path, 224), ((sums + 512) // 1024).astype(np.uint8))


def _dense_area_weights(n_in: int, n_out: int) -> np.ndarray:
    """Overlap of output interval [j s, (j+1) s) with pixel [i, i+1), over s (loops, not vectorised)."""
    scale = n_in / n_out
    weights = np.zeros((n_out, n_in))
    for j in range(n_out):
        lo, hi = j * scale, (j + 1) * scale
        for i in range(int(lo), min(n_in, int(np.ceil(hi)) + 1)):
            weights[j, i] = max(0.0, min(hi, i + 1) - max(lo, i)) / scale
    return weights


# ---------------------------------------------------------------- geometry
def test_center_crop_follows_torchxrayvision_offsets():
    image = np.arange(5 * 8).reshape(5, 8)
    # side 5, left = 8 // 2 - 5 // 2 = 2
    np.testing.assert_array_equal(center_crop(image), image[:, 2:7])
    tall = np.arange(7 * 4).reshape(7, 4)
    # side 4, top = 7 // 2 - 4 // 2 = 1
    np.testing.assert_array_equal(center_crop(tall), tall[1:5, :])


def test_area_resize_by_hand():
    # 2x2 -> 1x1: mean of 0, 1, 2, 3 = 1.5, rounded half up.
    assert resize_square(np.array([[0, 1], [2, 3]], np.uint8), 1).tolist() == [[2]]
    # 3x3 -> 2x2 (s = 1.5): output (0, 0) covers pixel (0,0) fully, (0,1) and
    # (1,0) half, (1,1) a quarter: (9*1 + 18*.5 + 27*.5 + 36*.25) / 2.25 = 18.
    image = np.array([[9, 18, 0], [27, 36, 0], [0, 0, 90]], np.uint8)
    out = resize_square(image, 2)
    assert out[0, 0] == 18
    # output (1, 1): (36*.25 + 0*.5 + 0*.5 + 90*1) / 2.25 = 44
    assert out[1, 1] == 44


def test_area_resize_matches_exact_rational_reference():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (13, 13), dtype=np.uint8)
    out = resize_square(image, 5)
    scale = Fraction(13, 5)
    for j in range(5):
        for k in range(5):
            total = Fraction(0)
            for r in range(13):
                wr = max(Fraction(0), min(scale * (j + 1), Fraction(r + 1)) - max(scale * j, Fraction(r)))
                for c in range(13):
                    wc = max(Fraction(0), min(scale * (k + 1), Fraction(c + 1)) - max(scale * k, Fraction(c)))
                    total += wr * wc * int(image[r, c])
            mean = total / (scale * scale)
            assert out[j, k] == int(mean + Fraction(1, 2)), (j, k, float(mean))


def test_upscaling_is_bilinear():
    image = np.array([[0, 100], [200, 50]], np.uint8)
    out = resize_square(image, 6).astype(int)
    reference = F.interpolate(
        torch.tensor(image, dtype=torch.float64)[None, None], size=(6, 6), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    assert np.abs(out - reference).max() <= 1


def test_load_image_crops_then_resizes(tmp_path: Path):
    image = np.zeros((40, 60), np.uint8)
    image[:, 10:50] = np.arange(40, dtype=np.uint8)[:, None] * 5  # the centre square
    path = tmp_path / "wide.png"
    Image.fromarray(image).save(path)
    expected = image[:, 10:50].reshape(10, 4, 10, 4).astype(float).mean(axis=(1, 3))
    np.testing.assert_array_equal(load_image(path, 10), half_up(expected))


# ---------------------------------------------------------------- formats
def test_16_bit_png_scaled_by_its_own_range(tmp_path: Path):
    values = np.array([[1000, 1005, 2275], [3550, 1234, 1000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert path.read_bytes()[24] == 16  # IHDR bit depth: really a 16-bit PNG
    # (v - 1000) * 255 / 2550 = (v - 1000) / 10, rounded half up
    assert decode_image(path).tolist() == [[0, 1, 128], [255, 23, 0]]


def test_scale_constant_image_is_zero():
    assert scale_to_uint8(np.full((2, 2), 4000, np.uint16)).tolist() == [[0, 0], [0, 0]]


def test_rgba_collapses_to_luminance_ignoring_alpha(tmp_path: Path):
    rgba = np.array(
        [[[255, 0, 0, 255], [0, 255, 0, 128]], [[0, 0, 255, 0], [100, 100, 100, 7]]], dtype=np.uint8
    )
    path = tmp_path / "colour.png"
    Image.fromarray(rgba, "RGBA").save(path)
    # ITU-R 601: 0.299 * 255 = 76.2, 0.587 * 255 = 149.7, 0.114 * 255 = 29.1; gray stays gray
    assert decode_image(path).tolist() == [[76, 150], [29, 100]]
    gray_alpha = tmp_path / "la.png"
    Image.fromarray(np.dstack([np.full((2, 2), 77, np.uint8), np.zeros((2, 2), np.uint8)]), "LA").save(gray_alpha)
    assert decode_image(gray_alpha).tolist() == [[77, 77], [77, 77]]


def test_jpeg_grayscale_and_colour(tmp_path: Path):
    # 8x8-aligned constant blocks survive JPEG at quality 100 exactly.
    image = np.zeros((32, 32), np.uint8)
    image[:, :16] = 40
    image[:, 16:] = 200
    path = tmp_path / "blocks.jpg"
    Image.fromarray(image).save(path, quality=100)
    np.testing.assert_array_equal(decode_image(path), image)
    colour = tmp_path / "colour.jpeg"
    Image.fromarray(np.full((16, 16, 3), (200, 100, 50), np.uint8)).save(colour, quality=100)
    # 0.299 * 200 + 0.587 * 100 + 0.114 * 50 = 124.2
    assert np.abs(decode_image(colour).astype(int) - 124).max() <= 1


def test_format_chosen_by_content_not_extension(tmp_path: Path):
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    path = tmp_path / "really_a_png.jpg"
    Image.fromarray(image).save(path, format="PNG")
    np.testing.assert_array_equal(decode_image(path), image)


def test_large_jpeg_uses_dct_scaling_close_to_full_decode(tmp_path: Path, monkeypatch):
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 256, (32, 32)).astype(np.uint8)
    image = np.kron(coarse, np.ones((64, 64), np.uint8))  # 2048 x 2048, smooth at the scale of 224
    path = tmp_path / "big.jpg"
    Image.fromarray(image).save(path, quality=95)
    from PIL import JpegImagePlugin

    requested = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        requested.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    fast = load_image(path, 224).astype(int)
    assert requested[-1] == (224, 224)
    full = crop_and_resize(decode_image(path), 224).astype(int)
    assert requested[-1] == (2048, 2048)  # decode_image keeps full resolution
    assert np.abs(fast - full).mean() < 1.0


# ------------------------------------------------------------------- DICOM
def test_dicom_monochrome2_and_1_without_window_use_value_range(tmp_path: Path):
    stored = np.array([[0, 100], [200, 400]], np.uint16)
    mono2 = write_dicom(tmp_path / "m2.dcm", stored, BitsStored=12)
    mono1 = write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1", BitsStored=12)
    # v * 255 / 400: 0, 63.75, 127.5, 255 (half up)
    assert decode_image(mono2).tolist() == [[0, 64], [128, 255]]
    # MONOCHROME1: low values are white
    assert decode_image(mono1).tolist() == [[255, 191], [127, 0]]


def test_dicom_signed_pixels(tmp_path: Path):
    path = write_dicom(tmp_path / "signed.dcm", np.array([[-1000, 0], [1000, 20]], np.int16))
    # (v + 1000) * 255 / 2000: 0, 127.5, 255, 130.05
    assert decode_image(path).tolist() == [[0, 128], [255, 130]]


def test_dicom_rescale_then_linear_window(tmp_path: Path):
    # stored s, value = 2 s - 1024 = -200, 0, 100, 200, 1000
    stored = np.array([[412, 512, 562, 612, 1012]], np.uint16)
    path = write_dicom(
        tmp_path / "win.dcm", stored, RescaleSlope="2", RescaleIntercept="-1024", WindowCenter="0", WindowWidth="401"
    )
    # LINEAR, c = 0, w = 401: 0 below -200.5, 255 above 199.5, else
    # ((x + 0.5) / 400 + 0.5) * 255: x = -200 -> 0.32, 0 -> 127.8, 100 -> 191.6
    assert decode_image(path).tolist() == [[0, 128, 192, 255, 255]]
    inverted = write_dicom(
        tmp_path / "win1.dcm", stored, "MONOCHROME1",
        RescaleSlope="2", RescaleIntercept="-1024", WindowCenter="0", WindowWidth="401",
    )
    assert decode_image(inverted).tolist() == [[255, 127, 63, 0, 0]]


def test_dicom_linear_exact_sigmoid_and_multiple_windows(tmp_path: Path):
    values = np.array([[0, 200, 300, 400]], np.uint16)  # centre 200 below
    exact = write_dicom(tmp_path / "e.dcm", values, WindowCenter="200", WindowWidth="400", VOILUTFunction="LINEAR_EXACT")
    # ((x - 200) / 400 + 0.5) * 255: 0, 127.5, 191.25, 255
    assert decode_image(exact).tolist() == [[0, 128, 191, 255]]
    sigmoid = write_dicom(tmp_path / "s.dcm", values, WindowCenter="200", WindowWidth="400", VOILUTFunction="SIGMOID")
    # 255 / (1 + exp(-4 (x - 200) / 400)): 255 / (1 + e^2) = 30.4, 127.5, 186.4, 224.6
    assert decode_image(sigmoid).tolist() == [[30, 128, 186, 225]]
    several = write_dicom(tmp_path / "m.dcm", values, WindowCenter=["200", "5000"], WindowWidth=["400", "10"],
                          VOILUTFunction="LINEAR_EXACT")
    assert decode_image(several).tolist() == [[0, 128, 191, 255]]


def test_dicom_voi_lut_sequence(tmp_path: Path):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]  # 4 entries, first input value 0, 16 bits
    item.add_new("LUTData", "US", [0, 100, 400, 1000])
    path = write_dicom(tmp_path / "lut.dcm", np.array([[0, 1, 2, 3, 9]], np.uint16), VOILUTSequence=[item])
    # LUT output 0..1000 onto 0..255: 0, 25.5, 102, 255, 255 (inputs past the table clamp)
    assert decode_image(path).tolist() == [[0, 26, 102, 255, 255]]


def test_dicom_rgb_and_without_preamble(tmp_path: Path):
    rgb = write_dicom(tmp_path / "rgb.dcm", np.full((2, 2, 3), (200, 100, 50), np.uint8), "RGB")
    assert decode_image(rgb).tolist() == [[124, 124], [124, 124]]
    raw = write_dicom(tmp_path / "raw.dcm", np.array([[0, 50], [100, 200]], np.uint16), preamble=False)
    assert raw.read_bytes()[128:132] != b"DICM"
    assert decode_image(raw).tolist() == [[0, 64], [128, 255]]
    renamed = raw.rename(tmp_path / "raw.bin")
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(renamed)


# --------------------------------------------------------------- bad files
def make_bad_files(folder: Path) -> dict[str, Path]:
    good = folder / "good.png"
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(good)
    truncated = folder / "truncated.png"
    big = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(big).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:600])
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    text = folder / "notes.png"
    text.write_text("Patient 12: see report\n")
    dicom = folder / "broken.dcm"
    dicom.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7fgarbage")
    return {"good": good, "truncated": truncated, "empty": empty, "text": text, "dicom": dicom,
            "missing": folder / "absent.png"}


@pytest.mark.parametrize(
    "kind, reason",
    [("missing", "not found"), ("empty", "empty"), ("truncated", "cannot be decoded as PNG"),
     ("text", "not an image"), ("dicom", "DICOM")],
)
def test_bad_files_raise_image_decode_error_naming_the_file(tmp_path: Path, kind: str, reason: str):
    path = make_bad_files(tmp_path)[kind]
    with pytest.raises(ImageDecodeError, match=reason) as info:
        decode_image(path)
    assert str(path) in str(info.value)
    assert info.value.path == path


def test_dicom_without_pixels_is_refused(tmp_path: Path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from pydicom.uid import BasicTextSRStorage, generate_uid

    ds = Dataset()
    ds.PatientID = "x"
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "report.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageDecodeError, match="without pixel data"):
        decode_image(path)


@pytest.mark.parametrize("workers", [1, 2])
def test_scan_images_reports_every_bad_file(tmp_path: Path, workers: int):
    files = make_bad_files(tmp_path)
    ordered = [files[k] for k in ("good", "truncated", "empty", "good", "text", "dicom", "missing")]
    bad = scan_images(ordered, workers=workers, progress=False)
    assert [path for path, _ in bad] == [files[k] for k in ("truncated", "empty", "text", "dicom", "missing")]
    assert all(reason and str(path) not in reason for path, reason in bad)


@pytest.mark.parametrize("workers", [1, 2])
def test_quick_scan_finds_the_same_bad_files(tmp_path: Path, workers: int):
    files = make_bad_files(tmp_path)
    ordered = [files[k] for k in ("good", "truncated", "empty", "good", "text", "dicom", "missing")]
    quick = scan_images(ordered, workers=workers, progress=False, quick=True)
    full = scan_images(ordered, workers=workers, progress=False)
    assert [path for path, _ in quick] == [path for path, _ in full]
    assert [reason.split(" (")[0] for _, reason in quick] == [reason.split(" (")[0] for _, reason in full]


def test_quick_check_catches_a_png_cut_anywhere_without_inflating_it(tmp_path: Path, monkeypatch):
    rng = np.random.default_rng(4)
    path = tmp_path / "film.png"
    Image.fromarray(rng.integers(0, 256, (128, 128), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    monkeypatch.setattr(images_module, "decode_image", None)  # the quick check of a PNG never decodes
    assert check_image(path, quick=True) is None
    cut = tmp_path / "cut.png"
    for length in np.linspace(9, len(data) - 12, 25).astype(int):  # down to a file without its IEND chunk
        cut.write_bytes(data[:length])
        assert check_image(cut, quick=True).startswith("cannot be decoded as PNG"), length
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF  # one flipped bit pattern inside the image data: the chunk CRC fails
    cut.write_bytes(bytes(damaged))
    assert "cannot be decoded as PNG" in check_image(cut, quick=True)


def test_quick_check_decodes_other_formats(tmp_path: Path):
    path = tmp_path / "film.jpg"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 64), dtype=np.uint8)).save(path, quality=90)
    assert check_image(path, quick=True) is None
    path.write_bytes(path.read_bytes()[:-300])
    assert "cannot be decoded as JPEG" in check_image(path, quick=True)


def logged_check(path, quick=False):
    """Stands in for `check_image` in the worker processes: 10 ms, and a line in the log beside the files."""
    import time

    time.sleep(0.01)
    with open(Path(path).parent / "checked.log", "a") as log:
        log.write(f"{path}\n")


def test_ctrl_c_stops_a_parallel_scan_without_checking_the_queued_files(tmp_path: Path, monkeypatch):
    import cxrlt.progress

    paths = [tmp_path / f"x{i}.png" for i in range(400)]  # chunks of 25 files
    monkeypatch.setattr(images_module, "check_image", logged_check)
    real_bar = cxrlt.progress.progress_bar

    def interrupted_bar(*args, **kwargs):  # Ctrl-C once 10 results came back
        bar = real_bar(*args, **kwargs)

        def update(n):
            if bar.n >= 10:
                raise KeyboardInterrupt
            bar.n += n

        bar.update = update
        return bar

    monkeypatch.setattr(cxrlt.progress, "progress_bar", interrupted_bar)
    with pytest.raises(KeyboardInterrupt):
        scan_images(paths, workers=2, progress=False)
    checked = len((tmp_path / "checked.log").read_text().splitlines())
    assert 10 <= checked < len(paths)  # the chunks running or handed to a worker, never the queued rest


def test_outputs_are_writable_arrays(tmp_path: Path):
    path = tmp_path / "x.png"
    Image.fromarray(np.full((6, 9), 3, np.uint8)).save(path)
    for image in (decode_image(path), load_image(path, 6), load_image(path, 3), load_image(path, 12)):
        image[0, 0] = 1  # read-only arrays would raise here


def test_truncated_png_is_named_without_library_noise(tmp_path, capfd):
    rng = np.random.default_rng(8)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="cut.png.*truncated"):
        decode_image(tmp_path / "cut.png")
    assert capfd.readouterr().err == ""
