"""The CXR-LT protocols: label spaces, ranking metric, split sizes, and the submission CSV's column order."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from cxrlt.errors import ConfigError, InputError
from cxrlt.evaluation.metrics import compute_metrics
from cxrlt.evaluation.predictions import ClassTable
from cxrlt.evaluation.protocols import PROTOCOLS, get_protocol, write_submission


def test_label_spaces_and_splits():
    sizes = {name: (len(p.classes), p.groups) for name, p in PROTOCOLS.items()}
    assert sizes == {"cxr-lt-2023": (26, (9, 9)), "cxr-lt-2024-task1": (40, (13, 13)),
                     "cxr-lt-2024-zero-shot": (5, None)}
    assert get_protocol("cxr-lt-2024-zero-shot").classes == ("Bulla", "Cardiomyopathy", "Hilum", "Osteopenia",
                                                             "Scoliosis")
    assert get_protocol("cxr-lt-2023").classes[:3] == ("Atelectasis", "Calcification of the Aorta", "Cardiomegaly")
    with pytest.raises(ConfigError, match="choose one of"):
        get_protocol("cxr-lt-2025")


def test_ranking_is_map_with_mauc_and_mf1_at_half():
    protocol = get_protocol("cxr-lt-2024-zero-shot")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (50, 5))
    p = rng.random((50, 5))
    summary = protocol.summary(compute_metrics(y, p, protocol.classes))
    assert summary["ranking_metric"] == "mAP"
    expected = np.mean([average_precision_score(y[:, j], p[:, j]) for j in range(5)])
    assert summary["ranking"] == pytest.approx(expected)
    assert summary["metrics"]["mAUC"] == pytest.approx(np.mean([roc_auc_score(y[:, j], p[:, j]) for j in range(5)]))
    assert summary["metrics"]["mF1"] == pytest.approx(np.mean([f1_score(y[:, j], p[:, j] >= 0.5) for j in range(5)]))


def test_order_accepts_other_spellings_and_refuses_other_spaces():
    protocol = get_protocol("cxr-lt-2023")
    shuffled = list(reversed(protocol.classes))
    shuffled[shuffled.index("Pleural Effusion")] = "Effusion"
    order = protocol.order(shuffled, "table")
    assert [shuffled[j] for j in order][:3] == ["Atelectasis", "Calcification of the Aorta", "Cardiomegaly"]
    with pytest.raises(InputError, match=r"lacks 1 of its 26 classes \(Tortuous Aorta\); has 1 class\(es\) outside"):
        protocol.order([c for c in protocol.classes if c != "Tortuous Aorta"] + ["Bulla"], "table")


def test_submission_columns_in_official_order(tmp_path):
    protocol = get_protocol("cxr-lt-2024-zero-shot")
    names = ["Scoliosis", "Bulla", "hilum", "Osteopenia", "Cardiomyopathy"]
    values = np.array([[0.5, 0.1, 0.2, 0.3, 0.4], [0.05, 0.9, 0.8, 0.7, 0.6]])
    out = write_submission(tmp_path / "s.csv", ClassTable(np.array(["d1", "d2"], dtype=object), tuple(names), values),
                           protocol)
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["dicom_id", "Bulla", "Cardiomyopathy", "Hilum", "Osteopenia", "Scoliosis"]
    assert list(frame["dicom_id"]) == ["d1", "d2"]
    np.testing.assert_allclose(frame.iloc[0, 1:].to_numpy(float), [0.1, 0.4, 0.2, 0.3, 0.5])


def test_config_names_are_the_evaluation_names():
    from typing import get_args

    from cxrlt.config import EvaluationConfig
    from cxrlt.evaluation.metadata import ATTRIBUTES
    from cxrlt.evaluation.studies import AGGREGATIONS

    fields = EvaluationConfig.model_fields
    assert set(get_args(get_args(fields["protocol"].annotation)[0])) == set(PROTOCOLS)
    assert set(get_args(fields["study_merge"].annotation)) == set(AGGREGATIONS)
    assert set(get_args(get_args(fields["subgroups"].annotation)[0])) == set(ATTRIBUTES)


def test_the_documented_label_spaces_are_the_protocols():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "evaluation.md").read_text()
    for name, protocol in PROTOCOLS.items():
        line = re.search(rf"^- \*\*{re.escape(name)}\*\* \((\d+)\): (.*)$", text, re.M)
        assert line is not None, name
        assert int(line.group(1)) == len(protocol.classes)
        assert tuple(line.group(2).split(" · ")) == protocol.classes
