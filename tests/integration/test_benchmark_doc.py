"""docs/benchmark.md publishes what its recorded sweeps wrote.

Each folder of docs/benchmark/ keeps a finished sweep's `results.csv` (one
row per run, the runs' own metrics) and `summary.json`. The tables in the
page must be `format_summary` of that summary, word for word, and the
summary's mean ± sd must be those of the per-run rows; the NIH sweep's
evaluated positives must be the official test images' labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cxrlt.evaluation.sweep import format_summary, mean_sd

REPO = Path(__file__).resolve().parents[2]
PAGE = (REPO / "docs" / "benchmark.md").read_text()
RECORDS = sorted(p for p in (REPO / "docs" / "benchmark").iterdir() if p.is_dir())


def test_every_recorded_sweep_is_published():
    assert {p.name for p in RECORDS} == {"nih", "synthetic-baselines"}


@pytest.mark.parametrize("record", RECORDS, ids=[p.name for p in RECORDS])
def test_the_page_shows_the_recorded_summary_word_for_word(record: Path):
    summary = json.loads((record / "summary.json").read_text())
    body = format_summary(summary).split("\n", 2)[2]  # without its "# title" line
    assert body.strip() in PAGE
    assert f"docs/benchmark/{record.name}/" in PAGE  # the page says where the record is


@pytest.mark.parametrize("record", RECORDS, ids=[p.name for p in RECORDS])
def test_mean_and_sd_are_those_of_the_runs(record: Path):
    summary = json.loads((record / "summary.json").read_text())
    results = pd.read_csv(record / "results.csv")
    for name, entry in summary["variants"].items():
        rows = results[(results["variant"] == name) & (results["status"] == "finished")].sort_values("seed")
        assert rows["seed"].tolist() == sorted(entry["finished"])
        assert len(rows) == 3, f"{name}: every published variant has its three seeds"
        for key, stats in entry["scores"].items():
            expected = mean_sd(rows[key].tolist())
            assert stats["n"] == expected["n"]
            assert stats["mean"] == pytest.approx(expected["mean"], rel=1e-9, abs=1e-12), (name, key)
            assert stats["sd"] == pytest.approx(expected["sd"], rel=1e-9, abs=1e-12), (name, key)
        for key in ("seconds", "cpu_seconds"):
            assert entry[key]["mean"] == pytest.approx(rows[key].mean(), rel=1e-9)


def test_nih_positives_are_the_labels_of_the_official_test_images(shared_data: Path):
    summary = json.loads((REPO / "docs" / "benchmark" / "nih" / "summary.json").read_text())
    nih = shared_data / "nih"
    present = {p.name for p in (nih / "images128").glob("*.png")}
    test = present & set((nih / "test_list.txt").read_text().split())
    table = pd.read_csv(nih / "Data_Entry_2017_v2020.csv.gz")
    findings = table.loc[table["Image Index"].isin(test), "Finding Labels"].str.split("|")
    counts = {name: int(findings.apply(lambda f: name in f).sum()) for name in summary["positives"]["per_class"]}
    assert len(test) == summary["n_images"]
    assert {name: e["positives"] for name, e in summary["positives"]["per_class"].items()} == counts
    assert min(counts.values()) == 6 and counts["Infiltration"] == 400  # the page's "Hernia 6", head up to 400
    hernia = table[table["Image Index"].isin(test) & table["Finding Labels"].str.contains("Hernia")]
    assert sorted(hernia.groupby("Patient ID").size()) == [1, 5]  # "2 patients (one image and five)"
    assert "6 test positives\n  belong to 2 patients (one image and five)" in PAGE
