"""docs/benchmark.md publishes what its recorded sweeps wrote.

Each folder of docs/benchmark/ keeps a finished sweep's `results.csv` (one
row per run, the runs' own metrics) and `summary.json`. The tables in the
page must be `format_summary` of that summary, word for word, and the
summary's mean ± sd must be those of the per-run rows; the NIH sweeps'
evaluated positives must be the labels of the official test images (nih)
and of all 10,000 images (nih-oof, scored out of fold).
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
    assert {p.name for p in RECORDS} == {"nih", "nih-oof", "synthetic-baselines"}


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
        for key in ("seconds", "cpu_seconds"):  # runs the sweep did not start itself have no recorded time
            recorded = rows[key].dropna()
            assert entry[key]["n"] == len(recorded)
            if len(recorded):
                assert entry[key]["mean"] == pytest.approx(recorded.mean(), rel=1e-9)


def _evaluated(shared_data: Path, record: str, images: set[str] | None = None) -> tuple[dict, pd.DataFrame]:
    """A recorded NIH sweep's summary, after checking its positives are the labels of `images` (default: all
    10,000 images present), and the official label rows of those images."""
    summary = json.loads((REPO / "docs" / "benchmark" / record / "summary.json").read_text())
    nih = shared_data / "nih"
    present = {p.name for p in (nih / "images128").glob("*.png")}
    images = present if images is None else images & present
    table = pd.read_csv(nih / "Data_Entry_2017_v2020.csv.gz")
    table = table[table["Image Index"].isin(images)]
    findings = table["Finding Labels"].str.split("|")
    counts = {name: int(findings.apply(lambda f: name in f).sum()) for name in summary["positives"]["per_class"]}
    assert len(images) == summary["n_images"]
    assert {name: e["positives"] for name, e in summary["positives"]["per_class"].items()} == counts
    return summary, table


def _hernia_patients(table: pd.DataFrame) -> list[int]:
    """Images per patient with Hernia, fewest first."""
    return sorted(table[table["Finding Labels"].str.contains("Hernia")].groupby("Patient ID").size())


def test_nih_positives_are_the_labels_of_the_official_test_images(shared_data: Path):
    test = set((shared_data / "nih" / "test_list.txt").read_text().split())
    summary, table = _evaluated(shared_data, "nih", test)
    counts = {name: e["positives"] for name, e in summary["positives"]["per_class"].items()}
    assert min(counts.values()) == 6 and counts["Infiltration"] == 400  # the page's "Hernia 6", head up to 400
    assert _hernia_patients(table) == [1, 5]  # "2 patients (one image and five)"
    assert "6 test positives\n  belong to 2 patients (one image and five)" in PAGE


def test_nih_out_of_fold_positives_are_the_labels_of_all_10000_images(shared_data: Path):
    summary, table = _evaluated(shared_data, "nih-oof")
    assert summary["n_images"] == 10000 and summary["split"] == "out-of-fold"
    assert summary["positives"]["per_class"]["Hernia"]["positives"] == 19 and len(_hernia_patients(table)) == 14
    official = json.loads((REPO / "docs" / "benchmark" / "nih" / "summary.json").read_text())
    totals = [sum(e["positives"] for e in s["positives"]["per_class"].values()) for s in (summary, official)]
    assert totals == [5946, 1499]
    page = " ".join(PAGE.split())
    assert "19 Hernia positives from 14 patients" in page and "5,946 positives in all, 4 times the official test " \
        "list's 1,499" in page


def test_the_official_test_images_scored_out_of_fold_are_the_pages_numbers():
    """The reading's per-variant means on the official test images and the others, from their record."""
    table = pd.read_csv(REPO / "docs" / "benchmark" / "nih-oof" / "official-test-images.csv")
    assert set(table["official_test_images"]) == {1492} and set(table["other_images"]) == {8508}
    means = table.groupby("variant")[["official_test_mean_auc", "other_mean_auc"]].mean().round(3)
    page = " ".join(PAGE.split())
    assert f"test images at {means.loc['bce', 'official_test_mean_auc']:.3f} (mean over seeds)" in page
    assert (f"(cRT {means.loc['bce+crt', 'official_test_mean_auc']:.3f} against BCE "
            f"{means.loc['bce', 'official_test_mean_auc']:.3f} mean AUC") in page
    assert (f"cRT scores {means.loc['bce+crt', 'other_mean_auc']:.3f} against "
            f"{means.loc['bce', 'other_mean_auc']:.3f}") in page
