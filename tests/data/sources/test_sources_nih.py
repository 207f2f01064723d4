"""NIH ChestX-ray14 reader: both releases, official lists, malformed files, real totals."""

from __future__ import annotations

import numpy as np
import pytest

from cxrlt.errors import InputError
from cxrlt.labels import NIH14
from cxrlt.registry import SOURCES
from nih_files import HEADER_2017, HEADER_2020, ROWS, SPEC_TOTALS, write_nih


def expected_matrix(rows, no_finding=False):
    classes = NIH14 + (("No Finding",) if no_finding else ())
    matrix = np.zeros((len(rows), len(classes)), dtype=np.float32)
    for i, row in enumerate(rows):
        for name in row[1].split("|"):
            if name in classes:
                matrix[i, classes.index(name)] = 1
    return matrix


def test_reads_v2020_labels_and_metadata(tmp_path):
    table = SOURCES.build("nih", labels=write_nih(tmp_path / "Data_Entry_2017_v2020.csv"), no_finding=True)
    assert table.classes == NIH14 + ("No Finding",)
    # hand-checked rows: Cardiomegaly is column 1, Emphysema 10, Effusion 2, Pleural_Thickening 12, Hernia 13
    assert table.labels[1].nonzero()[0].tolist() == [1, 10]
    assert table.labels[2].nonzero()[0].tolist() == [14]
    assert table.labels[3].nonzero()[0].tolist() == [2, 12, 13]
    np.testing.assert_array_equal(table.labels, expected_matrix(ROWS, no_finding=True))
    meta = table.meta
    assert meta["image_id"].tolist() == [r[0] for r in ROWS]
    assert meta["path"].tolist() == [r[0] for r in ROWS]
    assert meta["patient_id"].tolist() == ["1", "1", "2", "3"]
    assert meta["view"].tolist() == ["PA", "PA", "AP", "PA"]
    assert meta["sex"].tolist() == ["M", "M", "F", "F"]
    assert meta["age"].tolist() == [58.0, 58.0, 81.0, 74.0]
    assert meta["split"].isna().all()
    assert (meta["source"] == "nih").all()


def test_reads_2017_release_gzipped_with_trailing_column(tmp_path):
    path = write_nih(tmp_path / "Data_Entry_2017.csv.gz", header=HEADER_2017, age_suffix="Y", trailing=",", compress=True)
    table = SOURCES.build("nih", labels=path)
    assert table.classes == NIH14
    np.testing.assert_array_equal(table.labels, expected_matrix(ROWS))
    assert table.meta["age"].tolist() == [58.0, 58.0, 81.0, 74.0]


def test_age_in_months(tmp_path):
    rows = [ROWS[0][:4] + ("006M",) + ROWS[0][5:]]
    table = SOURCES.build("nih", labels=write_nih(tmp_path / "d.csv", rows=rows))
    assert table.meta["age"].iloc[0] == pytest.approx(0.5)


def test_images_folder_becomes_root(tmp_path):
    (tmp_path / "images").mkdir()
    table = SOURCES.build("nih", labels=write_nih(tmp_path / "d.csv"), images=tmp_path / "images")
    assert table.image_paths()[0] == tmp_path / "images" / "00000001_000.png"
    with pytest.raises(InputError, match="image folder not found"):
        SOURCES.build("nih", labels=write_nih(tmp_path / "d.csv"), images=tmp_path / "nowhere")


def test_official_lists(tmp_path):
    labels = write_nih(tmp_path / "d.csv")
    train = tmp_path / "train_val_list.txt"
    test = tmp_path / "test_list.txt"
    train.write_text("00000001_000.png\n00000001_001.png\n00000003_000.png\n\n")
    test.write_text("00000002_000.png\n00009999_000.png\n")  # a name without labels is ignored
    table = SOURCES.build("nih", labels=labels, train_list=train, test_list=test)
    assert table.meta["split"].tolist() == ["train", "train", "test", "train"]
    only_test = SOURCES.build("nih", labels=labels, test_list=test)
    assert only_test.meta["split"].tolist() == ["train", "train", "test", "train"]


def test_image_in_both_lists_or_neither(tmp_path):
    labels = write_nih(tmp_path / "d.csv")
    train = tmp_path / "train.txt"
    test = tmp_path / "test.txt"
    train.write_text("00000001_000.png\n00000001_001.png\n00000003_000.png\n")
    test.write_text("00000002_000.png\n00000003_000.png\n")
    with pytest.raises(InputError) as info:
        SOURCES.build("nih", labels=labels, train_list=train, test_list=test)
    message = str(info.value)
    assert "both" in message and "line 5" in message and str(labels) in message
    test.write_text("00000003_000.png\n")
    train.write_text("00000001_000.png\n00000001_001.png\n")
    with pytest.raises(InputError, match=r"d\.csv, line 4: images are in neither"):
        SOURCES.build("nih", labels=labels, train_list=train, test_list=test)


def test_unknown_finding_names_file_line_and_name(tmp_path):
    rows = ROWS[:2] + [("00000002_000.png", "Cardiomegaly|Pneumonitis", 0, 2, 81, "F", "AP")]
    path = write_nih(tmp_path / "d.csv", rows=rows)
    with pytest.raises(InputError) as info:
        SOURCES.build("nih", labels=path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 4:")
    assert "'Pneumonitis'" in message
    assert info.value.line == 4


def test_no_finding_combined_with_a_finding_is_an_error(tmp_path):
    rows = ROWS[:1] + [("00000002_000.png", "No Finding|Mass", 0, 2, 81, "F", "AP")]
    with pytest.raises(InputError, match="line 3.*'No Finding' together with findings"):
        SOURCES.build("nih", labels=write_nih(tmp_path / "d.csv", rows=rows))


def test_missing_or_renamed_column(tmp_path):
    path = write_nih(tmp_path / "d.csv", header=HEADER_2020.replace("Finding Labels", "Finding Label"))
    with pytest.raises(InputError) as info:
        SOURCES.build("nih", labels=path)
    message = str(info.value)
    assert f"{path}, line 1:" in message
    assert "'Finding Labels'" in message and "'Finding Label'" in message  # expected and found


def test_duplicate_image_ids_list_their_lines(tmp_path):
    path = write_nih(tmp_path / "d.csv", rows=ROWS + [ROWS[1]])
    with pytest.raises(InputError) as info:
        SOURCES.build("nih", labels=path)
    message = str(info.value)
    assert "unique" in message and "line 3" in message and "line 6" in message
    assert info.value.line == 3


def test_empty_and_header_only_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match=f"{empty}: is empty"):
        SOURCES.build("nih", labels=empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text(HEADER_2020 + "\n")
    with pytest.raises(InputError, match="no data rows"):
        SOURCES.build("nih", labels=header_only)
    with pytest.raises(InputError, match="file not found"):
        SOURCES.build("nih", labels=tmp_path / "absent.csv")


def test_truncated_and_overlong_rows(tmp_path):
    path = write_nih(tmp_path / "d.csv")
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 3)[0]  # cut short, as a broken download would
    lines[4] += ",extra"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        SOURCES.build("nih", labels=path)
    message = str(info.value)
    assert "wrong number of fields (the header has 11)" in message
    assert "line 3 (8 fields)" in message and "line 5 (12 fields)" in message


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path):
    path = write_nih(tmp_path / "d.csv")
    lines = path.read_text().splitlines()
    lines.insert(2, "")
    lines[4] = lines[4].replace("No Finding", "Nothing")
    path.write_text("\r\n".join(lines) + "\r\n")  # Windows line ends too
    with pytest.raises(InputError, match=r"line 5 \(unknown finding 'Nothing'\)"):
        SOURCES.build("nih", labels=path)


def test_bad_age(tmp_path):
    rows = ROWS[:1] + [("00000002_000.png", "Mass", 0, 2, "eighty", "F", "AP")]
    with pytest.raises(InputError, match=r"line 3: column 'Patient Age' must be an age .*; found 'eighty'"):
        SOURCES.build("nih", labels=write_nih(tmp_path / "d.csv", rows=rows))


# ---------------------------------------------------------------- real data
@pytest.mark.real_data
def test_real_totals_match_spec_table(shared_data):
    table = SOURCES.build("nih", labels=shared_data / "nih" / "Data_Entry_2017_v2020.csv.gz", no_finding=True)
    assert len(table) == 112_120
    totals = dict(zip(table.classes, table.labels.sum(axis=0).astype(int).tolist()))
    assert totals == SPEC_TOTALS
    assert table.meta["patient_id"].nunique() == 30_805


@pytest.mark.real_data
def test_real_official_lists_are_patient_wise(shared_data):
    nih = shared_data / "nih"
    table = SOURCES.build(
        "nih", labels=nih / "Data_Entry_2017_v2020.csv.gz",
        train_list=nih / "train_val_list.txt", test_list=nih / "test_list.txt",
    )
    assert table.meta["split"].value_counts().to_dict() == {"train": 86_524, "test": 25_596}
    splits_per_patient = table.meta.groupby("patient_id")["split"].nunique()
    assert int((splits_per_patient > 1).sum()) == 0
