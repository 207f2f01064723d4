import numpy as np
import pytest

from cxrlt.errors import InputError
from cxrlt.evaluation.predictions import align, read_label_csv, read_predictions, write_predictions


def write(path, text):
    path.write_text(text)
    return path


def test_round_trip_is_exact_for_float32_and_float64(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"{i:08d}_000.png" for i in range(50)]
    for dtype in (np.float32, np.float64):
        probs = rng.random((50, 3)).astype(dtype)
        probs[0] = [0.0, 1.0, 0.5]
        path = write_predictions(tmp_path / f"p_{dtype.__name__}.csv", ids, ["Mass", "Nodule", "Hernia"], probs)
        read_ids, classes, values = read_predictions(path)
        assert list(read_ids) == ids  # leading zeros kept: ids are text
        assert classes == ("Mass", "Nodule", "Hernia")
        np.testing.assert_array_equal(values.astype(dtype), probs)
    assert path.read_text().splitlines()[:2] == ["image_id,Mass,Nodule,Hernia", "00000000_000.png,0,1,0.5"]


def test_round_trip_quotes_ids_and_names_that_need_it(tmp_path):
    ids = ['a,b.png', 'say "hi".png', "plain.png"]
    path = write_predictions(tmp_path / "p.csv", ids, ["Mass", "odd, name"], np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]))
    read_ids, classes, values = read_predictions(path)
    assert list(read_ids) == ids and classes == ("Mass", "odd, name")
    np.testing.assert_array_equal(values, [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])


def test_write_refuses_bad_probabilities(tmp_path):
    with pytest.raises(ValueError, match="image 'b', class 'y'"):
        write_predictions(tmp_path / "p.csv", ["a", "b"], ["x", "y"], np.array([[0.1, 0.2], [0.3, 1.5]]))
    with pytest.raises(ValueError, match="unique"):
        write_predictions(tmp_path / "p.csv", ["a", "a"], ["x"], np.array([[0.1], [0.2]]))
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize(
    "header,expected",
    [
        ("path,Image Index,Mass", "Image Index"),  # Image Index comes before path
        ("id,dicom_id,Mass", "dicom_id"),
        ("IMAGE_ID,Mass", "IMAGE_ID"),  # case-insensitive
        ("Path,Mass", "Path"),
    ],
)
def test_id_column_detection_order(tmp_path, header, expected):
    row = ["img1" if name == expected else "1" if name == "Mass" else "other" for name in header.split(",")]
    path = write(tmp_path / "l.csv", header + "\n" + ",".join(row) + "\n")
    table = read_label_csv(path, classes=["Mass"])
    assert table.id_column == expected
    assert list(table.ids) == ["img1"] and table.values.tolist() == [[1.0]]


def test_missing_id_column_is_explained(tmp_path):
    path = write(tmp_path / "p.csv", "name,Mass\na,0.5\n")
    with pytest.raises(InputError, match="no id column found.*'name', 'Mass'.*--id-column"):
        read_predictions(path)
    assert read_predictions(path, id_column="name").classes == ("Mass",)
    with pytest.raises(InputError, match="the id column 'image' is not in"):
        read_predictions(path, id_column="image")


@pytest.mark.parametrize(
    "row,message",
    [
        ("b,,0.2", r"line 3: the probability of 'Mass' for image 'b' is blank or NaN"),
        ("b,nan,0.2", r"line 3: the probability of 'Mass' for image 'b' is blank or NaN"),
        ("b,0.3,1.2", r"line 3: the probability of 'Nodule' for image 'b' is 1.2"),
        ("b,0.3,-0.1", r"line 3: .*is -0.1"),
        ("b,0.3,high", r"line 3: column 'Nodule' holds 'high' for image 'b'"),
        ("a,0.3,0.1", r"ids must be unique.*'a' on lines 2, 3"),
    ],
)
def test_bad_prediction_rows_are_refused_naming_the_line(tmp_path, row, message):
    path = write(tmp_path / "p.csv", f"image_id,Mass,Nodule\na,0.1,0.2\n{row}\n")
    with pytest.raises(InputError, match=message):
        read_predictions(path)


def test_bad_prediction_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_predictions(tmp_path / "absent.csv")
    with pytest.raises(InputError, match="empty"):
        read_predictions(write(tmp_path / "e.csv", ""))
    with pytest.raises(InputError, match="header but no rows"):
        read_predictions(write(tmp_path / "h.csv", "image_id,Mass\n"))
    with pytest.raises(InputError, match="repeats the column.*'Mass'"):
        read_predictions(write(tmp_path / "d.csv", "image_id,Mass,Mass\na,0.1,0.2\n"))
    with pytest.raises(InputError, match="'Effusion' and 'Pleural Effusion' name the same class"):
        read_predictions(write(tmp_path / "s.csv", "image_id,Effusion,Pleural Effusion\na,0.1,0.2\n"))


def test_label_file_blank_is_missing_and_metadata_is_ignored(tmp_path):
    path = write(
        tmp_path / "l.csv",
        "Image Index,Patient Age,Effusion,Hernia,split\n"
        "a,63,1,,test\n"
        "b,40,0,1,test\n"
        "c,,NA,0,test\n",
    )
    ids, classes, labels = read_label_csv(path, classes=["Hernia", "Pleural Effusion"])
    assert list(ids) == ["a", "b", "c"]
    assert classes == ("Hernia", "Pleural Effusion")  # the spelling asked for
    np.testing.assert_array_equal(labels, [[np.nan, 1], [1, 0], [0, np.nan]])
    # without classes, LabelTable metadata columns (split) are skipped, others are classes
    with pytest.raises(InputError, match="column 'Patient Age'|label of 'Patient Age'"):
        read_label_csv(path)


def test_label_file_refuses_uncertain_and_soft_values(tmp_path):
    path = write(tmp_path / "l.csv", "image_id,Mass,Edema\na,1,0\nb,-1,0\n")
    with pytest.raises(InputError, match=r"line 3: the label of 'Mass' for image 'b' is -1.*uncertainty policy"):
        read_label_csv(path)
    path = write(tmp_path / "l.csv", "image_id,Mass,Edema\na,1,0.5\n")
    with pytest.raises(InputError, match=r"line 2: .*'Edema'.*is 0.5; labels must be 1, 0 or blank"):
        read_label_csv(path)
    with pytest.raises(InputError, match="no column for 1 of the 2 classes \\('Hernia'\\)"):
        read_label_csv(path, classes=["Mass", "Hernia"])


def test_align_reorders_rows_and_classes(tmp_path):
    pred = read_predictions(write(tmp_path / "p.csv", "image_id,Mass,Effusion\na,0.1,0.2\nb,0.3,0.4\nc,0.5,0.6\n"))
    labels = read_label_csv(write(tmp_path / "l.csv", "image_id,Pleural Effusion,Mass\nc,1,0\na,0,1\nb,,1\n"))
    ids, classes, probs, y = align(pred, labels)
    assert list(ids) == ["a", "b", "c"] and classes == ("Mass", "Effusion")
    np.testing.assert_array_equal(probs, [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
    np.testing.assert_array_equal(y, [[1, 0], [1, np.nan], [0, 1]])


def test_align_refuses_mismatched_ids_naming_both_files(tmp_path):
    pred = read_predictions(write(tmp_path / "p.csv", "image_id,Mass\na,0.1\nb,0.3\nx,0.5\n"))
    labels = read_label_csv(write(tmp_path / "l.csv", "image_id,Mass\na,1\nb,0\ny,1\nz,0\n"))
    with pytest.raises(InputError) as info:
        align(pred, labels)
    message = str(info.value)
    assert str(tmp_path / "p.csv") in message and str(tmp_path / "l.csv") in message
    assert "1 of the 3 predicted ids have no labels (e.g. 'x')" in message
    assert "2 of the 4 labelled ids have no prediction (e.g. 'y', 'z')" in message


def test_align_hints_at_ids_differing_by_extension(tmp_path):
    pred = read_predictions(write(tmp_path / "p.csv", "image_id,Mass\na.png,0.1\nb.png,0.3\n"))
    labels = read_label_csv(write(tmp_path / "l.csv", "image_id,Mass\na,1\nb,0\n"))
    with pytest.raises(InputError, match="differ only by folder or file extension"):
        align(pred, labels)


def test_align_refuses_mismatched_classes(tmp_path):
    pred = read_predictions(write(tmp_path / "p.csv", "image_id,Mass,Nodule\na,0.1,0.2\n"))
    labels = read_label_csv(write(tmp_path / "l.csv", "image_id,Mass,Hernia\na,1,0\n"))
    with pytest.raises(InputError, match=r"not cover the same classes: 1 predicted class\(es\) have no label column \('Nodule'\); "
                                         r"1 labelled class\(es\) have no prediction column \('Hernia'\)"):
        align(pred, labels)
