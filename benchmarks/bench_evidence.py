"""Evidence on synthetic data: does Mosaic help, and does a 3-fold ensemble with flip TTA beat one model?

    OMP_NUM_THREADS=1 python benchmarks/bench_evidence.py [--n-images 1500] [--size 48] [--epochs 8]
        [--seeds 2] [--folds 3] [--work DIR]

A short CPU experiment (resnet10t, random init, one thread; about 10-15
minutes with the defaults) on the toolkit's synthetic long-tailed chest films
(`synthetic` source, NIH-14 classes). Every model uses the same recipe
(AdamW 3e-3, cosine, batch 32, BCE, horizontal flip p = 0.5 in training) and
is scored on the same patient-wise test split (20% of patients), by mean AP
over the classes with test positives (the `metrics.json` mean):

1. Mosaic: the recipe without and with batch Mosaic (crop variant, union
   labels, p = 0.5), `--seeds` training seeds each (60% train / 20% val).
2. Ensembling: the no-Mosaic model of seed 0, alone and with flip TTA
   (arithmetic mean of image and mirror), against a `--folds`-fold ensemble
   (`cxrlt.runs.kfold`: patient-grouped stratified folds of the 80%
   non-test images, fold models averaged) without and with flip TTA.

Small data and few epochs make single numbers noisy: the per-seed values are
printed so the spread can be judged. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from cxrlt.config import parse_config
from cxrlt.runs.kfold import fold_dir, kfold
from cxrlt.ensemble.merge import merge_probabilities
from cxrlt.evaluation.metrics import UndefinedMetricWarning, compute_metrics
from cxrlt.training.data import load_run_data
from cxrlt.inference.saved_model import load_model
from cxrlt.inference.predict import predict_probabilities
from cxrlt.runs.train import train

MOSAIC = {"name": "mosaic", "variant": "crop", "label": "union", "p": 0.5}


def recipe(data_dir: Path, n_images: int, size: int, epochs: int, seed: int, mosaic: bool) -> dict:
    """The run configuration shared by every model of the experiment."""
    return {
        "name": f"evidence-{'mosaic' if mosaic else 'plain'}-seed{seed}",
        "data": {
            "sources": [{"name": "synthetic", "out": str(data_dir), "n_images": n_images, "image_size": size,
                         "seed": 3}],
            "split": {"method": "random", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
            "images": {"size": size},
        },
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": epochs, "batch_size": 32, "num_workers": 0, "monitor": "map", "seed": seed,
                  "optimizer": {"name": "adamw", "lr": 0.003}, "schedule": {"name": "cosine"}},
        "augment": {"train": [{"name": "hflip", "p": 0.5}], "mixing": [MOSAIC] if mosaic else []},
        "evaluation": {"bootstrap": 0},
    }


def mean_ap(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean AP over the classes with positives and negatives (as metrics.json)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        result = compute_metrics(labels, probs)
    return float(np.mean(result.ap[result.defined]))


def test_probabilities(run_dir: Path, config, tta: list[str] | None) -> np.ndarray:
    """Test-split probabilities of the model saved in `run_dir`, optionally with TTA."""
    model, card = load_model(run_dir)
    data = load_run_data(config)
    store = data.store("test", card.stored_size)
    return predict_probabilities(model, store, card.image_size, progress=False, tta=tta,
                                 eval_transforms=card.eval_transforms, device=torch.device("cpu"))


def cpu_seconds() -> float:
    """CPU time of this process so far (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=1500)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--work", type=Path, help="folder for data and runs (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("CXRLT_NO_PROGRESS", "1")
    import logging

    logging.getLogger("cxrlt").setLevel(logging.ERROR)
    from cxrlt.training import quiet_lightning

    quiet_lightning()

    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        data_dir = work / "synthetic"
        start_wall, start_cpu = time.perf_counter(), cpu_seconds()
        scores: dict[str, list[float]] = {"no Mosaic": [], "Mosaic (crop, p=0.5)": []}
        runs = {}
        for seed in range(args.seeds):
            for mosaic, name in ((False, "no Mosaic"), (True, "Mosaic (crop, p=0.5)")):
                config = parse_config(recipe(data_dir, args.n_images, args.size, args.epochs, seed, mosaic))
                result = train(config, work / config.name, progress=False)
                scores[name].append(float(result.metrics.metrics["mean"]["ap"]))
                runs[(seed, mosaic)] = (result.run_dir, config)

        single_dir, single_config = runs[(0, False)]
        test = load_run_data(single_config).part("test")
        single = mean_ap(test.labels, test_probabilities(single_dir, single_config, None))
        single_tta = mean_ap(test.labels, test_probabilities(single_dir, single_config, ["hflip"]))

        folds = kfold(single_config, work / "kfold", folds=args.folds, progress=False)
        ensemble = float(folds.test["mean"]["ap"])
        fold_configs = [parse_config(recipe(data_dir, args.n_images, args.size, args.epochs, 0, False))
                        for _ in range(args.folds)]
        with_tta = np.stack([test_probabilities(fold_dir(folds.run_dir, k), fold_configs[k], ["hflip"])
                             for k in range(args.folds)])
        ensemble_tta = mean_ap(test.labels, merge_probabilities(with_tta, "arithmetic", axis=0))
        single_folds = [float(s["test"]["ap"]) for s in folds.folds]
        wall, cpu = time.perf_counter() - start_wall, cpu_seconds() - start_cpu

    print(f"synthetic films: {args.n_images} images at {args.size} px, test split {len(test)} images; resnet10t, "
          f"{args.epochs} epochs, hflip p=0.5 in training; torch threads {torch.get_num_threads()}")
    print("\n1. Mosaic (mean AP on test)")
    header = "  ".join(f"seed {s:<3}" for s in range(args.seeds))
    print(f"{'':<24}{header}  mean")
    for name, values in scores.items():
        print(f"{name:<24}" + "  ".join(f"{v:8.4f}" for v in values) + f"  {np.mean(values):.4f}")
    print(f"\n2. Ensembling (mean AP on test; single model = no Mosaic, seed 0)")
    print(f"{'single model':<34}{single:.4f}")
    print(f"{'single model + flip TTA':<34}{single_tta:.4f}")
    print(f"{'fold models alone (each)':<34}" + "  ".join(f"{v:.4f}" for v in single_folds))
    print(f"{f'{args.folds}-fold ensemble':<34}{ensemble:.4f}")
    print(f"{f'{args.folds}-fold ensemble + flip TTA':<34}{ensemble_tta:.4f}")
    print(f"\nwall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min")


if __name__ == "__main__":
    main()
