"""Smoke test of benchmarks/bench_longtail.py at a toy size: its table is the runs' metrics files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cxrlt.evaluation.predictions import read_predictions

REPO = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_longtail", REPO / "benchmarks" / "bench_longtail.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_mean_sd_and_formatting_by_hand():
    bench = load_bench()
    assert bench.mean_sd([0.5, 0.7, None, 0.9]) == (pytest.approx(0.7), pytest.approx(0.2))  # sd ddof=1
    assert bench.mean_sd([0.25]) == (0.25, None)
    assert bench.mean_sd([None]) == (None, None)
    assert bench.format_mean_sd(0.71234, 0.0104) == "0.712 ± 0.010"
    assert bench.format_interval({"delta": 0.0123, "low": -0.004, "high": 0.0271}, "focal") == "+0.012 [-0.004, +0.027]"
    assert bench.format_interval(None, "bce") == "—"


@pytest.mark.slow
def test_toy_benchmark_table_equals_the_runs_metrics_files(tmp_path, capsys):
    bench = load_bench()
    argv = ["--out", str(tmp_path), "--datasets", "synthetic", "--methods", "bce", "focal", "--seeds", "1",
            "--epochs", "1", "--size", "32", "--synthetic-images", "240", "--resamples", "50",
            "--set", "train.batch_size=32"]
    rows = bench.main(argv)
    printed = capsys.readouterr().out
    assert not list(tmp_path.glob("runs/synthetic/*/seed0/report.*"))  # evaluation.report: false in sweeps
    assert [r["method"] for r in rows] == ["bce", "focal"]
    for row in rows:
        metrics = json.loads((tmp_path / "runs/synthetic" / row["method"] / "seed0/metrics.json").read_text())
        assert row["auc_mean"] == metrics["mean"]["auc"] and row["map_mean"] == metrics["mean"]["ap"]
        for group in ("head", "medium", "tail"):
            assert row[f"{group}_auc_mean"] == metrics["groups"][group]["auc"]
            assert row[f"{group}_map_mean"] == metrics["groups"][group]["ap"]
        assert row["auc_sd"] is None  # one seed: no spread
        cells = [f"{metrics['mean']['auc']:.3f}", f"{metrics['mean']['ap']:.3f}",
                 f"{metrics['groups']['tail']['ap']:.3f}"]
        line = next(x for x in printed.splitlines() if x.startswith(f"| {row['method']} |"))
        assert all(cell in line for cell in cells), line
        # the seed average of one run is that run's predictions file, in the order asked for
        run = tmp_path / "runs/synthetic" / row["method"] / "seed0"
        saved_predictions = read_predictions(run / "predictions.csv")
        reverse = saved_predictions.ids[::-1]
        averaged = bench.seed_averaged_probabilities([run], reverse)
        np.testing.assert_array_equal(averaged, saved_predictions.values[::-1])
    bce, focal = rows
    assert bce["delta_map_vs_bce"] is None
    interval = focal["delta_map_vs_bce"]
    if interval is not None:  # with cxrlt.evaluation.bootstrap: one seed, so the difference of the two mAPs
        assert interval["delta"] == pytest.approx(focal["map_mean"] - bce["map_mean"], abs=1e-9)
        assert interval["low"] <= interval["delta"] <= interval["high"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"][1]["map_mean"] == rows[1]["map_mean"]
    assert (tmp_path / "results.csv").read_text().count("\n") == 3
    # finished runs are skipped: a second call trains nothing and gives the same rows
    again = bench.main(argv)
    assert [r["map"] for r in again] == [r["map"] for r in rows]
    assert [r["seconds"] for r in again] == [r["seconds"] for r in rows]

