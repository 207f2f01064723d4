"""A run's end-of-training evaluation and `cxrlt evaluate RUN_DIR` report subgroups through the scoring core."""

import json

import pytest
import yaml

from cli_contract import run_cxrlt
from tiny_runs import tiny

pytestmark = pytest.mark.slow  # one tiny training run shared by the module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from cxrlt.config import RunConfig
    from cxrlt.runs.train import train

    root = tmp_path_factory.mktemp("subgroup-run")
    config = tiny(root / "data", epochs=1)
    config["evaluation"].update(subgroups=["view", "source"], min_subgroup=5, protocol=None)
    out = root / "run"
    train(RunConfig.model_validate(config), out, progress=False)
    return out


def test_training_writes_subgroups_at_the_tuned_thresholds(run_dir):
    report = json.loads((run_dir / "metrics.json").read_text())
    assert set(report["subgroups"]) == {"view", "source"}
    assert set(report["subgroups"]["view"]) <= {"AP", "PA"}
    assert sum(g["n_images"] for g in report["subgroups"]["view"].values()) == report["n_images"]
    assert report["subgroups"]["source"]["synthetic"]["auc"] == pytest.approx(report["mean"]["auc"])
    assert report["subgroup_summary"]["settings"]["thresholds"] == "tuned"


def test_evaluate_run_dir_with_subgroups_and_refused_study_scoring(run_dir, tmp_path):
    outcome = run_cxrlt(["evaluate", run_dir, "--subgroups", "view", "--no-progress", "--plots", tmp_path / "plots"])
    assert outcome.code == 0, outcome.err
    assert "subgroups by view" in outcome.out
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "per_class.png", "pr.png", "reliability.png", "roc.png", "subgroups.png"]
    assert list(json.loads((run_dir / "metrics.json").read_text())["subgroups"]) == ["view"]
    # The run's config asks for view subgroups, which a study (frontal and lateral together) cannot have.
    refused = run_cxrlt(["evaluate", run_dir, "--aggregate", "study", "--no-progress"])
    assert refused.code == 2 and "view subgroups cannot be scored per study" in refused.err, refused.err
    refused = run_cxrlt(["evaluate", run_dir, "--aggregate", "study", "--subgroups", "source", "--no-progress"])
    assert refused.code == 2 and "test split has a study id" in refused.err, refused.err
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["evaluation"]["subgroups"] == ["view", "source"]


def test_html_report_has_a_subgroup_section_with_its_plot(run_dir):
    from cxrlt.evaluation.html import render_html_report

    page = render_html_report(run_dir)
    section = page[page.index('<section id="subgroups">'):]
    section = section[:section.index("</section>")]
    assert "data:image/png;base64," in section and "<td>view</td>" in section
