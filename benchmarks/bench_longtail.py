"""Long-tail benchmark: one backbone, every loss, two samplers, with and without decoupling.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_longtail.py --out runs/longtail-reduced  # CPU
    PYTHONPATH=src python benchmarks/bench_longtail.py --out runs/longtail-full --full               # GPU

Trains the same backbone once per (dataset, method, seed) through cxrlt's own
API (`cxrlt.config.parse_config` + `cxrlt.runs.train.train`), one run
folder per combination under `--out/runs/DATASET/METHOD/seedN`. A run whose
folder is finished is skipped and an interrupted one is resumed, so the
benchmark can be stopped and started again at any time.

Datasets:

- `nih`: the 10,000 real NIH ChestX-ray14 images of `DATA/nih/images128`.
  Their rows of `Data_Entry_2017_v2020.csv.gz` are written to
  `--out/data/nih_labels.csv` and read with the `nih` source and the official
  lists (a label file cut down to the images one has is what that source
  expects). Validation is 10% of the official train_val patients (patient-
  wise, split seed 0, the same for every run); results are on the official
  test images only.
- `synthetic`: cxrlt's synthetic long-tailed films, patient-wise random
  split 70 / 10 / 20 (split seed 0).

Images are decoded once per dataset into a prepared cache
(`cxrlt.data.cache.prepare_cache`) at the training size.

Methods: the seven losses with instance sampling (`bce`, `weighted_bce`,
`focal`, `asl`, `cal` = class_aware, `en_focal` = effective_number_focal,
`cb` = class_balanced; each with the SPEC defaults), `bce+cycle`
(class-balanced cycle sampling), and `bce+crt` / `cal+crt` (decoupled: stage
2 freezes the backbone, re-initialises the classifier and re-trains it with
cycle sampling, cRT). Stage 1 of a decoupled run has exactly the settings
and seed of the plain run of its loss, so its finished stage-1 folder is
copied in and only stage 2 trains.

Reported per method: test mean AUC and mAP, overall and over head / medium /
tail classes (a third of the classes each, by training positives, as
`evaluation.groups` defaults), as mean +- sample sd over seeds; and the mAP
difference to BCE with a 95% paired bootstrap interval. The interval is for
the seed-averaged probabilities (the 3-seed ensemble of each method against
the 3-seed ensemble of BCE, resampling test patients), computed by
`cxrlt.evaluation.bootstrap`; seed-to-seed spread is the sd columns. Results
go to `--out/results.json` and `--out/results.csv` (written atomically) and
the table is printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxrlt.config import DataConfig, RunConfig, apply_overrides, parse_config
from cxrlt.errors import ConfigError, InputError
from cxrlt.io import read_json, write_dataframe_csv, write_json, write_text

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
GROUPS = ("head", "medium", "tail")
BASELINE = "bce"


@dataclass(frozen=True)
class Method:
    """One benchmark row: a loss, a sampler, and whether a cRT stage follows."""

    loss: str
    sampler: str = "instance"
    decoupled: bool = False


METHODS: dict[str, Method] = {
    "bce": Method("bce"),
    "weighted_bce": Method("weighted_bce"),
    "focal": Method("focal"),
    "asl": Method("asl"),
    "cal": Method("class_aware"),
    "en_focal": Method("effective_number_focal"),
    "cb": Method("class_balanced"),
    "bce+cycle": Method("bce", sampler="cycle"),
    "bce+crt": Method("bce", decoupled=True),
    "cal+crt": Method("class_aware", decoupled=True),
}


@dataclass(frozen=True)
class Setting:
    """Model, input size, schedule and dataset sizes of one benchmark scale."""

    backbone: str
    size: int
    epochs: dict[str, int]
    crt_epochs: int
    batch_size: int
    lr: float
    synthetic_images: int
    num_workers: int
    precision: str = "32"


# Reduced: all 60 runs (both datasets, all methods, 3 seeds) in under an hour on
# one core of a shared 2-core VM: 40.6 min measured (docs/benchmark.md).
# lcnet_050 trains ~170 images/s at 64 px on a free core, 4.5x resnet10t; at the
# machine's load, one NIH epoch at 32 px (~60 s a run) is what fits. Far too
# little to learn NIH: this setting checks the pipeline; --full ranks methods.
REDUCED = Setting(backbone="lcnet_050", size=32, epochs={"nih": 1, "synthetic": 12}, crt_epochs=1, batch_size=32,
                  lr=3e-3, synthetic_images=1500, num_workers=0)
# Full: the CheXNet backbone at the images' own 128 px (upsampling them adds
# nothing); random init, since no weights can be fetched on the benchmark machine
# (`--set model.pretrained=FILE` uses a local weight file).
FULL = Setting(backbone="densenet121", size=128, epochs={"nih": 20, "synthetic": 20}, crt_epochs=3, batch_size=64,
               lr=1e-3, synthetic_images=10000, num_workers=4)


# ----------------------------------------------------------------- datasets
def nih_label_file(data: Path, out: Path) -> Path:
    """The NIH label rows of the images present in `data/nih/images128`, as a CSV under `out`."""
    import pandas as pd

    target = out / "nih_labels.csv"
    if target.is_file():
        return target
    nih = data / "nih"
    present = {name for name in os.listdir(nih / "images128") if name.endswith(".png")}
    frame = pd.read_csv(nih / "Data_Entry_2017_v2020.csv.gz", dtype=str)
    kept = frame[frame["Image Index"].isin(present)]
    if len(kept) != len(present):
        raise InputError(f"{len(present) - len(kept)} of its images have no row in {nih / 'Data_Entry_2017_v2020.csv.gz'}",
                         nih / "images128")
    write_dataframe_csv(target, kept)
    return target


def data_section(dataset: str, data: Path, out: Path, setting: Setting) -> dict[str, Any]:
    """The `data` mapping of every run of `dataset` (cache not yet set)."""
    if dataset == "nih":
        nih = data / "nih"
        source = {"name": "nih", "labels": str(nih_label_file(data, out / "data")),
                  "train_list": str(nih / "train_val_list.txt"), "test_list": str(nih / "test_list.txt"),
                  "images": str(nih / "images128")}
        split = {"method": "source", "val_fraction": 0.1, "seed": 0}
    else:
        source = {"name": "synthetic", "out": str(out / "data" / f"synthetic-n{setting.synthetic_images}"),
                  "n_images": setting.synthetic_images, "image_size": max(setting.size, 64), "seed": 0}
        split = {"method": "random", "val_fraction": 0.1, "test_fraction": 0.2, "seed": 0}
    return {"sources": [source], "split": split, "images": {"size": setting.size}}


def prepare_dataset(dataset: str, data: Path, out: Path, setting: Setting) -> tuple[dict[str, Any], Any]:
    """Data section with a prepared cache, and the dataset's label table (splits assigned)."""
    from cxrlt.data.cache import prepare_cache
    from cxrlt.data.sources import load_table

    section = data_section(dataset, data, out, setting)
    table = load_table(DataConfig.model_validate(section))
    cache = out / "data" / f"{dataset}-cache{setting.size}"
    prepare_cache(table, cache, setting.size, workers=0, progress=False)
    section["images"]["cache"] = str(cache)
    return section, table


# --------------------------------------------------------------------- runs
def run_config(dataset: str, method: Method, seed: int, section: dict[str, Any], setting: Setting,
               overrides: Sequence[str], report: bool = False) -> RunConfig:
    """The validated configuration of one (dataset, method, seed) run.

    `report`: each run's plots and reports; off by default because the
    benchmark reads only metrics and predictions, and drawing them takes
    longer than training a reduced run.
    """
    raw: dict[str, Any] = {
        "name": f"{dataset}-{method.loss}-{method.sampler}{'-crt' if method.decoupled else ''}-seed{seed}",
        "data": json.loads(json.dumps(section)),
        "model": {"backbone": setting.backbone},
        "loss": {"name": method.loss},
        "train": {"epochs": setting.epochs[dataset], "batch_size": setting.batch_size, "seed": seed,
                  "num_workers": setting.num_workers, "precision": setting.precision, "monitor": "map",
                  "optimizer": {"name": "adamw", "lr": setting.lr}, "schedule": {"name": "cosine"},
                  "sampler": {"name": method.sampler}},
        "evaluation": {"bootstrap": 0, "report": report},
    }
    if method.decoupled:
        # Stage 1 is named like a plain run's only stage so that its folder can be reused.
        raw["stages"] = [{"name": "main"}, {"name": "crt", "freeze_backbone": True, "epochs": setting.crt_epochs}]
    raw = apply_overrides(raw, list(overrides))
    return parse_config(raw, origin=f"benchmark run {raw['name']}")


FINISHED = "bench.json"


def run_one(config: RunConfig, run_dir: Path, stage1_from: Path | None) -> float:
    """Train (or resume) one run; seconds spent. A finished run (bench.json) is skipped."""
    from cxrlt.config import load_config
    from cxrlt.runs.folder import RunFolder
    from cxrlt.runs.train import resume, train

    saved = RunFolder(run_dir).config
    if saved.is_file() and load_config(saved) != config:
        raise ConfigError(f"{run_dir} holds a run with other settings than this benchmark's; "
                          "choose another --out folder or delete that run folder")
    if (run_dir / FINISHED).is_file():
        return float(read_json(run_dir / FINISHED)["seconds"])
    start = time.perf_counter()
    if saved.is_file():
        resume(run_dir, progress=False)
    else:
        target = run_dir / "stages" / "01-main"
        if stage1_from is not None and (stage1_from / "done.json").is_file() and not target.exists():
            staging = run_dir / "stages" / f".{stage1_from.name}.copy"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(stage1_from, staging)
            os.replace(staging, target)
        train(config, run_dir, progress=False)
    seconds = time.perf_counter() - start
    write_json(run_dir / FINISHED, {"seconds": seconds})
    return seconds


# -------------------------------------------------------------- aggregation
def paired_map_interval(labels: np.ndarray, probs: np.ndarray, baseline: np.ndarray, patients: np.ndarray,
                        resamples: int, seed: int) -> dict[str, float] | None:
    """Mean-AP difference (probs minus baseline) with its 95% paired bootstrap interval.

    Whole patients are resampled (images of one patient are not
    independent). Delegates to `cxrlt.evaluation.bootstrap.paired_bootstrap`;
    None when that module is not in this checkout (the table prints n/a).
    """
    try:
        from cxrlt.evaluation.bootstrap import paired_bootstrap
    except ImportError:
        return None
    result = paired_bootstrap(labels, probs, baseline, resamples=resamples, patients=patients, seed=seed)
    entry = result.to_dict()["mean"]["ap"]
    if entry["interval"] is None:
        return None
    low, high = entry["interval"]
    return {"delta": entry["difference"], "low": low, "high": high, "share_better": entry["share_a_better"]}


def run_scores(metrics: dict[str, Any]) -> dict[str, float | None]:
    """AUC and mAP overall and per group from one run's metrics.json."""
    scores: dict[str, float | None] = {"auc": metrics["mean"]["auc"], "map": metrics["mean"]["ap"]}
    for group in GROUPS:
        entry = metrics.get("groups", {}).get(group, {})
        scores[f"{group}_auc"] = entry.get("auc")
        scores[f"{group}_map"] = entry.get("ap")
    return scores


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample sd (ddof 1; None with one value) of the defined values."""
    defined = [v for v in values if v is not None]
    if not defined:
        return None, None
    mean = float(np.mean(defined))
    return mean, float(np.std(defined, ddof=1)) if len(defined) > 1 else None


def seed_averaged_probabilities(run_dirs: Sequence[Path], image_ids: np.ndarray) -> np.ndarray:
    """Mean over runs of the test probabilities, rows in `image_ids` order."""
    from cxrlt.evaluation.predictions import read_predictions

    total = None
    for run_dir in run_dirs:
        table = read_predictions(run_dir / "predictions.csv")
        order = {str(i): k for k, i in enumerate(table.ids)}
        probs = table.values[[order[str(i)] for i in image_ids]]
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(run_dirs)


def summarise(dataset: str, methods: Sequence[str], seeds: Sequence[int], runs_root: Path, test_table: Any,
              resamples: int) -> list[dict[str, Any]]:
    """One result row per method: per-seed scores, mean and sd, and the paired interval against BCE."""
    image_ids = test_table.image_ids
    labels = test_table.labels
    patients = test_table.meta["patient_id"].to_numpy(dtype=object)
    rows = []
    averaged: dict[str, np.ndarray] = {}
    for name in methods:
        dirs = [runs_root / dataset / name / f"seed{seed}" for seed in seeds]
        per_seed = [run_scores(read_json(d / "metrics.json")) for d in dirs]
        row: dict[str, Any] = {"dataset": dataset, "method": name, "seeds": list(seeds),
                               "test_images": int(len(image_ids)),
                               "seconds": [float(read_json(d / FINISHED)["seconds"]) for d in dirs]}
        for key in per_seed[0]:
            values = [s[key] for s in per_seed]
            row[key] = values
            row[f"{key}_mean"], row[f"{key}_sd"] = mean_sd(values)
        averaged[name] = seed_averaged_probabilities(dirs, image_ids)
        rows.append(row)
    for row in rows:
        interval = None
        if BASELINE in averaged and row["method"] != BASELINE:
            interval = paired_map_interval(labels, averaged[row["method"]], averaged[BASELINE], patients,
                                           resamples, seed=0)
        row["delta_map_vs_bce"] = interval
    return rows


# ------------------------------------------------------------------- output
COLUMNS = [("auc", "AUC"), ("map", "mAP")] + [(f"{g}_{m}", f"{g} {label}") for g in GROUPS
                                              for m, label in (("auc", "AUC"), ("map", "mAP"))]


def format_mean_sd(mean: float | None, sd: float | None) -> str:
    """`0.712 ± 0.010`, `0.712` for one seed, `n/a` when undefined."""
    if mean is None:
        return "n/a"
    return f"{mean:.3f}" if sd is None else f"{mean:.3f} ± {sd:.3f}"


def format_interval(interval: dict[str, float] | None, method: str) -> str:
    """`+0.012 [-0.004, +0.027]`; `—` for the baseline; `n/a` without the bootstrap module."""
    if method == BASELINE:
        return "—"
    if interval is None:
        return "n/a"
    return f"{interval['delta']:+.3f} [{interval['low']:+.3f}, {interval['high']:+.3f}]"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of one dataset's rows."""
    header = ["method"] + [label for _, label in COLUMNS] + ["ΔmAP vs BCE, seed-avg [95% CI]"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        cells = [row["method"]] + [format_mean_sd(row[f"{key}_mean"], row[f"{key}_sd"]) for key, _ in COLUMNS]
        cells.append(format_interval(row["delta_map_vs_bce"], row["method"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(out: Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """results.json (everything) and results.csv (one line per dataset and method), atomically."""
    import pandas as pd

    write_json(out / "results.json", {"info": info, "rows": rows})
    flat = []
    for row in rows:
        entry = {"dataset": row["dataset"], "method": row["method"], "seeds": len(row["seeds"]),
                 "test_images": row["test_images"]}
        for key, _ in COLUMNS:
            entry[f"{key}_mean"], entry[f"{key}_sd"] = row[f"{key}_mean"], row[f"{key}_sd"]
        interval = row["delta_map_vs_bce"] or {}
        entry.update({f"delta_map_{k}": interval.get(k) for k in ("delta", "low", "high")})
        entry["train_seconds_mean"] = float(np.mean(row["seconds"]))
        flat.append(entry)
    write_dataframe_csv(out / "results.csv", pd.DataFrame(flat))


def hardware() -> str:
    """CPU / GPU in one line."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return (f"{os.cpu_count()} CPU cores ({cpu}), torch threads {torch.get_num_threads()}, "
            f"GPU: {', '.join(gpus) if gpus else 'none'}")


# --------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder of run folders, caches and results")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (holds nih/)")
    parser.add_argument("--full", action="store_true", help="full setting (densenet121 at 128 px, 20 epochs): GPU")
    parser.add_argument("--datasets", nargs="+", choices=["nih", "synthetic"], default=["nih", "synthetic"])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every stage-1 run (overrides the setting)")
    parser.add_argument("--size", type=int, default=None, help="input (and cache) size in pixels")
    parser.add_argument("--backbone", default=None, help="timm backbone (overrides the setting)")
    parser.add_argument("--synthetic-images", type=int, default=None, help="size of the synthetic set")
    parser.add_argument("--plots", action="store_true",
                        help="also write each run's plots and report.md (about 10 s per run on one CPU core)")
    parser.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run, e.g. model.backbone=resnet18 (repeatable)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    for name in args.methods:
        base = _base_method(name)
        if base is not None and base not in args.methods:
            parser.error(f"{name} reuses stage 1 of {base}: add {base} to --methods")
    return args


def _base_method(name: str) -> str | None:
    """The plain method whose stage 1 a decoupled method shares."""
    method = METHODS[name]
    if not method.decoupled:
        return None
    return next(n for n, m in METHODS.items() if m == Method(method.loss))


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) every run, then print and save the results; returns the result rows."""
    import torch

    args = parse_args(argv)
    base = FULL if args.full else REDUCED
    epochs = {d: args.epochs or n for d, n in base.epochs.items()}
    precision = "bf16-mixed" if args.full and torch.cuda.is_available() else "32"
    setting = Setting(**{**base.__dict__, "epochs": epochs, "precision": precision,
                         "synthetic_images": args.synthetic_images or base.synthetic_images,
                         "size": args.size or base.size, "backbone": args.backbone or base.backbone})
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    # Plain methods first: decoupled runs copy their stage 1.
    methods = sorted(args.methods, key=lambda n: (METHODS[n].decoupled, list(METHODS).index(n)))
    started = time.perf_counter()
    total = len(args.datasets) * len(methods) * len(seeds)
    done = 0
    rows: list[dict[str, Any]] = []
    for dataset in args.datasets:
        section, table = prepare_dataset(dataset, args.data, out, setting)
        print(f"{dataset}: train {len(table.split('train'))}, val {len(table.split('val'))}, "
              f"test {len(table.split('test'))} images; cache {section['images']['cache']}", flush=True)
        for name in methods:
            for seed in seeds:
                run_dir = out / "runs" / dataset / name / f"seed{seed}"
                base_name = _base_method(name)
                stage1 = out / "runs" / dataset / base_name / f"seed{seed}" / "stages" / "01-main" if base_name else None
                config = run_config(dataset, METHODS[name], seed, section, setting, args.overrides, args.plots)
                seconds = run_one(config, run_dir, stage1)
                done += 1
                metrics = read_json(run_dir / "metrics.json")
                elapsed = time.perf_counter() - started
                print(f"[{done}/{total}] {dataset} {name} seed {seed}: test AUC {metrics['mean']['auc']:.3f} "
                      f"mAP {metrics['mean']['ap']:.3f} ({seconds:.0f} s; {elapsed / 60:.1f} min elapsed)",
                      flush=True)
        rows += summarise(dataset, methods, seeds, out / "runs", table.split("test"), args.resamples)
    info = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]) if argv is None
        else "main(" + repr(list(argv)) + ")",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": hardware(),
        "setting": {**setting.__dict__, "overrides": args.overrides},
        "wall_minutes": (time.perf_counter() - started) / 60,
        "run_minutes_total": sum(sum(row["seconds"]) for row in rows) / 60,
        "interval": "95% paired percentile bootstrap (whole test patients resampled) of the mAP difference "
                    f"of seed-averaged probabilities, {args.resamples} resamples, cxrlt.evaluation.bootstrap"
                    + ("" if any(r["delta_map_vs_bce"] for r in rows) else " (not available: no intervals)"),
    }
    write_results(out, rows, info)
    text = []
    for dataset in args.datasets:
        subset = [r for r in rows if r["dataset"] == dataset]
        text.append(f"### {dataset}: test {subset[0]['test_images']} images, {len(seeds)} seed(s); "
                    f"mean ± sd over seeds\n\n{format_table(subset)}\n")
    text.append(f"{setting.backbone} at {setting.size} px, epochs {setting.epochs}, cRT epochs {setting.crt_epochs}; "
                f"{info['hardware']}; runs took {info['run_minutes_total']:.1f} min in all, this call "
                f"{info['wall_minutes']:.1f} min")
    report = "\n".join(text)
    write_text(out / "results.md", report + "\n")
    print(report, flush=True)
    return rows


if __name__ == "__main__":
    main()
