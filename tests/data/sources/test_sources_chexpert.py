"""CheXpert reader: policies, views, ids from paths, malformed files, real counts."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
from collections import Counter

import numpy as np
import pytest

from cxrlt.data.stats import LabelStats
from cxrlt.errors import ConfigError, InputError
from cxrlt.labels import CHEXPERT14
from cxrlt.registry import SOURCES

HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT14]
PREFIX = "CheXpert-v1.0-small/train/"
META = [
    ("patient00001/study1/view1_frontal.jpg", "Female", "68", "Frontal", "AP"),
    ("patient00002/study2/view1_frontal.jpg", "Male", "87", "Frontal", "PA"),
    ("patient00002/study1/view1_frontal.jpg", "Male", "83", "Frontal", "AP"),
    ("patient00002/study1/view2_lateral.jpg", "Male", "83", "Lateral", ""),
]
# Four rows x 14 observations holding each raw value (1, 0, -1, blank) in
# every column: row i, column j holds TOKENS[(i + j) % 4].
TOKENS = ["1.0", "0.0", "-1.0", ""]
RAW = np.array([[[1, 0, -1, np.nan][(i + j) % 4] for j in range(14)] for i in range(4)], dtype=np.float32)


def write_chexpert(path, meta=META, tokens=None, header=HEADER):
    rows = []
    for i, (p, sex, age, fl, appa) in enumerate(meta):
        values = tokens[i] if tokens is not None else [TOKENS[(i + j) % 4] for j in range(14)]
        rows.append(",".join([PREFIX + p, sex, age, fl, appa, *values]))
    path.write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")
    return path


def documented(raw, uncertain, blank):
    """The policy table of the docstring, written out element by element."""
    out = raw.copy()
    for index, value in np.ndenumerate(raw):
        if value == -1:
            out[index] = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[uncertain]
        elif np.isnan(value):
            out[index] = {"zeros": 0.0, "ignore": np.nan}[blank]
    return out


@pytest.mark.parametrize("uncertain,blank", list(itertools.product(["ones", "zeros", "ignore"], ["zeros", "ignore"])))
def test_every_policy_gives_the_documented_matrix(tmp_path, uncertain, blank):
    table = SOURCES.build("chexpert", labels=write_chexpert(tmp_path / "train.csv"), uncertain=uncertain, blank=blank)
    assert table.classes == CHEXPERT14
    np.testing.assert_array_equal(table.labels, documented(RAW, uncertain, blank))


def test_default_policy_is_u_ones_blank_zero(tmp_path):
    table = SOURCES.build("chexpert", labels=write_chexpert(tmp_path / "train.csv"))
    # row 0 starts 1, 0, -1, blank, 1, ... -> 1, 0, 1, 0, 1, ...
    assert table.labels[0, :4].tolist() == [1.0, 0.0, 1.0, 0.0]


def test_ids_views_and_metadata(tmp_path):
    table = SOURCES.build("chexpert", labels=write_chexpert(tmp_path / "train.csv"))
    meta = table.meta
    assert meta["image_id"].tolist() == ["train/" + m[0] for m in META]
    assert meta["path"].tolist() == [PREFIX + m[0] for m in META]
    assert meta["patient_id"].tolist() == ["patient00001", "patient00002", "patient00002", "patient00002"]
    assert meta["study_id"].tolist() == [
        "patient00001/study1", "patient00002/study2", "patient00002/study1", "patient00002/study1",
    ]
    assert meta["view"].tolist() == ["AP", "PA", "AP", "LATERAL"]
    assert meta["sex"].tolist() == ["F", "M", "M", "M"]
    assert meta["age"].tolist() == [68.0, 87.0, 83.0, 83.0]


@pytest.mark.parametrize(
    "views,rows",
    [(["frontal"], [0, 1, 2]), (["lateral"], [3]), (["ap"], [0, 2]), (["pa"], [1]), (["pa", "lateral"], [1, 3])],
)
def test_view_filter(tmp_path, views, rows):
    table = SOURCES.build("chexpert", labels=write_chexpert(tmp_path / "train.csv"), views=views)
    assert table.meta["image_id"].tolist() == ["train/" + META[r][0] for r in rows]
    np.testing.assert_array_equal(table.labels, documented(RAW, "ones", "zeros")[rows])


def test_empty_view_list_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="views"):
        SOURCES.build("chexpert", labels=write_chexpert(tmp_path / "train.csv"), views=[])


def test_label_value_outside_the_allowed_set(tmp_path):
    tokens = [[TOKENS[(i + j) % 4] for j in range(14)] for i in range(4)]
    tokens[1][5] = "2.0"
    tokens[3][0] = "yes"
    path = write_chexpert(tmp_path / "train.csv", tokens=tokens)
    with pytest.raises(InputError) as info:
        SOURCES.build("chexpert", labels=path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 3:")
    assert "outside 1, 0, -1 or blank" in message
    assert "line 3 ('Edema' is '2.0')" in message and "line 5 ('No Finding' is 'yes')" in message


def test_missing_observation_column(tmp_path):
    header = [h if h != "Pleural Other" else "Pleural Others" for h in HEADER]
    path = write_chexpert(tmp_path / "train.csv", header=header)
    with pytest.raises(InputError, match=r"line 1: the header lacks the column 'Pleural Other' \(found 'Pleural Others'"):
        SOURCES.build("chexpert", labels=path)


def test_duplicate_paths(tmp_path):
    path = write_chexpert(tmp_path / "train.csv", meta=META + [META[2]], tokens=[[""] * 14] * 5)
    with pytest.raises(InputError, match=r"line 4 .*line 6"):
        SOURCES.build("chexpert", labels=path)


def test_path_without_patient_and_study(tmp_path):
    meta = META[:1] + [("somewhere/view1_frontal.jpg", "Male", "80", "Frontal", "AP")]
    with pytest.raises(InputError, match=r"line 3: paths must contain .*patientNNNNN/studyN"):
        SOURCES.build("chexpert", labels=write_chexpert(tmp_path / "train.csv", meta=meta, tokens=[[""] * 14] * 2))


def test_empty_file(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(gzip.compress(b""))
    with pytest.raises(InputError, match="is empty"):
        SOURCES.build("chexpert", labels=path)


def test_unbalanced_quotes_are_reported(tmp_path):
    path = write_chexpert(tmp_path / "train.csv")
    text = path.read_text().replace("Female", '"Female', 1)
    path.write_text(text)
    with pytest.raises(InputError, match=str(path)):
        SOURCES.build("chexpert", labels=path)


# ---------------------------------------------------------------- real data
def _raw_counts(path):
    """Per observation: how many rows hold 1, 0, -1 and blank (csv module)."""
    with gzip.open(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        columns = list(zip(*reader))
    counts = {}
    for name in CHEXPERT14:
        tally = Counter(columns[header.index(name)])
        counts[name] = {"1": tally["1.0"], "0": tally["0.0"], "-1": tally["-1.0"], "": tally[""]}
        assert sum(counts[name].values()) == len(columns[0])  # no other spelling in the file
    return counts


@pytest.mark.real_data
def test_real_counts_match_a_direct_count(shared_data):
    path = shared_data / "chexpert" / "chexpert_train.csv.gz"
    raw = _raw_counts(path)
    ones_zeros = LabelStats.from_table(SOURCES.build("chexpert", labels=path))  # -1 -> 1, blank -> 0
    ignore = LabelStats.from_table(SOURCES.build("chexpert", labels=path, uncertain="ignore", blank="ignore"))
    assert ones_zeros.n_images == ignore.n_images == 223_414
    for j, name in enumerate(CHEXPERT14):
        c = raw[name]
        assert ignore.positives[j] == c["1"], name
        assert ignore.negatives[j] == c["0"], name
        assert ignore.missing[j] == c["-1"] + c[""], name
        assert ones_zeros.positives[j] == c["1"] + c["-1"], name
        assert ones_zeros.negatives[j] == c["0"] + c[""], name
        assert ones_zeros.missing[j] == 0


def test_gzip_and_plain_read_the_same(tmp_path):
    plain = write_chexpert(tmp_path / "train.csv")
    packed = tmp_path / "train.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a = SOURCES.build("chexpert", labels=plain)
    b = SOURCES.build("chexpert", labels=packed)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.image_ids == b.image_ids


def test_quoted_fields_keep_line_numbers(tmp_path):
    path = write_chexpert(tmp_path / "train.csv")
    rows = list(csv.reader(io.StringIO(path.read_text())))
    rows[2][1] = "Male,\nreally"  # a quoted field spanning two lines
    rows[3][5 + 3] = "5"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue())
    with pytest.raises(InputError) as info:
        SOURCES.build("chexpert", labels=path)
    assert info.value.line == 5  # the record after the two-line one starts on line 5
