"""Metadata columns: NIH and plain spellings, age bands, and clear errors for bad values."""

import numpy as np
import pandas as pd
import pytest

from cxrlt.errors import ConfigError, InputError
from cxrlt.evaluation.metadata import age_bands, parse_attributes, read_attributes


def test_nih_spellings_and_normalised_values(tmp_path):
    path = tmp_path / "Data_Entry.csv"
    pd.DataFrame({"Image Index": ["a.png", "b.png", "c.png", "d.png"],
                  "Patient Gender": ["M", "F", "female", ""],
                  "Patient Age": [19, "058Y", 80, 40],
                  "View Position": ["PA", "AP", "LL", "Lateral"]}).to_csv(path, index=False)
    got = read_attributes(path, ["d.png", "a.png", "b.png", "c.png"], ["sex", "age", "view"])
    assert list(got["sex"].values) == [None, "male", "female", "female"]
    assert got["sex"].excluded == 1 and got["sex"].column == "Patient Gender"
    assert list(got["age"].values) == ["40-60", "0-20", "40-60", "80+"]
    assert list(got["view"].values) == ["lateral", "PA", "AP", "lateral"]
    assert got["age"].groups() == ["0-20", "40-60", "80+"]


def test_plain_spellings(tmp_path):
    path = tmp_path / "labels.csv"
    pd.DataFrame({"image_id": ["x", "y"], "sex": ["Male", "F"], "age": [30.5, 61], "view": ["ap", "pa"],
                  "source": ["nih", "chexpert"]}).to_csv(path, index=False)
    got = read_attributes(path, ["x", "y"], ["sex", "age", "view", "source"], age_edges=(50,))
    assert list(got["age"].values) == ["0-50", "50+"]
    assert list(got["source"].values) == ["nih", "chexpert"]


def test_age_band_edges():
    assert age_bands([0, 19.9, 20, 79, 80, 101, np.nan]) == ["0-20", "0-20", "20-40", "60-80", "80+", "80+", None]
    with pytest.raises(ConfigError, match="strictly increasing"):
        age_bands([1], (40, 20))


@pytest.mark.parametrize("column,value,says", [
    ("Patient Sex", "X", "expected F / Female or M / Male"),
    ("Patient Age", "old", "not an age"),
    ("Patient Age", "-3", "0 or more"),
    ("View Position", "oblique", "expected PA, AP or a lateral view"),
])
def test_bad_values_name_file_line_and_expectation(tmp_path, column, value, says):
    frame = pd.DataFrame({"Image Index": ["a", "b"], "Patient Sex": ["M", "F"], "Patient Age": ["30", "40"],
                          "View Position": ["PA", "AP"]})
    frame.loc[1, column] = value
    path = tmp_path / "m.csv"
    frame.to_csv(path, index=False)
    attribute = {"Patient Sex": "sex", "Patient Age": "age", "View Position": "view"}[column]
    with pytest.raises(InputError, match=says) as info:
        read_attributes(path, ["a", "b"], [attribute])
    assert f"{path}, line 3" in str(info.value)


def test_missing_column_and_missing_rows(tmp_path):
    path = tmp_path / "m.csv"
    pd.DataFrame({"image_id": ["a"], "sex": ["M"]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="no view column"):
        read_attributes(path, ["a"], ["view"])
    with pytest.raises(InputError, match="1 of the 2 scored images have no row"):
        read_attributes(path, ["a", "zz"], ["sex"])
    with pytest.raises(ConfigError, match="some of sex, age, view, source"):
        parse_attributes("sex,race")
