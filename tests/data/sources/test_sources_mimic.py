"""MIMIC-CXR-JPG / CXR-LT reader."""

from __future__ import annotations

import numpy as np
import pytest

from cxrlt.errors import InputError
from cxrlt.registry import SOURCES

HEADER = "dicom_id,subject_id,study_id,ViewPosition,split,Atelectasis,Calcification of the Aorta,Pneumoperitoneum,Support Devices,n_findings"
ROWS = [
    "d1,10000032,50414267,PA,train,1,0,0,1,2",
    "d2,10000032,50414267,LATERAL,train,1,0,0,1,2",
    "d3,10000764,57375967,AP,validate,0,1,,0,1",
    "d4,10000898,50771383,PA,test,-1,0,1,0,1",
]


def write(path, header=HEADER, rows=ROWS):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_infers_known_finding_columns_and_builds_paths(tmp_path):
    table = SOURCES.build("mimic", labels=write(tmp_path / "train.csv"))
    # n_findings is not a finding name, so it is not a class
    assert table.classes == ("Atelectasis", "Calcification of the Aorta", "Pneumoperitoneum", "Support Devices")
    np.testing.assert_array_equal(
        table.labels,
        np.array([[1, 0, 0, 1], [1, 0, 0, 1], [0, 1, 0, 0], [1, 0, 1, 0]], dtype=np.float32),  # U-Ones, blank 0
    )
    meta = table.meta
    assert meta["image_id"].tolist() == ["d1", "d2", "d3", "d4"]
    assert meta["patient_id"].tolist() == ["10000032", "10000032", "10000764", "10000898"]
    assert meta["study_id"].tolist() == ["50414267", "50414267", "57375967", "50771383"]
    assert meta["path"].iloc[0] == "files/p10/p10000032/s50414267/d1.jpg"
    assert meta["view"].tolist() == ["PA", "LATERAL", "AP", "PA"]
    assert meta["split"].tolist() == ["train", "train", "val", "test"]


def test_declared_classes_any_spelling_and_policies(tmp_path):
    table = SOURCES.build(
        "mimic", labels=write(tmp_path / "train.csv"), classes=["Support Device", "atelectasis"],
        uncertain="ignore", blank="ignore",
    )
    assert table.classes == ("Support Device", "atelectasis")
    np.testing.assert_array_equal(table.labels[:, 1], [1, 1, 0, np.nan])
    np.testing.assert_array_equal(table.labels[:, 0], [1, 1, 0, 0])


def test_path_column_is_used_when_present(tmp_path):
    header = "dicom_id,subject_id,study_id,fpath,Edema"
    rows = ["d1,1,2,files/p10/p1/s2/d1.jpg,1", "d2,1,2,files/p10/p1/s2/d2.jpg,0"]
    table = SOURCES.build("mimic", labels=write(tmp_path / "l.csv", header, rows))
    assert table.meta["path"].tolist() == ["files/p10/p1/s2/d1.jpg", "files/p10/p1/s2/d2.jpg"]
    assert table.classes == ("Edema",)


def test_missing_dicom_column_names_the_file(tmp_path):
    path = write(tmp_path / "l.csv", "subject_id,study_id,Edema", ["1,2,1"])
    with pytest.raises(InputError, match=r"l\.csv, line 1: the header lacks the column 'dicom_id'"):
        SOURCES.build("mimic", labels=path)


def test_undeclared_class_column(tmp_path):
    with pytest.raises(InputError, match="no column for the class.*'Hernia'"):
        SOURCES.build("mimic", labels=write(tmp_path / "l.csv"), classes=["Hernia"])


def test_bad_value_duplicate_id_bad_split(tmp_path):
    rows = list(ROWS)
    rows[2] = rows[2].replace(",1,,0,1", ",x,,0,1")
    with pytest.raises(InputError, match=r"line 4 \('Calcification of the Aorta' is 'x'\)"):
        SOURCES.build("mimic", labels=write(tmp_path / "a.csv", rows=rows))
    with pytest.raises(InputError, match=r"line 2 .*line 6"):
        SOURCES.build("mimic", labels=write(tmp_path / "b.csv", rows=ROWS + [ROWS[0]]))
    rows = list(ROWS)
    rows[3] = rows[3].replace(",test,", ",holdout,")
    with pytest.raises(InputError, match=r"line 5: column 'split' has split names other than"):
        SOURCES.build("mimic", labels=write(tmp_path / "c.csv", rows=rows))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("\n\n")
    with pytest.raises(InputError, match="is empty"):
        SOURCES.build("mimic", labels=path)
