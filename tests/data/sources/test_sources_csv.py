"""Generic CSV reader, save/read round trip and `load_table`."""

from __future__ import annotations

import numpy as np
import pytest

from cxrlt.config import DataConfig
from cxrlt.data.sources import load_table
from cxrlt.errors import ConfigError, InputError
from cxrlt.registry import SOURCES


def write(path, text):
    path.write_text(text)
    return path


CSV = """file,patient,Mass,Nodule,Hernia,Device_Count,notes
a.png,p1,1,0,,0,x
b.png,p1,0,1,,3,
c.png,p2,1.0,,,1,y
"""


def test_class_inference_rule(tmp_path):
    # Mass / Nodule: 0/1/blank -> classes; Hernia: all blank but a known
    # finding -> class; Device_Count has a 3 and notes has text -> ignored.
    table = SOURCES.build("csv", labels=write(tmp_path / "l.csv", CSV), path_column="file", patient_column="patient")
    assert table.classes == ("Mass", "Nodule", "Hernia")
    np.testing.assert_array_equal(
        table.labels, np.array([[1, 0, np.nan], [0, 1, np.nan], [1, np.nan, np.nan]], dtype=np.float32)
    )
    assert table.meta["image_id"].tolist() == ["a.png", "b.png", "c.png"]  # the path, without an id column
    assert table.meta["patient_id"].tolist() == ["p1", "p1", "p2"]
    assert (table.meta["source"] == "csv").all()


def test_declared_classes_accept_soft_values_and_any_spelling(tmp_path):
    text = "path,Pleural_Effusion,Mass\na.png,0.25,1\nb.png,,0\n"
    table = SOURCES.build("csv", labels=write(tmp_path / "l.csv", text), classes=["Pleural Effusion"])
    assert table.classes == ("Pleural Effusion",)
    np.testing.assert_array_equal(table.labels[:, 0], [0.25, np.nan])


def test_round_trip_of_a_saved_table(tmp_path):
    text = "image,pid,study,Atelectasis,Edema\na.png,1,s1,1,0\nb.png,1,s1,0,\nc.png,2,s2,1,1\n"
    original = SOURCES.build(
        "csv", labels=write(tmp_path / "in.csv", text), path_column="image", patient_column="pid", study_column="study",
    ).with_splits(["train", "train", "test"])
    original.meta["sex"] = ["F", "F", "M"]
    original.meta["age"] = [41.0, 41.0, np.nan]
    saved = original.save_csv(tmp_path / "saved.csv")
    back = SOURCES.build("csv", labels=saved)
    assert back.classes == original.classes
    np.testing.assert_array_equal(back.labels, original.labels)
    for column in ("image_id", "path", "patient_id", "study_id", "split", "sex", "source"):
        assert back.meta[column].tolist() == original.meta[column].tolist(), column
    np.testing.assert_array_equal(back.meta["age"].to_numpy(), [41.0, 41.0, np.nan])


def test_malformed_csv_files(tmp_path):
    with pytest.raises(InputError, match=r"line 1: the header lacks the column 'path'"):
        SOURCES.build("csv", labels=write(tmp_path / "a.csv", "file,Mass\na.png,1\n"))
    with pytest.raises(InputError, match=r"b\.csv, line 3: class column 'Mass' must hold numbers from 0 to 1"):
        SOURCES.build("csv", labels=write(tmp_path / "b.csv", "path,Mass\na.png,1\nb.png,2\n"), classes=["Mass"])
    with pytest.raises(InputError, match=r"line 2 .*line 4"):
        SOURCES.build("csv", labels=write(tmp_path / "c.csv", "path,Mass\na.png,1\nb.png,0\na.png,1\n"))
    with pytest.raises(InputError, match="is empty"):
        SOURCES.build("csv", labels=write(tmp_path / "d.csv", ""))
    with pytest.raises(InputError, match="no class columns found"):
        SOURCES.build("csv", labels=write(tmp_path / "e.csv", "path,notes\na.png,hello\n"))
    with pytest.raises(InputError, match=r"line 3: column 'split' has split names"):
        SOURCES.build("csv", labels=write(tmp_path / "f.csv", "path,split,Mass\na.png,train,1\nb.png,dev,0\n"))


# ---------------------------------------------------------------- load_table
def data_config(**data):
    return DataConfig.model_validate(data)


def test_load_table_merges_sources_into_one_label_space(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = write(tmp_path / "one.csv", "path,patient_id,Effusion,Mass\na.png,1,1,0\nb.png,2,0,1\n")
    second = write(tmp_path / "two.csv", "path,patient_id,Pleural Effusion,Edema\nc.png,1,1,1\n")
    config = data_config(
        sources=[
            {"name": "csv", "labels": str(first), "images": str(tmp_path / "one")},
            {"name": "csv", "labels": str(second), "images": str(tmp_path / "two")},
        ],
        classes=["Pleural Effusion", "Mass", "Edema"],
        split={"method": "random", "val_fraction": 0.0, "test_fraction": 0.0},
    )
    table = load_table(config)
    assert table.classes == ("Pleural Effusion", "Mass", "Edema")
    np.testing.assert_array_equal(
        table.labels, np.array([[1, 0, np.nan], [0, 1, np.nan], [1, np.nan, 1]], dtype=np.float32)
    )
    assert [str(p) for p in table.image_paths()] == [
        str(tmp_path / "one" / "a.png"), str(tmp_path / "one" / "b.png"), str(tmp_path / "two" / "c.png"),
    ]
    assert table.meta["split"].tolist() == ["train"] * 3

    zero = load_table(config.model_copy(update={"unannotated": "zero"}))
    np.testing.assert_array_equal(zero.labels[:, 2], [0, 0, 1])


def test_load_table_default_classes_and_source_split(tmp_path):
    path = write(tmp_path / "l.csv", "path,split,Mass,Nodule\na.png,train,1,0\nb.png,test,0,1\nc.png,train,0,0\n")
    table = load_table(data_config(sources=[{"name": "csv", "labels": str(path)}], split={"val_fraction": 0.0}))
    assert table.classes == ("Mass", "Nodule")
    assert table.meta["split"].tolist() == ["train", "test", "train"]


def test_load_table_errors(tmp_path):
    path = write(tmp_path / "l.csv", "path,Mass\na.png,1\n")
    with pytest.raises(ConfigError, match=r"data.sources.0 .*annotates none of the classes"):
        load_table(data_config(sources=[{"name": "csv", "labels": str(path)}], classes=["Edema"]))
    with pytest.raises(ConfigError, match=r"image id 'a.png' occurs in data.sources.0 and data.sources.1"):
        load_table(data_config(sources=[{"name": "csv", "labels": str(path)}] * 2, split={"method": "random"}))
    with pytest.raises(ConfigError, match="no source gives a split"):
        load_table(data_config(sources=[{"name": "csv", "labels": str(path)}]))


def test_source_parameters_are_validated_by_the_config(tmp_path):
    with pytest.raises(Exception, match="uncertain"):
        data_config(sources=[{"name": "chexpert", "labels": "x.csv", "uncertain": "maybe"}])
    with pytest.raises(Exception, match="unknown key"):
        data_config(sources=[{"name": "nih", "labels": "x.csv", "train_lists": "t.txt"}])
