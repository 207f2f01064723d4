"""`cxrlt sweep`: variants and seeds, shared first stages, the summary by hand, stop and resume end to end."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from cxrlt.cli import main
from cxrlt.errors import ConfigError
from cxrlt.evaluation.bootstrap import paired_bootstrap
from cxrlt.evaluation.metrics import tune_thresholds
from cxrlt.evaluation.predictions import write_labels, write_predictions
from cxrlt.evaluation.sweep import RunOutcome, format_summary, results_table, summarise
from cxrlt.io import write_json
from cxrlt.layout import RunFiles, SweepFiles
from cxrlt.runs.folder import RunFolder, SweepFolder
from cxrlt.runs.sweep import (Sweep, SweepSpec, Variant, cpu_threads, grid_variants, named_variant, parse_seeds,
                              plan_runs, split_values, visible_gpus)

REPO = Path(__file__).resolve().parents[2]
CRT = "stages=[{name: main}, {name: crt, freeze_backbone: true, epochs: 1}]"


def tiny_base(data_dir: Path, epochs: int = 1) -> dict:
    """A run of a few seconds: 400 synthetic films at 32 px, a few batches per epoch."""
    return {
        "name": "tiny",
        "data": {"sources": [{"name": "synthetic", "out": str(data_dir), "n_images": 400, "image_size": 32,
                              "seed": 3}],
                 "split": {"method": "random", "val_fraction": 0.25, "test_fraction": 0.3, "seed": 0},
                 "images": {"size": 32}},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": epochs, "batch_size": 32, "num_workers": 0, "monitor": "auc", "limit_train_batches": 4,
                  "optimizer": {"name": "adamw", "lr": 0.003}},
        "evaluation": {"bootstrap": 0, "report": False},
    }


# ------------------------------------------------------------------- variants
def test_values_split_at_top_level_commas_only():
    assert split_values("bce,focal") == ["bce", "focal"]
    assert split_values("[1, 2],{a: 1, b: 2},'x,y', 3") == ["[1, 2]", "{a: 1, b: 2}", "'x,y'", "3"]


def test_grids_make_every_combination_and_variants_carry_their_overrides():
    grid = grid_variants(["loss.name=bce,focal", "train.epochs=2,4"])
    assert grid == [Variant("bce-2", ("loss.name=bce", "train.epochs=2")),
                    Variant("bce-4", ("loss.name=bce", "train.epochs=4")),
                    Variant("focal-2", ("loss.name=focal", "train.epochs=2")),
                    Variant("focal-4", ("loss.name=focal", "train.epochs=4"))]
    assert named_variant(f"cal+crt:loss.name=class_aware,{CRT}") == Variant("cal+crt", ("loss.name=class_aware", CRT))
    assert named_variant("bce:") == named_variant("bce") == Variant("bce", ())
    assert parse_seeds("0, 1,2") == (0, 1, 2)


@pytest.mark.parametrize("make, match", [
    (lambda: named_variant("a:train.seed=3"), "set per run from --seeds"),
    (lambda: named_variant("a/b:loss.name=focal"), "not a plain folder name"),
    (lambda: grid_variants(["model.pretrained=/w/a.pt,/w/b.pt"]), "name it with --variant"),
    (lambda: named_variant("a:loss.name"), "is not KEY=VALUE"),
    (lambda: parse_seeds("0,0"), "repeated"),
    (lambda: SweepSpec.build([Variant("a", ()), Variant("a", ("loss.name=focal",))], (0,), None), "more than once"),
    (lambda: SweepSpec.build([Variant("a", ())], (0,), "b"), "--baseline 'b' is not one of the variants"),
])
def test_bad_variants_are_refused_with_what_to_do(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_a_sweep_may_gain_variants_and_seeds_but_not_change_one(tmp_path):
    saved = SweepSpec.build([Variant("bce", ())], (0,), None)
    grown = saved.extend(SweepSpec.build([Variant("focal", ("loss.name=focal",)), Variant("bce", ())], (0, 1), "bce"),
                         tmp_path)
    assert [v.name for v in grown.variants] == ["bce", "focal"] and grown.seeds == (0, 1)
    with pytest.raises(ConfigError, match="already runs variant bce as \\(the base\\), not loss.name=asl"):
        saved.extend(SweepSpec.build([Variant("bce", ("loss.name=asl",))], (0,), None), tmp_path)


def test_runs_share_a_first_stage_only_when_it_trains_identically(tmp_path):
    variants = [named_variant(text) for text in
                ("bce:", "focal:loss.name=focal", f"bce+crt:{CRT}", f"focal+crt:loss.name=focal,{CRT}",
                 "bce-b:evaluation.threshold=sensitivity", f"bce+crt3:stages=[{{name: main, epochs: 3}}, "
                 "{name: crt, freeze_backbone: true}]", "bce+tau:stages=[{name: main, tau_normalise: true}]")]
    runs = plan_runs(tiny_base(tmp_path / "data"), SweepSpec.build(variants, (0, 1), None), SweepFolder(tmp_path))
    donors = {run.key: run.donor.key if run.donor else None for run in runs}
    assert donors == {
        "bce/seed0": None, "focal/seed0": None, "bce+crt/seed0": "bce/seed0", "focal+crt/seed0": "focal/seed0",
        "bce-b/seed0": "bce/seed0",  # evaluation settings do not change training
        "bce+crt3/seed0": None,  # its first stage trains for 3 epochs, not 1
        "bce+tau/seed0": "bce/seed0",  # tau-normalisation is tuned after training
        "bce/seed1": None, "focal/seed1": None, "bce+crt/seed1": "bce/seed1", "focal+crt/seed1": "focal/seed1",
        "bce-b/seed1": "bce/seed1", "bce+crt3/seed1": None, "bce+tau/seed1": "bce/seed1"}
    first = runs[0]
    assert first.files.path == tmp_path / "runs" / "bce" / "seed0"
    assert first.overrides == ("train.seed=0", "name=tiny-bce-seed0")
    assert (runs[8].config.train.seed, runs[8].config.loss.name, runs[8].config.data.split.seed) == (1, "focal", 0)


# -------------------------------------------------------------------- summary
CLASSES = ("Atelectasis", "Effusion", "Hernia")
GROUPS = ("head", "medium", "tail")


def fake_run(files: RunFiles, rng: np.random.Generator, ids: list[str], labels: np.ndarray, val_ids: list[str],
             val_labels: np.ndarray, scores: dict[str, float]) -> None:
    """A finished run's headline and validation files, with `scores` as its metrics.json means."""
    write_predictions(files.headline_predictions, ids, CLASSES, rng.random(labels.shape))
    write_labels(files.headline_labels, ids, CLASSES, labels)
    write_predictions(files.predictions("val", "test"), val_ids, CLASSES, rng.random(val_labels.shape))
    write_labels(files.labels("val", "test"), val_ids, CLASSES, val_labels)
    means = {name: {"auc": value, "ap": value / 2, "f1": value / 4, "f1_tuned": value / 3}
             for name, value in scores.items()}
    write_json(files.headline_metrics, {
        "split": "test", "n_images": len(ids),
        "per_class": {c: {"positives": int(labels[:, j].sum()), "group": g}
                      for j, (c, g) in enumerate(zip(CLASSES, GROUPS))},
        "mean": means["mean"], "groups": {g: means[g] for g in GROUPS},
        "thresholds": {"method": "max_f1"}})


def test_summary_numbers_equal_a_hand_computation(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"img{i:03d}" for i in range(60)]
    labels = (rng.random((60, 3)) < [0.5, 0.3, 0.15]).astype(float)
    val_ids = [f"val{i:03d}" for i in range(40)]
    val_labels = (rng.random((40, 3)) < [0.5, 0.3, 0.2]).astype(float)
    patients = {i: f"p{k // 3}" for k, i in enumerate(ids)}  # three images per patient
    sweep = SweepFiles(tmp_path)
    given = {("bce", 0): 0.70, ("bce", 1): 0.74, ("focal", 0): 0.80, ("focal", 1): 0.81}
    outcomes = []
    for (variant, seed), auc in given.items():
        files = sweep.run(variant, seed)
        # the rows of seed 1 in another order: the average must match images by id
        order = list(range(60)) if seed == 0 else list(range(59, -1, -1))
        fake_run(files, rng, [ids[i] for i in order], labels[order], val_ids, val_labels,
                 {"mean": auc, "head": auc + 0.1, "medium": auc, "tail": auc - 0.2})
        outcomes.append(RunOutcome(variant, seed, "finished", files.results, seconds=10.0 * (seed + 1),
                                   cpu_seconds=4.0 + seed))
    outcomes.append(RunOutcome("focal", 2, "failed", sweep.run("focal", 2).results, 3.0,
                               "exit code 2: no such backbone"))

    summary = summarise(outcomes, ["bce", "focal"], "bce", patients, resamples=200)

    focal = summary["variants"]["focal"]
    assert focal["finished"] == [0, 1] and focal["not_finished"] == {
        "2": {"status": "failed", "error": "exit code 2: no such backbone"}}
    assert focal["scores"]["mean_auc"]["mean"] == pytest.approx(0.805)
    assert focal["scores"]["mean_auc"]["sd"] == pytest.approx(np.std([0.80, 0.81], ddof=1))
    assert focal["scores"]["tail_ap"]["mean"] == pytest.approx((0.60 + 0.61) / 2 / 2)
    assert summary["variants"]["bce"]["scores"]["head_f1_tuned"]["values"] == pytest.approx([0.80 / 3, 0.84 / 3])
    assert summary["variants"]["bce"]["seconds"]["mean"] == pytest.approx(15.0)
    assert summary["variants"]["bce"]["cpu_seconds"]["mean"] == pytest.approx(4.5)
    text = format_summary(summary)
    assert "| bce | 2 | 0.720 ± 0.028 | " in text and text.count(f" | {15 / 60:.1f} | {4.5 / 60:.1f} |") == 2
    # the failed run's 3 s are not a finished run's
    assert f"The 4 finished runs took {60 / 3600:.2f} h of wall time and {18 / 3600:.2f} h of CPU time" in text
    assert summary["positives"]["groups"]["tail"] == {"classes": ["Hernia"], "min": int(labels[:, 2].sum()),
                                                     "max": int(labels[:, 2].sum()), "total": int(labels[:, 2].sum())}

    def averaged(variant: str, split: str) -> np.ndarray:
        """Seed-averaged probabilities by hand, rows in the order of `ids` (or `val_ids`)."""
        wanted = ids if split == "test" else val_ids
        total = 0
        for seed in (0, 1):
            with open(sweep.run(variant, seed).predictions(split, "test")) as handle:
                rows = {row["image_id"]: [float(row[c]) for c in CLASSES] for row in csv.DictReader(handle)}
            total = total + np.array([rows[i] for i in wanted])
        return total / 2

    a, b = averaged("focal", "test"), averaged("bce", "test")
    entry = focal["vs_baseline"]
    auc = [roc_auc_score(labels[:, j], a[:, j]) - roc_auc_score(labels[:, j], b[:, j]) for j in range(3)]
    ap = [average_precision_score(labels[:, j], a[:, j]) - average_precision_score(labels[:, j], b[:, j])
          for j in range(3)]
    assert entry["mean"]["auc"]["difference"] == pytest.approx(np.mean(auc))
    assert entry["mean"]["ap"]["difference"] == pytest.approx(np.mean(ap))
    assert entry["tail"]["auc"]["difference"] == pytest.approx(auc[2])
    th_a, th_b = (tune_thresholds(val_labels, averaged(v, "val")) for v in ("focal", "bce"))
    f1 = [f1_score(labels[:, j], a[:, j] >= th_a[j]) - f1_score(labels[:, j], b[:, j] >= th_b[j]) for j in range(3)]
    assert entry["mean"]["f1_tuned"]["difference"] == pytest.approx(np.mean(f1))
    # the interval: the paired patient bootstrap of the hand-averaged tables
    reference = paired_bootstrap(labels, a, b, CLASSES, resamples=200, patients=[patients[i] for i in ids], seed=0,
                                 thresholds=(th_a, th_b)).to_dict(list(GROUPS))
    assert entry["mean"]["auc"]["interval"] == pytest.approx(reference["mean"]["auc"]["interval"])
    assert entry["head"]["ap"]["interval"] == pytest.approx(reference["groups"]["head"]["ap"]["interval"])
    assert summary["variants"]["bce"]["vs_baseline"] is None and summary["interval"]["unit"] == "patient"

    table = results_table(outcomes)
    assert list(table["status"]) == ["finished"] * 4 + ["failed"]
    assert table.loc[2, "mean_auc"] == 0.80 and table.loc[2, "tail_ap"] == pytest.approx(0.30)
    assert table.columns[-1] == "error" and table.loc[4, "error"] == "exit code 2: no such backbone"


# ---------------------------------------------------------------- devices
# Stands in for `cxrlt`: notes the device and threads it was given and when it ran, then exits without a run.
PROBE = ("import os, sys, time; start = time.time(); time.sleep(0.6); "
         "print('probe', os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ['OMP_NUM_THREADS'], start, time.time(), "
         "sys.argv[-2])")


def test_jobs_pin_each_run_to_its_own_gpu_and_an_even_share_of_threads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    base = tmp_path / "base.yaml"
    data = tiny_base(tmp_path / "data")
    data["data"]["sources"][0]["n_images"] = 60
    base.write_text(yaml.safe_dump(data))
    spec = SweepSpec.build([Variant("a", ()), Variant("b", ("loss.name=focal",))], (0, 1), None)
    sweep = Sweep.open(tmp_path / "sw", base, spec)
    sweep.save()
    sweep.train(jobs=2, progress=False, executable=[sys.executable, "-c", PROBE])
    assert "2 at a time on GPUs 3,5, 2 CPU thread(s) each" in capsys.readouterr().out

    seen = []
    for run in sweep.runs:
        probe = next(line for line in sweep.folder.log(run.variant, run.seed).read_text().splitlines()
                     if line.startswith("probe"))
        _, gpu, threads, start, end, out = probe.split()
        assert threads == "2" and out == str(run.files.path)  # 4 threads over 2 jobs; the run's own folder
        seen.append((gpu, float(start), float(end)))
        # the probe wrote no run: recorded as failed, with the probe's last line as the error
        assert sweep.records[run.key]["status"] == "failed" and "probe" in sweep.records[run.key]["error"]
    assert {gpu for gpu, _, _ in seen} == {"3", "5"}
    overlapping = [(x, y) for i, x in enumerate(seen) for y in seen[i + 1:] if x[1] < y[2] and y[1] < x[2]]
    assert overlapping and all(x[0] != y[0] for x, y in overlapping)  # runs at once never share a GPU


def test_a_run_waits_for_a_shared_first_stage_another_process_is_training(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    data = tiny_base(tmp_path / "data")
    data["data"]["sources"][0]["n_images"] = 60
    base.write_text(yaml.safe_dump(data))
    spec = SweepSpec.build([Variant("bce", ()), Variant("bce+crt", (CRT,)), Variant("focal", ("loss.name=focal",))],
                           (0,), None)
    sweep = Sweep.open(tmp_path / "sw", base, spec)
    sweep.save()
    bce = RunFolder(sweep.runs[0].files.path)
    with bce.claim().lock("train"):  # a scheduler's `cxrlt train` of bce, started from --print-commands
        sweep.train(progress=False, executable=[sys.executable, "-c", PROBE])
    assert ("in use by another process, or waiting for the first stage of one that is (skipped; run the sweep again "
            "when it has finished): bce/seed0, bce+crt/seed0") in capsys.readouterr().out
    assert list(sweep.records) == ["focal/seed0"]  # only focal was started (by the probe)
    assert not (sweep.runs[1].files.path / "stages").exists()


@pytest.mark.parametrize("given, jobs, threads", [("4", 2, 2), ("4", 3, 1), ("4", 8, 1), ("16", 3, 5)])
def test_cpu_threads_are_split_evenly_over_the_jobs(monkeypatch, given, jobs, threads):
    monkeypatch.setenv("OMP_NUM_THREADS", given)
    assert cpu_threads(jobs) == threads


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", " 2, 7 ,")
    assert visible_gpus() == ["2", "7"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


# ------------------------------------------------------------- end to end
def sweep_command(base: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cxrlt", "sweep", str(base), "--variant", "bce:", "--variant",
            "focal:loss.name=focal", "--variant", "broken:model.backbone=no_such_backbone", "--seeds", "0,1",
            "--out", str(out), "--resamples", "50", "--no-progress", *extra]


def read_results(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_stopped_and_resumed_sweep_gives_the_results_of_an_uninterrupted_one(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny_base(tmp_path / "data", epochs=3)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"

    reference = subprocess.run(sweep_command(base, whole, "--jobs", "2"), env=env, cwd=tmp_path,
                               capture_output=True, text=True)
    assert reference.returncode == 1, reference.stderr  # the broken variant failed, the rest went on

    # Ctrl-C while the second run (focal, seed 0) is in its second epoch
    process = subprocess.Popen(sweep_command(base, stopped), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    last = stopped / "runs/focal/seed0/stages/01-main/checkpoints/last.ckpt"
    deadline = time.monotonic() + 600
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert f"cxrlt sweep: interrupted: sweep stopped with 1 of 6 runs finished; focal/seed0 stopped" in stderr
    assert f"Continue with `cxrlt sweep --resume {stopped}`" in stderr
    record = json.loads((stopped / "sweep.json").read_text())["runs"]["focal/seed0"]
    assert record["status"] == "interrupted" and record["exit_code"] == 130 and record["cpu_seconds"] > 1
    assert not (stopped / "runs/focal/seed0/metrics.json").exists()

    resumed = subprocess.run([sys.executable, "-m", "cxrlt", "sweep", "--resume", str(stopped), "--no-progress",
                              "--resamples", "50"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 1, resumed.stderr
    assert "1 finished, 1 to resume, 4 to start" in resumed.stdout
    assert "cxrlt train --resume" in (stopped / "logs/focal-seed0.log").read_text()

    ours, theirs = read_results(stopped / "results.csv"), read_results(whole / "results.csv")
    assert [(r["variant"], r["seed"], r["status"]) for r in ours] == [
        ("bce", "0", "finished"), ("bce", "1", "finished"), ("focal", "0", "finished"), ("focal", "1", "finished"),
        ("broken", "0", "failed"), ("broken", "1", "failed")]
    assert "no_such_backbone" in ours[-1]["error"]
    for mine, other in zip(ours, theirs):
        assert {k: v for k, v in mine.items() if k not in ("seconds", "cpu_seconds", "error")} == \
               {k: v for k, v in other.items() if k not in ("seconds", "cpu_seconds", "error")}

    # the summary of the real runs is their metrics.json, by hand
    summary = json.loads((stopped / "summary.json").read_text())
    for variant in ("bce", "focal"):
        metrics = [json.loads((stopped / f"runs/{variant}/seed{s}/metrics.json").read_text()) for s in (0, 1)]
        for key, values in (("mean_auc", [m["mean"]["auc"] for m in metrics]),
                            ("tail_ap", [m["groups"]["tail"]["ap"] for m in metrics])):
            assert summary["variants"][variant]["scores"][key]["mean"] == pytest.approx(np.mean(values))
            assert summary["variants"][variant]["scores"][key]["sd"] == pytest.approx(np.std(values, ddof=1))
    assert json.loads((whole / "summary.json").read_text())["variants"]["focal"]["vs_baseline"] == \
        summary["variants"]["focal"]["vs_baseline"]
    assert (stopped / "summary.png").stat().st_size > 0 and "| focal | 2 |" in (stopped / "summary.md").read_text()


@pytest.mark.slow
def test_printed_commands_train_the_runs_and_collect_summarises_them(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny_base(tmp_path / "data")))
    out = tmp_path / "sw"
    argv = ["sweep", str(base), "--variant", "bce:", "--variant", f"bce+crt:{CRT}", "--seeds", "0", "--out", str(out)]
    assert main([*argv, "--print-commands"]) == 0
    commands = capsys.readouterr().out.splitlines()
    assert commands == [
        f"cxrlt train {out / 'base.yaml'} train.seed=0 name=tiny-bce-seed0 --out {out / 'runs/bce/seed0'} "
        "--no-progress",
        f"cxrlt train {out / 'base.yaml'} '{CRT}' train.seed=0 name=tiny-bce+crt-seed0 "
        f"--out {out / 'runs/bce+crt/seed0'} --no-progress"]
    assert main(commands[0].split()[1:]) == 0  # what a scheduler would run, as it is
    capsys.readouterr()
    # bce's first stage is finished now: the crt run gets a copy and its command trains only the crt stage
    assert main([*argv, "--print-commands"]) == 0
    assert capsys.readouterr().out.splitlines() == commands[1:]
    assert (out / "runs/bce+crt/seed0/stages/01-main/done.json").is_file()
    assert main(["sweep", "--resume", str(out), "--collect", "--resamples", "20"]) == 0
    rows = read_results(out / "results.csv")
    assert [(r["variant"], r["status"]) for r in rows] == [("bce", "finished"), ("bce+crt", "pending")]
    assert rows[0]["mean_auc"] == str(json.loads((out / "runs/bce/seed0/metrics.json").read_text())["mean"]["auc"])


@pytest.mark.slow
def test_a_sweep_scored_out_of_fold_runs_kfold_shares_every_folds_first_stage_and_summarises_the_oof_predictions(
        tmp_path, capsys):
    raw = tiny_base(tmp_path / "data")
    raw["data"]["split"] = {"method": "kfold", "test_fraction": 0.0, "seed": 0}  # every image is scored out of fold
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(raw))
    out = tmp_path / "sw"
    argv = ["sweep", str(base), "--folds", "2", "--variant", "bce:", "--variant", f"bce+crt:{CRT}", "--seeds", "0",
            "--out", str(out), "--resamples", "50", "--no-progress"]
    assert main([*argv, "--print-commands"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"cxrlt kfold {out / 'base.yaml'} train.seed=0 name=tiny-bce-seed0 --folds 2 --out {out / 'runs/bce/seed0'} "
        "--no-progress")
    assert main(argv) == 0
    output = capsys.readouterr().out
    assert "2 runs of 2 folds each" in output and "bce+crt/seed0: reuses the finished stage 01-main of bce/seed0" \
        in output
    for fold in (0, 1):  # the re-trained classifier sits on the very backbone of bce's fold
        bce, crt = (out / f"runs/{v}/seed0/folds/{fold}/stages/01-main/checkpoints/best.ckpt" for v in ("bce", "bce+crt"))
        assert crt.read_bytes() == bce.read_bytes()
        assert (out / f"runs/bce+crt/seed0/folds/{fold}/stages/02-crt/done.json").is_file()
    rows = read_results(out / "results.csv")
    oof = {v: json.loads((out / f"runs/{v}/seed0/metrics_oof.json").read_text()) for v in ("bce", "bce+crt")}
    assert [(r["variant"], r["status"], r["split"], r["n_images"]) for r in rows] == [
        ("bce", "finished", "out-of-fold", "400"), ("bce+crt", "finished", "out-of-fold", "400")]
    assert [float(r["mean_auc"]) for r in rows] == [oof["bce"]["mean"]["auc"], oof["bce+crt"]["mean"]["auc"]]

    # the paired difference by hand: out-of-fold probabilities, F1 at thresholds tuned on them (as k-fold does)
    def table(variant: str, name: str) -> tuple[list[str], list[str], np.ndarray]:
        with open(out / f"runs/{variant}/seed0/{name}") as handle:
            rows = list(csv.DictReader(handle))
        classes = [c for c in rows[0] if c != "image_id"]
        return [r["image_id"] for r in rows], classes, np.array([[float(r[c]) for c in classes] for r in rows])

    ids, classes, a = table("bce+crt", "predictions_oof.csv")
    order = {i: k for k, i in enumerate(table("bce", "predictions_oof.csv")[0])}
    b = table("bce", "predictions_oof.csv")[2][[order[i] for i in ids]]
    label_ids, label_classes, labels = table("bce", "labels_oof.csv")
    labels = labels[[{i: k for k, i in enumerate(label_ids)}[i] for i in ids]][:, [label_classes.index(c)
                                                                                    for c in classes]]
    defined = [j for j in range(len(classes)) if 0 < labels[:, j].sum() < len(ids)]
    auc = [roc_auc_score(labels[:, j], a[:, j]) - roc_auc_score(labels[:, j], b[:, j]) for j in defined]
    th_a, th_b = tune_thresholds(labels, a), tune_thresholds(labels, b)
    f1 = [f1_score(labels[:, j], a[:, j] >= th_a[j]) - f1_score(labels[:, j], b[:, j] >= th_b[j]) for j in defined]
    entry = json.loads((out / "summary.json").read_text())["variants"]["bce+crt"]["vs_baseline"]["mean"]
    assert entry["auc"]["difference"] == pytest.approx(np.mean(auc))
    assert entry["f1_tuned"]["difference"] == pytest.approx(np.mean(f1))
    assert "F1 at the thresholds each run tuned on its out-of-fold predictions" in (out / "summary.md").read_text()

    # a sweep folder keeps how its runs are scored
    assert main(["sweep", str(base), "--variant", "bce:", "--seeds", "0", "--out", str(out)]) == 2
    assert "is a sweep of 2 folds, not one run per variant and seed" in capsys.readouterr().err


def test_a_folder_that_is_not_a_sweep_is_refused_before_anything_runs(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny_base(tmp_path / "data")))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep")
    assert main(["sweep", str(base), "--variant", "bce:", "--out", str(tmp_path / "mine")]) == 2
    assert "holds files cxrlt did not write (notes.txt)" in capsys.readouterr().err
    assert main(["sweep", "--resume", str(tmp_path / "nothing")]) == 2
    assert "holds no sweep" in capsys.readouterr().err
    assert main(["sweep", str(base), "--variant", "a:loss.name=no_such_loss", "--out", str(tmp_path / "new")]) == 2
    assert "variant a" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_the_usage_guide_example_is_a_valid_config_and_its_summary_is_its_runs():
    import re

    from cxrlt.config import parse_config

    usage = (REPO / "docs" / "usage.md").read_text()
    example = usage[usage.index("## Comparing methods: `cxrlt sweep`"):usage.index("## The run folder")]
    parse_config(yaml.safe_load(re.search(r"```yaml\n(.*?)```", example, re.S).group(1)))
    output = re.search(r"```text\n(.*?)```", example, re.S).group(1)
    runs = re.findall(r"\] (\w+)/seed\d: finished after \d+ s; auc ([\d.]+)", output)
    assert len(runs) == 4 and "Difference to bce" in output
    for variant in {name for name, _ in runs}:
        aucs = [float(auc) for name, auc in runs if name == variant]
        row = re.search(rf"^\| {variant} \| {len(aucs)} \| ([\d.]+) ± ([\d.]+) \|", output, re.M)
        # the printed per-run AUCs have 4 decimals, the table 3
        assert float(row.group(1)) == pytest.approx(np.mean(aucs), abs=6e-4)
        assert float(row.group(2)) == pytest.approx(np.std(aucs, ddof=1), abs=6e-4)


def test_collect_summarises_a_sweep_another_process_is_running_without_touching_its_state(tmp_path, monkeypatch,
                                                                                         capsys):
    import cxrlt.runs.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "patient_keys", lambda config: None)  # the fake runs' ids are not the data's
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny_base(tmp_path / "data")))
    sweep = Sweep.open(tmp_path / "sw", base, SweepSpec.build([Variant("bce", ()), Variant("focal", ())], (0, 1),
                                                              None))
    sweep.save()
    rng = np.random.default_rng(1)
    ids, val_ids = [f"i{k}" for k in range(30)], [f"v{k}" for k in range(20)]
    labels, val_labels = (rng.random((30, 3)) < 0.4).astype(float), (rng.random((20, 3)) < 0.4).astype(float)
    for variant, seed, auc in (("bce", 0, 0.6), ("bce", 1, 0.7), ("focal", 0, 0.9)):
        fake_run(sweep.folder.run(variant, seed), rng, ids, labels, val_ids, val_labels,
                 {"mean": auc, "head": auc, "medium": auc, "tail": auc})
    state = sweep.folder.state.read_bytes()
    with sweep.folder.claim().lock("sweep"):  # as a training `cxrlt sweep` holds it
        assert main(["sweep", "--resume", str(sweep.folder.path), "--collect", "--resamples", "20"]) == 0
    out = capsys.readouterr().out
    assert "is running in another process; summarising the runs finished so far" in out
    assert "| bce | 2 | 0.650 ± 0.071 |" in out and "- focal seed 1: pending" in out
    assert [(r["variant"], r["seed"], r["status"]) for r in read_results(sweep.folder.results)] == [
        ("bce", "0", "finished"), ("bce", "1", "finished"), ("focal", "0", "finished"), ("focal", "1", "pending")]
    assert sweep.folder.state.read_bytes() == state
