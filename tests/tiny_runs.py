"""Run configurations small enough for CI, shared by the tests of training, run folders and scoring."""

from __future__ import annotations

from pathlib import Path


def tiny_config(data_dir: Path, **train_overrides) -> dict:
    """A run small enough for CI: 1,000 synthetic films at 48 px, resnet10t."""
    return {
        "name": "tiny",
        "data": {
            "sources": [{"name": "synthetic", "out": str(data_dir), "n_images": 1000, "image_size": 48, "seed": 3}],
            "split": {"method": "random", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
            "images": {"size": 48},
        },
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": 3, "batch_size": 32, "num_workers": 0, "monitor": "auc",
                  "optimizer": {"name": "adamw", "lr": 0.003}, "schedule": {"name": "cosine"},
                  **train_overrides},
        "evaluation": {"bootstrap": 0},
    }


def tiny(data_dir: Path, **train_settings) -> dict:
    """300 synthetic films at 32 px, resnet10t, 2 short epochs: seconds on a CPU."""
    return {
        "name": "tiny",
        "data": {"sources": [{"name": "synthetic", "out": str(data_dir), "n_images": 300, "image_size": 32, "seed": 3}],
                 "split": {"method": "random", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
                 "images": {"size": 32}},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": 2, "batch_size": 32, "num_workers": 0, "monitor": "auc",
                  "optimizer": {"name": "adamw", "lr": 0.003}, **train_settings},
        "evaluation": {"bootstrap": 0, "report": False},
    }
