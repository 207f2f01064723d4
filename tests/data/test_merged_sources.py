"""Merged datasets (seed 004): one label space, unannotated classes missing or zero, per-source sampling weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlt.config import DataConfig, SamplerSpec, parse_config
from cxrlt.data.samplers import build as build_sampler
from cxrlt.data.source_sampling import SourceWeightedSampler
from cxrlt.data.sources import load_table, source_positions
from cxrlt.data.stats import LabelStats
from cxrlt.data.transforms import Pipeline
from cxrlt.errors import ConfigError
from cxrlt.losses import build as build_loss
from cxrlt.registry import LOSSES
from cxrlt.training.data import RunData, StageDataModule


def _csv(path, classes, n, seed, prefix):
    rng = np.random.default_rng(seed)
    rows = ["path,patient_id," + ",".join(classes)]
    for i in range(n):
        labels = (rng.random(len(classes)) < 0.3).astype(int)
        rows.append(f"{prefix}{i}.png,{prefix}p{i // 2}," + ",".join(map(str, labels)))
    path.write_text("\n".join(rows) + "\n")
    return str(path)


@pytest.fixture()
def two_sources(tmp_path):
    """Source 0: 300 images annotating Mass and Nodule; source 1: 100 images annotating Nodule and Hernia."""
    a = _csv(tmp_path / "a.csv", ["Mass", "Nodule"], 300, 0, "a")
    b = _csv(tmp_path / "b.csv", ["Nodule", "Hernia"], 100, 1, "b")
    return [{"name": "csv", "labels": a}, {"name": "csv", "labels": b}]


def _data(sources, **extra):
    return {"sources": sources, "classes": ["Mass", "Nodule", "Hernia"],
            "split": {"method": "random", "val_fraction": 0.1, "test_fraction": 0.1, "seed": 0},
            "images": {"size": 32}, **extra}


def test_unannotated_classes_are_missing_or_zero(two_sources):
    missing = load_table(DataConfig.model_validate(_data(two_sources)))
    zero = load_table(DataConfig.model_validate(_data(two_sources, unannotated="zero")))
    from_b = missing.meta["image_id"].str.startswith("b").to_numpy()
    assert np.isnan(missing.labels[from_b, 0]).all() and np.isnan(missing.labels[~from_b, 2]).all()
    assert not np.isnan(missing.labels[:, 1]).any()
    assert (zero.labels[from_b, 0] == 0).all() and (zero.labels[~from_b, 2] == 0).all()
    assert np.array_equal(source_positions(missing), from_b.astype(int))


@pytest.mark.parametrize("sampler", ["instance", "cycle"])
def test_drawn_share_per_source_matches_the_weights(sampler):
    rng = np.random.default_rng(0)
    labels = (rng.random((1000, 3)) < 0.2).astype(np.float32)
    sources = np.r_[np.zeros(900, int), np.ones(100, int)]  # natural shares 0.9 / 0.1
    make = lambda labels, seed: build_sampler(sampler, labels=labels, seed=seed, rank=0, world_size=1)  # noqa: E731
    weighted = SourceWeightedSampler(labels, sources, [1.0, 3.0], make, num_samples=40_000, seed=5, rank=0,
                                     world_size=1)
    drawn = weighted.global_indices(0)
    share = np.bincount(sources[drawn], minlength=2) / len(drawn)
    assert share == pytest.approx([0.25, 0.75], abs=0.01)  # binomial sd 0.002
    # within source 1, its own sampler decides: every image of it shows up (100 images, 30,000 draws)
    assert set(drawn[sources[drawn] == 1]) == set(range(900, 1000))
    # the stream is a function of (seed, epoch), prefix-consistent, and DDP shards partition it
    assert np.array_equal(weighted.global_indices(0, 500), drawn[:500])
    ranks = [SourceWeightedSampler(labels, sources, [1.0, 3.0], make, num_samples=40_000, seed=5, rank=r,
                                   world_size=2) for r in range(2)]
    assert np.array_equal(np.array(list(ranks[0])), drawn[0::2]) and np.array_equal(np.array(list(ranks[1])), drawn[1::2])
    assert not np.array_equal(weighted.global_indices(1, 500), drawn[:500])


def test_zero_weight_leaves_a_source_out_and_bad_weights_are_refused():
    labels = np.eye(3, dtype=np.float32)[np.arange(60) % 3]
    sources = np.arange(60) % 2
    make = lambda labels, seed: build_sampler("instance", labels=labels, seed=seed, rank=0, world_size=1)  # noqa: E731
    drawn = SourceWeightedSampler(labels, sources, [0, 1], make, num_samples=300, rank=0, world_size=1).global_indices(0)
    assert (sources[drawn] == 1).all()
    with pytest.raises(ConfigError, match="no training image"):
        SourceWeightedSampler(labels, np.zeros(60, int), [1, 1], make, rank=0, world_size=1)
    with pytest.raises(ConfigError, match="source_weights must be >= 0"):
        parse_config({"data": {"sources": [{"name": "csv", "labels": "x.csv"}] * 2, "source_weights": [1, -1]}})


def test_training_loader_draws_sources_by_the_configured_weights(two_sources):
    config = parse_config({"data": _data(two_sources, source_weights=[1, 1])})
    data = RunData(config, load_table(config.data))
    # the source of each row is what load_table recorded: no label file is read again
    for source in two_sources:
        Path(source["labels"]).unlink()
    source_b = np.char.startswith(np.array(data.table.image_ids), "b")
    assert np.array_equal(data.source_index, source_b.astype(int))
    module = StageDataModule(data, 32, 16, SamplerSpec(name="cycle"), Pipeline([], 32), num_workers=0, seed=0)
    sampler = module.train_dataloader().sampler.base
    assert isinstance(sampler, SourceWeightedSampler)
    train_ids = np.array(data.part("train").image_ids)
    natural = np.char.startswith(train_ids.astype(str), "b").mean()
    draws = np.concatenate([sampler.global_indices(epoch) for epoch in range(40)])
    assert natural == pytest.approx(0.25, abs=0.03)
    assert np.char.startswith(train_ids[draws].astype(str), "b").mean() == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_masks_the_unannotated_classes_of_a_merged_table(two_sources, name):
    table = load_table(DataConfig.model_validate(_data(two_sources)))
    train = table.split("train")
    stats = LabelStats.from_table(train)
    try:
        loss = build_loss(name, class_counts=stats, class_names=list(train.classes))
    except ConfigError as exc:  # a loss whose parameters have no default cannot be built bare
        pytest.skip(f"{name} needs parameters: {exc}")
    targets = torch.from_numpy(train.labels[:64]).double()
    logits = torch.randn(targets.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    logits.requires_grad_(True)
    value = loss(logits, targets)
    value.backward()
    observed = ~torch.isnan(targets)
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[~observed] == 0) and (~observed).any()
    # equal to the loss with the unannotated entries given any value and masked explicitly
    assert float(loss(logits.detach(), torch.nan_to_num(targets, nan=1.0), mask=observed)) == pytest.approx(
        float(value.detach()), rel=1e-10)


NIH_HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position"


def test_nih_no_finding_is_a_label_and_only_unannotated_classes_follow_the_policy(tmp_path):
    """Seed 004 merging: NIH annotates No Finding (its normal images), so `unannotated` leaves it alone."""
    nih = tmp_path / "nih.csv"
    nih.write_text("\n".join([NIH_HEADER, "n0.png,No Finding,0,1,50,M,PA", "n1.png,Mass|Nodule,0,2,60,F,PA",
                              "n2.png,No Finding,0,3,70,F,AP", "n3.png,Effusion,0,4,40,M,PA"]) + "\n")
    other = tmp_path / "other.csv"
    other.write_text("path,patient_id,Mass,Fracture\no0.png,p0,1,0\no1.png,p1,0,1\n")
    sources = [{"name": "nih", "labels": str(nih)}, {"name": "csv", "labels": str(other)}]
    classes = ["No Finding", "Mass", "Pleural Effusion", "Fracture"]
    for unannotated, fill in (("zero", 0.0), ("missing", np.nan)):
        table = load_table(DataConfig.model_validate({"sources": sources, "classes": classes,
                                                      "unannotated": unannotated, "split": {"method": "random"}}))
        rows = {image_id: table.labels[i] for i, image_id in enumerate(table.image_ids)}
        # NIH: No Finding read from the file; Fracture is not an NIH finding
        np.testing.assert_array_equal(rows["n0.png"], [1, 0, 0, fill])
        np.testing.assert_array_equal(rows["n1.png"], [0, 1, 0, fill])
        np.testing.assert_array_equal(rows["n2.png"], [1, 0, 0, fill])
        np.testing.assert_array_equal(rows["n3.png"], [0, 0, 1, fill])
        # the csv source annotates Mass and Fracture only
        np.testing.assert_array_equal(rows["o0.png"], [fill, 1, fill, 0])
        np.testing.assert_array_equal(rows["o1.png"], [fill, 0, fill, 1])


@pytest.mark.real_data
def test_normal_nih_images_carry_no_finding_in_the_merged_cxrlt2023_table(shared_data):
    """The merged recipe's NIH source on the real label file: 60,361 normal images, No Finding = 1 exactly there."""
    import pandas as pd

    nih = shared_data / "nih"
    labels = nih / "Data_Entry_2017_v2020.csv.gz"
    source = {"name": "nih", "labels": str(labels), "train_list": str(nih / "train_val_list.txt"),
              "test_list": str(nih / "test_list.txt")}
    table = load_table(DataConfig.model_validate({"sources": [source], "classes": "cxrlt2023",
                                                  "unannotated": "zero"}))
    findings = pd.read_csv(labels, usecols=["Image Index", "Finding Labels"]).set_index("Image Index")
    normal = (findings.loc[table.image_ids, "Finding Labels"] == "No Finding").to_numpy()
    no_finding = table.labels[:, table.classes.index("No Finding")]
    assert int(normal.sum()) == 60_361
    np.testing.assert_array_equal(no_finding, normal.astype(np.float32))
    # classes NIH does not annotate are 0 on every image (`unannotated: zero`), e.g. Fracture
    assert not table.labels[:, table.classes.index("Fracture")].any()
