"""The model card README.md written at the end of a run and with every export."""

from __future__ import annotations

import json

import pytest
import yaml
from tiny_runs import tiny

from cxrlt.cli import main
from cxrlt.inference.model_readme import SEED_PAPERS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    config = tiny(root / "data", sampler={"name": "sqrt"})
    config["loss"] = {"name": "focal"}
    config["evaluation"]["bootstrap"] = 20
    (root / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(root / "run.yaml"), "--out", str(root / "run"), "--no-progress"]) == 0
    return root / "run"


def test_the_run_readme_has_hub_metadata_and_every_section(finished_run):
    text = (finished_run / "README.md").read_text()
    front, body = text.split("---\n")[1], text.split("---\n", 2)[2]
    metadata = yaml.safe_load(front)
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert metadata["library_name"] == "cxrlt" and "research-only" in metadata["tags"]
    reported = {m["name"]: m["value"] for m in metadata["model-index"][0]["results"][0]["metrics"]}
    assert reported == {"mean AUC": round(metrics["mean"]["auc"], 4), "mAP": round(metrics["mean"]["ap"], 4)}
    assert "**For research only. Not a medical device; not for diagnosis" in body
    assert "- backbone: `resnet10t`" in body and "- loss: `focal`; sampler: `sqrt`" in body
    assert "- sources: synthetic" in body and "method: random" in body.split("- split: ")[1].split("\n")[0]
    auc, (low, high) = metrics["mean"]["auc"], metrics["intervals"]["mean"]["auc"]
    assert f"- mean AUC {auc:.3f} [{low:.3f}, {high:.3f}]" in body
    for name, values in metrics["per_class"].items():
        assert f"| {name} | {values['group']} | {values['positives']} | " in body
    for group in metrics["groups"]:
        assert f"| {group} | {metrics['groups'][group]['classes']} | " in body
    assert f"pooled ECE {metrics['calibration']['pooled_ece']:.3f}" in body
    assert "Thresholds: `max_f1`, tuned on `val`." in body
    assert "cxrlt predict hf-hub:OWNER/NAME" in body and "```yaml\nname: tiny" in body
    # Focal loss and a class-aware sampler are long-tailed tricks: that seed is cited, experts' is not.
    assert SEED_PAPERS["mlt"] in body and SEED_PAPERS["bag_of_tricks"] in body
    assert SEED_PAPERS["aggregate"] not in body


def test_an_export_carries_the_card_with_how_to_run_the_graph(finished_run, tmp_path):
    assert main(["export", str(finished_run), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    text = (tmp_path / "onnx" / "README.md").read_text()
    assert text.startswith((finished_run / "README.md").read_text().split("## How to use it")[0])
    assert "session.run(['probabilities'], {'image': image})" in text
