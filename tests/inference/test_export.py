"""`cxrlt export`: every registered head to ONNX and TorchScript, checked against `cxrlt predict`."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch

from saved_models import CLASSES, HEAD_CASES, LABELS, SIZE, image_files, saved_model

from cxrlt.cli import main
from cxrlt.errors import InputError
from cxrlt.inference.export import export
from cxrlt.layout import ExportFiles, ModelFiles

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("variant", sorted(HEAD_CASES))
def test_every_head_exports_and_matches_cxrlt_predict(tmp_path, variant, capsys):
    model_dir = saved_model(tmp_path / "run", HEAD_CASES[variant])
    images, pixels = image_files(tmp_path / "images")
    assert main(["predict", str(model_dir), str(images), "--out", str(tmp_path / "torch.csv"), "--no-progress"]) == 0
    expected = pd.read_csv(tmp_path / "torch.csv")

    assert main(["export", str(model_dir), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert session.get_outputs()[0].name == "probabilities"
    probs = session.run(["probabilities"], {"image": pixels})[0]
    np.testing.assert_allclose(probs, expected[CLASSES].to_numpy(), atol=1e-4)

    assert main(["export", str(model_dir), "--format", "torchscript", "--out", str(tmp_path / "ts")]) == 0
    scripted = torch.jit.load(str(tmp_path / "ts" / "model.pt"))
    with torch.inference_mode():
        np.testing.assert_allclose(scripted(torch.from_numpy(pixels)).numpy(), expected[CLASSES].to_numpy(), atol=1e-4)

    # `cxrlt predict` on the ONNX file: the same columns and rows, the same numbers.
    assert main(["predict", str(tmp_path / "onnx" / "model.onnx"), str(images), "--out", str(tmp_path / "o.csv"),
                 "--no-progress"]) == 0
    onnx_table = pd.read_csv(tmp_path / "o.csv")
    assert list(onnx_table.columns) == list(expected.columns) == ["image_id", *CLASSES]
    assert list(onnx_table["image_id"]) == list(expected["image_id"])
    np.testing.assert_allclose(onnx_table[CLASSES].to_numpy(), expected[CLASSES].to_numpy(), atol=1e-4)


def test_the_batch_dimension_is_dynamic_and_the_sidecar_holds_the_contract(tmp_path):
    model_dir = saved_model(tmp_path / "run", {"name": "linear"}, thresholds=[0.1, 0.2, 0.3, 0.4, 0.5])
    files = export(model_dir, "onnx", tmp_path / "out")
    session = onnxruntime.InferenceSession(str(files.graph("onnx")), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        batch = np.random.default_rng(n).integers(0, 256, (n, 1, SIZE, SIZE)).astype(np.float32)
        assert session.run(["probabilities"], {"image": batch})[0].shape == (n, len(CLASSES))
    meta = json.loads(files.sidecar.read_text())
    assert meta["input"] == {"name": "image", "dtype": "float32", "shape": ["N", 1, SIZE, SIZE],
                             "values": meta["input"]["values"]}
    assert meta["output"]["name"] == "probabilities" and meta["classes"] == CLASSES
    assert meta["thresholds"] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert meta["train_positives"] == [int(n) for n in LABELS.sum(0)]
    assert meta["groups"] == ["head", "head", "medium", "tail", "tail"]
    assert meta["normalisation"]["mean"] == pytest.approx(0.449) and meta["preprocessing"]["stored_size"] == SIZE
    # The export is itself a saved model with its card and README.
    assert ModelFiles(files.folder).exist() and files.readme.is_file()


def test_an_unfinished_run_an_unknown_format_and_no_model_are_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    with pytest.raises(InputError, match="the run has not finished.*cxrlt train --resume"):
        export(run, "onnx", tmp_path / "out")
    with pytest.raises(InputError, match="no saved model here"):
        export(tmp_path, "onnx", tmp_path / "out")
    model_dir = saved_model(tmp_path / "model", {"name": "linear"})
    assert main(["export", str(model_dir), "--format", "tensorrt", "--out", str(tmp_path / "out")]) == 2
    assert "unknown export format 'tensorrt'; expected one of: onnx, torchscript" in capsys.readouterr().err


def test_a_head_that_tracing_would_freeze_is_refused_with_the_reason(tmp_path, monkeypatch):
    """A head that branches in Python on its input's size does not trace: the trace keeps one branch."""
    from cxrlt.models.heads.linear import LinearHead

    original = LinearHead.forward

    def data_dependent(self, features):
        logits = original(self, features)
        return logits if features.shape[0] == 2 else logits + 1.0

    model_dir = saved_model(tmp_path / "run", {"name": "linear"})
    monkeypatch.setattr(LinearHead, "forward", data_dependent)
    for fmt in ("onnx", "torchscript"):
        with pytest.raises(InputError, match=r"head 'linear' \(LinearHead\) cannot be exported to " + fmt +
                           ".*tracing froze"):
            export(model_dir, fmt, tmp_path / fmt)
        assert not ExportFiles(tmp_path / fmt).graph(fmt).exists()
