"""Fuzzing the label readers and the image decoder: whatever the bytes, the
result is a valid table / image or the toolkit's own error, never a crash."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bad_inputs import dicom_bytes, png_bytes
from cxrlt.data.images import decode_image, load_image
from cxrlt.data.sources.chexpert import chexpert
from cxrlt.data.sources.csv_table import csv_table
from cxrlt.data.sources.mimic import mimic
from cxrlt.data.sources.nih import nih
from cxrlt.data.table import LabelTable
from cxrlt.errors import CxrltError
from cxrlt.evaluation.predictions import read_label_csv, read_predictions
from cxrlt.labels import CHEXPERT14

# CXRLT_FUZZ_EXAMPLES=5000 runs a deeper campaign; the default keeps the file under ~30 s.
FUZZ = settings(max_examples=int(os.environ.get("CXRLT_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ------------------------------------------------------------------ label files
VALID = {
    "nih": (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
        "a.png,Atelectasis,0,1,058Y,M,PA\nb.png,No Finding,0,2,60,F,AP\nc.png,Mass|Nodule,1,2,61,F,PA\n"
        "d.png,Hernia,0,3,011M,F,AP\ne.png,Effusion|Pleural_Thickening,0,4,33,M,PA\n"
    ),
    "chexpert": (
        "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT14) + "\n"
        + "".join(
            f"CheXpert-v1.0-small/train/patient0000{i}/study{i % 2 + 1}/view1_{view},{sex},6{i},{kind},{ap},"
            + ",".join(["1.0", "", "-1.0"] + ["0.0"] * 10 + ["1.0" if i % 2 else ""]) + "\n"
            for i, (view, sex, kind, ap) in enumerate(
                [("frontal.jpg", "Female", "Frontal", "AP"), ("frontal.jpg", "Male", "Frontal", "PA"),
                 ("lateral.jpg", "Female", "Lateral", ""), ("frontal.jpg", "Unknown", "Frontal", "AP"),
                 ("frontal.jpg", "Male", "Frontal", "")], start=1)
        )
    ),
    "mimic": (
        "dicom_id,subject_id,study_id,split,ViewPosition,Atelectasis,Edema,Pneumonia\n"
        "d1,10,50,train,PA,1,0,\nd2,11,51,test,AP,-1,,1\nd3,11,52,validate,LATERAL,0,1,0\n"
        "d4,12,53,train,PA,,,\nd5,13,54,train,AP,1,1,-1\n"
    ),
    "csv": (
        "path,patient_id,split,Atelectasis,Mass,note\nx.png,p1,train,1,0,hi\ny.png,p2,test,,1,there\n"
        "z/w.png,p2,val,0,0,\n/abs/v.png,p3,train,1,1,x\nu.png,,train,0,,y\n"
    ),
}
READERS = {"nih": nih, "chexpert": chexpert, "mimic": mimic, "csv": csv_table}

HOSTILE = st.sampled_from(["\"", '"a,b"', '"line\nbreak"', "\r", "\t", "a\x00b", "\ufeff"])
FIELDS = st.sampled_from([
    "", "0", "1", "-1", "1.0", "0.0", "2", "0.5", "nan", "NA", "null", " 1 ", "1e0", "inf", "-0", "x", "é",
    "a.png", "../x.png", "/abs/x.png", "No Finding", "Atelectasis|Mass", "Mass|No Finding", "Covid", "058Y", "011M",
    "-5", "M", "F", "train", "validate", "test", "dev", "Frontal", "Lateral", "AP", "PA",
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "patient1/study", "p1", "10", "50", "d1",
])
HEADERS = st.sampled_from([
    "Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender", "View Position", "Path", "Sex", "Age",
    "Frontal/Lateral", "AP/PA", "dicom_id", "subject_id", "study_id", "split", "path", "image_id", "patient_id",
    "Atelectasis", "Edema", "Mass", "No Finding", "Pleural Effusion", "Support Devices", "view", "x", "", "Atelectasis ",
    *CHEXPERT14,
])


@st.composite
def csv_texts(draw, source: str) -> bytes:
    """A label file for `source`, from its valid seed or from scratch.

    Mostly the seed's columns (reordered, sometimes one renamed) and rows
    (a subset, a few cells replaced), so the files reach the value checks;
    otherwise a header and rows built from plausible and hostile pieces,
    ragged rows included.
    """
    seed = VALID[source].splitlines()
    if draw(st.integers(0, 3)) > 0:
        header = seed[0].split(",")
        order = draw(st.permutations(range(len(header))))
        chosen = draw(st.permutations(seed[1:]))[: draw(st.integers(1, len(seed) - 1))]
        rows = []
        for line in chosen:
            cells = line.split(",")
            for _ in range(draw(st.integers(0, 3))):
                cells[draw(st.integers(0, len(cells) - 1))] = draw(FIELDS)
            rows.append([cells[j] for j in order])
        header = [header[j] for j in order]
        if draw(st.integers(0, 4)) == 0:
            header[draw(st.integers(0, len(header) - 1))] = draw(HEADERS)
    else:
        header = draw(st.lists(HEADERS, min_size=1, max_size=18))
        width = len(header)
        ragged = draw(st.integers(0, 4)) == 0
        low, high = (max(0, width - 1), width + 1) if ragged else (width, width)
        rows = draw(st.lists(st.lists(FIELDS | HOSTILE, min_size=low, max_size=high), min_size=1, max_size=6))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    text = end.join([",".join(header), *(",".join(row) for row in rows)]) + draw(st.sampled_from(["", end, end * 2]))
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """`original` with a few bytes flipped, inserted, deleted, or the tail cut off."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        where = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip":
            data[where] = draw(st.integers(0, 255))
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 16))]
        else:
            del data[where:]
    return bytes(data)


def read_or_refuse(reader, path: Path) -> None:
    """The reader returns a valid table or raises the toolkit's own error."""
    try:
        table = reader(labels=path)
    except CxrltError:
        return
    assert isinstance(table, LabelTable)
    finite = table.labels[np.isfinite(table.labels)]
    assert ((finite == 0) | (finite == 1)).all() or reader is csv_table
    assert table.meta["image_id"].is_unique


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("source", list(READERS))
def test_valid_seed_files_read(folder: Path, source: str):
    path = folder / f"seed-{source}.csv"
    path.write_text(VALID[source])
    assert len(READERS[source](labels=path)) >= 2


@pytest.mark.parametrize("source", list(READERS))
@FUZZ
@given(data=st.data())
def test_label_readers_on_generated_csv(folder: Path, source: str, data):
    path = folder / f"generated-{source}.csv"
    path.write_bytes(data.draw(csv_texts(source)))
    read_or_refuse(READERS[source], path)


@pytest.mark.parametrize("source", list(READERS))
@FUZZ
@given(data=st.data())
def test_label_readers_on_mutated_valid_files(folder: Path, source: str, data):
    path = folder / f"mutated-{source}.csv"
    path.write_bytes(data.draw(mutated(VALID[source].encode())))
    read_or_refuse(READERS[source], path)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_label_reader_on_random_bytes(folder: Path, raw: bytes):
    path = folder / "random.csv"
    path.write_bytes(raw)
    for reader in READERS.values():
        read_or_refuse(reader, path)


@FUZZ
@given(data=st.data())
def test_prediction_and_scoring_label_readers(folder: Path, data):
    ids = st.sampled_from(["image_id", "x", "y", "z", "", "id", "Image Index"])
    header = ["image_id", *data.draw(st.lists(st.sampled_from(["A", "B", "a", "Effusion", "Pleural Effusion", "image_id"]),
                                              min_size=1, max_size=4))]
    rows = data.draw(st.lists(st.tuples(ids, st.lists(FIELDS, min_size=len(header) - 1, max_size=len(header) - 1)),
                              max_size=5))
    text = "\n".join([",".join(header), *(",".join([i, *values]) for i, values in rows)]) + "\n"
    path = folder / "table.csv"
    path.write_bytes(data.draw(st.one_of(st.just(text.encode()), mutated(text.encode()))))
    for read in (read_predictions, read_label_csv):
        try:
            table = read(path)
        except CxrltError:
            continue
        assert len(set(table.ids)) == len(table.ids)
        finite = table.values[np.isfinite(table.values)]
        assert ((finite >= 0) & (finite <= 1)).all()
        if read is read_predictions:
            assert np.isfinite(table.values).all()


# ---------------------------------------------------------------------- images
def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


_PIXELS = (np.add.outer(np.arange(24), np.arange(20)) * 5 % 256).astype(np.uint8)
IMAGES = {
    "png": png_bytes(_PIXELS),
    "png16": png_bytes(_PIXELS.astype(np.uint16) * 200),
    "jpeg": _jpeg(_PIXELS),
    "dicom": dicom_bytes(_PIXELS.astype(np.uint16) * 16, WindowCenter=2000, WindowWidth=3000),
}
SUFFIX = {"png": ".png", "png16": ".png", "jpeg": ".jpg", "dicom": ".dcm"}


def decode_or_refuse(path: Path) -> None:
    """decode_image and load_image give a uint8 2-D image or raise ImageDecodeError (an InputError)."""
    try:
        image = decode_image(path)
    except CxrltError:
        return
    assert image.dtype == np.uint8 and image.ndim == 2 and image.size > 0
    small = load_image(path, 8)
    assert small.shape == (8, 8) and small.dtype == np.uint8


@pytest.mark.parametrize("kind", list(IMAGES))
def test_seed_images_decode(folder: Path, kind: str):
    path = folder / f"seed{SUFFIX[kind]}"
    path.write_bytes(IMAGES[kind])
    assert decode_image(path).shape == _PIXELS.shape


@pytest.mark.parametrize("kind", list(IMAGES))
@FUZZ
@given(data=st.data())
def test_decoder_on_mutated_images(folder: Path, kind: str, data):
    path = folder / f"mutated{SUFFIX[kind]}"
    path.write_bytes(data.draw(mutated(IMAGES[kind])))
    decode_or_refuse(path)


@FUZZ
@given(raw=st.binary(max_size=400), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00",
                                                           b"BM", b"\0" * 128 + b"DICM"]),
       suffix=st.sampled_from([".png", ".dcm", ".jpg", ""]))
def test_decoder_on_random_bytes(folder: Path, raw: bytes, prefix: bytes, suffix: str):
    path = folder / f"random{suffix}"
    path.write_bytes(prefix + raw)
    decode_or_refuse(path)


@st.composite
def dicom_headers(draw) -> bytes:
    """A DICOM whose image description (size, bits, photometry, windows, rescale, LUTs) is drawn at random."""
    import pydicom.config

    settings_ = pydicom.config.settings
    modes = settings_.reading_validation_mode, settings_.writing_validation_mode
    # Values off the standard (nan, bits beyond the allocation) are written as real archives hold them.
    settings_.reading_validation_mode = settings_.writing_validation_mode = pydicom.config.IGNORE
    try:
        return _dicom_with_drawn_description(draw)
    finally:
        settings_.reading_validation_mode, settings_.writing_validation_mode = modes


def _dicom_with_drawn_description(draw) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    if draw(st.integers(0, 3)) > 0:  # a consistent grayscale image; the display settings below vary
        ds.Rows, ds.Columns = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        ds.SamplesPerPixel = 1
        ds.BitsAllocated = draw(st.sampled_from([8, 16]))
        ds.BitsStored = draw(st.integers(1, ds.BitsAllocated))
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = draw(st.sampled_from([0, 1]))
        ds.PhotometricInterpretation = draw(st.sampled_from(["MONOCHROME2", "MONOCHROME1"]))
    else:  # anything, consistent or not
        ds.Rows = draw(st.integers(0, 12))
        ds.Columns = draw(st.integers(0, 12))
        ds.SamplesPerPixel = draw(st.sampled_from([1, 1, 1, 3, 0, 4]))
        ds.BitsAllocated = draw(st.sampled_from([8, 16, 16, 32, 1, 12]))
        ds.BitsStored = draw(st.integers(0, 33))
        ds.HighBit = draw(st.integers(0, 33))
        ds.PixelRepresentation = draw(st.sampled_from([0, 1, 2]))
        ds.PhotometricInterpretation = draw(st.sampled_from(
            ["MONOCHROME2", "MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "junk", ""]))
        if ds.SamplesPerPixel > 1:
            ds.PlanarConfiguration = draw(st.sampled_from([0, 1, 2]))
    numbers = st.sampled_from(["0", "1", "-1", "100", "4095", "1e9", "nan", "inf", ""])
    for key in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
        if draw(st.booleans()):
            setattr(ds, key, draw(st.lists(numbers, min_size=1, max_size=3)))
    if draw(st.booleans()):
        ds.VOILUTFunction = draw(st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID", "OTHER"]))
    if draw(st.booleans()):
        ds.NumberOfFrames = draw(st.sampled_from(["1", "1", "2", "0"]))
    if draw(st.booleans()):
        ds.PresentationLUTShape = draw(st.sampled_from(["INVERSE", "IDENTITY", "x"]))
    if draw(st.booleans()):
        from pydicom.dataset import Dataset as Item
        from pydicom.sequence import Sequence

        item = Item()
        item.LUTDescriptor = [draw(st.integers(0, 300)), draw(st.integers(0, 50)), draw(st.sampled_from([8, 12, 16]))]
        item.LUTData = np.array(draw(st.lists(st.integers(0, 4095), min_size=1, max_size=8)), dtype="<u2").tobytes()
        ds.VOILUTSequence = Sequence([item])
    expected = ds.Rows * ds.Columns * max(ds.SamplesPerPixel, 1) * max(ds.BitsAllocated, 8) // 8
    size = draw(st.sampled_from([expected] * 6 + [max(0, expected - 3), expected + 2, 0]))
    ds.PixelData = draw(st.binary(min_size=size, max_size=size))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@FUZZ
@given(data=dicom_headers())
def test_decoder_on_dicoms_with_random_image_descriptions(folder: Path, data: bytes):
    path = folder / "described.dcm"
    path.write_bytes(data)
    decode_or_refuse(path)
