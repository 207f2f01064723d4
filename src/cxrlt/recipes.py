"""Smoke runs of a recipe: the same method on tiny synthetic data, in about a minute on a CPU.

A recipe in `configs/` is written for a paper's dataset and hardware
(Swin-B at 224 px for 30 epochs, ResNet-101 at 1024 px...). `smoke_config`
rewrites a raw recipe mapping so that it runs end to end on a laptop while
keeping what the recipe is about:

kept exactly
    the loss, the head and its parameters, pooling, the sampler, the optimiser
    and schedule, the stages (decoupling, frozen backbone, re-initialised head,
    progressive resizing, tau-normalisation), augmentation and batch mixing,
    TTA, the label space (`data.classes`, `unannotated`), the split method
    (source / random / kfold) and the evaluation settings.
changed
    every data source becomes a `csv` source over a small synthetic dataset
    (`cxrlt.data.synthetic`), one disjoint slice per source, carrying that
    source's own class list (NIH 14, CheXpert 14, CXR-LT 26...) and, where
    the original source gives a split (NIH lists, a MIMIC `split` column...),
    a patient-wise train / (val) / test column; images are `size` pixels
    (stored sizes, stage sizes and crop sizes scaled by the same factor);
    the backbone becomes a small member of its family (`smoke_backbone`)
    with random weights; one epoch per stage, at most `max_batches` batches;
    batch sizes at most `batch_size` (stage ratios kept); no workers, fp32,
    no compilation; bootstrap resamples capped at 20; optionally a local
    text encoder for text label embeddings.

`cxrlt train CONFIG --smoke` runs it; `tests/test_recipes.py` smoke-runs
every recipe in `configs/` so that none can silently stop working.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxrlt.errors import ConfigError

__all__ = ["SMOKE_BACKBONES", "smoke_backbone", "smoke_config", "source_classes"]

# Backbone name prefix -> a small model of the same family (random weights, fast on a CPU).
# Checked in order: the first matching prefix wins.
SMOKE_BACKBONES: tuple[tuple[str, str], ...] = (
    ("swin", "swin_tiny_patch4_window7_224"),
    ("convnext", "convnext_atto"),
    ("tf_efficientnetv2", "tf_efficientnetv2_b0"),
    ("efficientnetv2", "tf_efficientnetv2_b0"),
    ("efficientnet", "tinynet_e"),
    ("tinynet", "tinynet_e"),
    ("densenet", "densenet121"),
    ("resnet", "resnet10t"),
)

_NO_FINDING = "no finding"  # its canonical key

# Transforms whose `size` parameter is in pixels (scaled with the image size).
_PIXEL_SIZE_TRANSFORMS = ("center_crop", "random_crop", "resize")


def smoke_backbone(name: str) -> str:
    """A small backbone of the same family as `name` (the name itself when no rule matches)."""
    for prefix, small in SMOKE_BACKBONES:
        if name.startswith(prefix):
            return small
    return name


def source_classes(spec: dict[str, Any], run_classes: Sequence[str] = ()) -> tuple[str, ...]:
    """The class list a data source entry (raw mapping) would produce from its dataset's label file
    in a run of the label space `run_classes` (see `cxrlt.data.sources.load_table`)."""
    from cxrlt.labels import CHEXPERT14, CXRLT2023, NIH14, canonical_key

    name = spec.get("name")
    if name == "nih":
        asked = spec.get("no_finding") or _NO_FINDING in {canonical_key(c) for c in run_classes}
        return NIH14 + (("No Finding",) if asked else ())
    if name == "chexpert":
        return CHEXPERT14
    if name == "mimic":
        return tuple(spec.get("classes") or CXRLT2023)
    if name == "csv":
        return tuple(spec.get("classes") or NIH14)
    return NIH14


def _source_splits(spec: dict[str, Any]) -> tuple[str, ...]:
    """The split names the original source would give its images (empty: none)."""
    name = spec.get("name")
    if name == "nih" and (spec.get("train_list") or spec.get("test_list")):
        return ("train", "test")
    if name == "mimic":
        return ("train", "val", "test")  # CXR-LT files carry train / validate / test
    if name == "csv" and spec.get("split_column"):
        return ("train", "val", "test")
    return ()


def smoke_config(
    raw: dict[str, Any],
    workdir: str | Path,
    *,
    size: int = 32,
    n_images: int = 200,
    batch_size: int = 16,
    max_batches: int = 2,
    text_encoder: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """A smoke-run version of the raw recipe mapping `raw` (see the module docstring).

    The synthetic images and one label CSV per source are written under
    `workdir` (reused when already there). `text_encoder`, when given,
    replaces the model of text label embeddings (`method: text`) so that no
    hub model is needed. The original is not modified; validate it with
    `cxrlt.config.parse_config` first, since the smoke version drops its
    data paths.
    """
    from cxrlt.data.synthetic import generate_dataset
    from cxrlt.labels import resolve_classes

    if not isinstance(raw.get("data"), dict) or not raw["data"].get("sources"):
        raise ConfigError("smoke run: the config has no data.sources to replace")
    out = copy.deepcopy(raw)
    workdir = Path(workdir)
    # Every class needs positives in every split of a few hundred images, hence the raised floor.
    synthetic = generate_dataset(workdir / "synthetic", n_images=n_images, image_size=max(48, size + size // 2),
                                 seed=seed, min_frequency=0.05, progress=False)

    data = out["data"]
    images = data.setdefault("images", {}) or {}
    data["images"] = images
    original_size = int(images.get("size", 224))
    factor = size / original_size

    def scaled(pixels: int) -> int:
        return max(16, round(pixels * factor))

    sources = [s if isinstance(s, dict) else {"name": s} for s in data["sources"]]
    run_classes = resolve_classes(data["classes"]) if data.get("classes") is not None else ()
    data["sources"] = _synthetic_sources(sources, run_classes, synthetic, workdir, seed)
    images["size"] = size
    if images.get("store_size") is not None:
        images["store_size"] = scaled(int(images["store_size"]))
    images.pop("cache", None)

    model = out.setdefault("model", {}) or {}
    out["model"] = model
    model["backbone"] = smoke_backbone(str(model.get("backbone", "resnet18")))
    model["pretrained"] = False
    head = model.get("head")
    if isinstance(head, dict) and isinstance(head.get("embeddings"), dict) and text_encoder is not None:
        if head["embeddings"].get("method") == "text":
            head["embeddings"] = {**head["embeddings"], "model": str(text_encoder)}

    train = out.setdefault("train", {}) or {}
    out["train"] = train
    original_batch = int(train.get("batch_size", 32))
    small_batch = min(batch_size, original_batch)
    train.update(epochs=1, batch_size=small_batch, num_workers=0, precision="32", compile=False,
                 limit_train_batches=max_batches, limit_eval_batches=max_batches,
                 devices="auto", strategy="auto", num_nodes=1)
    for stage in out.get("stages") or []:
        if stage.get("epochs") is not None:
            stage["epochs"] = 1
        if stage.get("image_size") is not None:
            stage["image_size"] = scaled(int(stage["image_size"]))
        if stage.get("batch_size") is not None:
            stage["batch_size"] = max(2, round(int(stage["batch_size"]) * small_batch / original_batch))

    augment = out.get("augment") or {}
    for spec in [*(augment.get("train") or []), *(augment.get("eval") or [])]:
        if isinstance(spec, dict) and spec.get("name") in _PIXEL_SIZE_TRANSFORMS and "size" in spec:
            spec["size"] = scaled(int(spec["size"]))

    evaluation = out.setdefault("evaluation", {}) or {}
    out["evaluation"] = evaluation
    evaluation["bootstrap"] = min(int(evaluation.get("bootstrap", 1000)), 20)
    out["name"] = f"{out.get('name', 'run')}-smoke"
    return out


def _synthetic_sources(sources: list[dict[str, Any]], run_classes: Sequence[str], synthetic: Path, workdir: Path,
                       seed: int) -> list[dict]:
    """One `csv` source per original source over a disjoint, patient-wise slice of the synthetic images."""
    import pandas as pd

    from cxrlt.io import write_dataframe_csv
    from cxrlt.labels import NIH14, canonical_key

    table = pd.read_csv(synthetic / "labels.csv", dtype={"patient_id": str, "image_id": str})
    patients = table["patient_id"].unique()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(patients))
    slot = dict(zip(patients[order], range(len(patients))))
    index = table["patient_id"].map(slot).to_numpy()
    nih_column = {canonical_key(name): name for name in NIH14}

    specs = []
    for i, spec in enumerate(sources):
        part = table[index % len(sources) == i]
        rank = index[index % len(sources) == i] // len(sources)
        classes = source_classes(spec, run_classes)
        frame = part[["image_id", "path", "patient_id", "view"]].copy()
        for j, name in enumerate(classes):
            if canonical_key(name) == _NO_FINDING:  # what the datasets mean by it: none of the findings
                frame[name] = (part[list(NIH14)] == 0).all(axis=1).astype(int).to_numpy()
                continue
            # A class NIH also has takes NIH's synthetic column; the others borrow one in turn,
            # so every class of every label space has positives of realistic frequency.
            frame[name] = part[nih_column.get(canonical_key(name), NIH14[j % len(NIH14)])].to_numpy()
        splits = _source_splits(spec)
        entry = {"name": "csv", "images": str(synthetic), "path_column": "path", "id_column": "image_id",
                 "patient_column": "patient_id", "view_column": "view", "classes": list(classes)}
        if splits:
            # Patient-wise: a fifth of the patients test, a tenth validation (when the source has one).
            position = rank % 10
            frame["split"] = np.where(position < 2, "test", np.where((position == 2) & ("val" in splits), "val", "train"))
            entry["split_column"] = "split"
        path = workdir / f"source{i}-{spec.get('name', 'source')}.csv"
        write_dataframe_csv(path, frame)
        specs.append({**entry, "labels": str(path)})
    return specs
