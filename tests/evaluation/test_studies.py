"""Study aggregation against a hand computation; labels are the union; missing study ids are counted."""

import numpy as np
import pandas as pd
import pytest

from cxrlt.errors import ConfigError, InputError
from cxrlt.evaluation.studies import aggregate_studies, read_study_ids

STUDIES = ["s1", "s1", "s2", None, "s2", "s3"]
PROBS = np.array([[0.2, 0.9], [0.6, 0.1], [0.5, 0.5], [0.99, 0.99], [0.1, 0.3], [0.7, 0.4]])
LABELS = np.array([[0, 1], [1, np.nan], [0, np.nan], [1, 1], [0, np.nan], [np.nan, np.nan]])


def _logit(p):
    return np.log(p / (1 - p))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("method,expected", [
    ("max", [[0.6, 0.9], [0.5, 0.5], [0.7, 0.4]]),
    ("mean", [[0.4, 0.5], [0.3, 0.4], [0.7, 0.4]]),
    ("logit_mean", [[_sigmoid((_logit(0.2) + _logit(0.6)) / 2), _sigmoid((_logit(0.9) + _logit(0.1)) / 2)],
                    [_sigmoid((_logit(0.5) + _logit(0.1)) / 2), _sigmoid((_logit(0.5) + _logit(0.3)) / 2)],
                    [0.7, 0.4]]),
])
def test_merged_probabilities_by_hand(method, expected):
    studies = aggregate_studies(STUDIES, PROBS, LABELS, method, patients=["p1", "p1", "p2", "p3", "p2", "p4"])
    assert list(studies.ids) == ["s1", "s2", "s3"]
    np.testing.assert_allclose(studies.probs, expected, atol=1e-6)
    assert list(studies.patients) == ["p1", "p2", "p4"]
    assert studies.summary() == {"unit": "study", "method": method, "n_images": 6, "n_studies": 3,
                                 "excluded_images": 1, "labels": "union of the study's image labels"}


def test_study_labels_are_the_union():
    studies = aggregate_studies(STUDIES, PROBS, LABELS)
    # s1: A 0|1 -> 1, B 1|missing -> 1; s2: A 0|0 -> 0, B missing -> missing; s3 all missing
    np.testing.assert_array_equal(studies.labels, [[1, 1], [0, np.nan], [np.nan, np.nan]])


def test_logit_mean_keeps_hard_zeros_and_ones_finite():
    studies = aggregate_studies(["s", "s"], np.array([[0.0], [1.0]]), method="logit_mean")
    assert studies.probs[0, 0] == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="unknown study aggregation"):
        aggregate_studies(["s"], np.array([[0.1]]), method="median")


def test_study_ids_from_a_table(tmp_path):
    path = tmp_path / "meta.csv"
    pd.DataFrame({"dicom_id": ["a", "b", "c"], "StudyInstanceUID": ["1.2", "", "1.3"]}).to_csv(path, index=False)
    assert list(read_study_ids(path, ["c", "a", "b"])) == ["1.3", "1.2", None]
    with pytest.raises(InputError, match="no study id column"):
        read_study_ids(path, ["a"], column="study")
    with pytest.raises(InputError, match="have no row in the study table"):
        read_study_ids(path, ["a", "q"])
