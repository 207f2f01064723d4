"""Patient-wise splits and grouped iterative-stratified k-fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlt.config import SplitConfig
from cxrlt.data.splits import (
    assign_splits,
    iterative_stratified_group_kfold,
    random_patient_split,
)
from cxrlt.data.table import LabelTable
from cxrlt.errors import ConfigError
from cxrlt.registry import SOURCES


def synthetic(n_patients=600, seed=0, classes=6, with_missing_ids=False, splits=None):
    """Patients with 1-5 images, long-tailed labels (class c has prevalence ~0.3 / 2**c)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 6, n_patients)
    patient = np.repeat(np.arange(n_patients), images)
    prevalence = 0.3 / 2.0 ** np.arange(classes)
    labels = (rng.random((len(patient), classes)) < prevalence).astype(np.float32)
    labels[rng.random(labels.shape) < 0.05] = np.nan
    meta = pd.DataFrame({"image_id": [f"img{i}" for i in range(len(patient))], "path": "x.png",
                         "patient_id": [f"p{p}" for p in patient], "source": "synthetic"})
    if with_missing_ids:
        meta.loc[meta.index[::7], "patient_id"] = pd.NA
    if splits is not None:
        meta["split"] = splits(patient)
    return LabelTable(meta, labels, [f"c{j}" for j in range(classes)])


def parts_per_patient(table):
    frame = pd.DataFrame({"group": table.patient_groups(), "split": table.meta["split"].to_numpy()})
    return frame.groupby("group")["split"].nunique()


# ---------------------------------------------------------------- random
def test_random_split_is_patient_wise_close_to_fractions_and_seeded():
    table = synthetic(2000)
    groups = table.patient_groups()
    parts = random_patient_split(groups, 0.1, 0.2, seed=3)
    per_patient = pd.DataFrame({"g": groups, "s": parts}).drop_duplicates()
    assert per_patient["g"].is_unique  # no patient in two parts
    shares = per_patient["s"].value_counts() / len(per_patient)
    assert shares["val"] == pytest.approx(0.1, abs=0.001)  # patients: exact up to rounding
    assert shares["test"] == pytest.approx(0.2, abs=0.001)
    image_shares = pd.Series(parts).value_counts(normalize=True)
    assert image_shares["val"] == pytest.approx(0.1, abs=0.02)  # images: close
    assert image_shares["test"] == pytest.approx(0.2, abs=0.02)
    np.testing.assert_array_equal(parts, random_patient_split(groups, 0.1, 0.2, seed=3))
    assert not np.array_equal(parts, random_patient_split(groups, 0.1, 0.2, seed=4))
    # the split depends on the patients, not on the row order
    order = np.random.default_rng(0).permutation(len(groups))
    np.testing.assert_array_equal(random_patient_split(groups[order], 0.1, 0.2, seed=3), parts[order])


def test_random_split_rejects_impossible_fractions():
    with pytest.raises(ConfigError, match="sum below 1"):
        random_patient_split(np.array(["a", "b"]), 0.6, 0.5, seed=0)


def test_small_fraction_still_gives_one_patient():
    parts = random_patient_split(np.array(["a", "b", "c", "d", "e"]), 0.05, 0.0, seed=0)
    assert sorted(parts.tolist()) == ["train"] * 4 + ["val"]


# ------------------------------------------------------------------ kfold
def test_kfold_rare_labels_are_spread_exactly():
    # 10 single-image patients: label 0 on 5 of them, label 1 on 10. The
    # rarest label is placed first, one per fold; then each fold wants 2 of
    # label 1 and gets exactly 2.
    labels = np.zeros((10, 2), dtype=np.float32)
    labels[:5, 0] = 1
    labels[:, 1] = 1
    folds = iterative_stratified_group_kfold(labels, np.arange(10).astype(str), 5, seed=0)
    assert np.bincount(folds[:5], minlength=5).tolist() == [1, 1, 1, 1, 1]
    assert np.bincount(folds, minlength=5).tolist() == [2, 2, 2, 2, 2]


def test_kfold_patients_never_span_folds_and_labels_are_balanced():
    table = synthetic(1500, seed=1, with_missing_ids=True)
    groups = table.patient_groups()
    folds = iterative_stratified_group_kfold(table.labels, groups, 5, seed=0)
    assert pd.DataFrame({"g": groups, "f": folds}).groupby("g")["f"].nunique().max() == 1
    positives = np.nan_to_num(table.labels)
    per_fold = np.stack([positives[folds == k].sum(axis=0) for k in range(5)])
    share = positives.sum(axis=0) / 5
    # far tighter than a random grouped assignment of these sizes would give
    assert np.abs(per_fold / share - 1).max() < 0.1
    sizes = np.bincount(folds, minlength=5)
    assert np.abs(sizes / (len(folds) / 5) - 1).max() < 0.05
    np.testing.assert_array_equal(folds, iterative_stratified_group_kfold(table.labels, groups, 5, seed=0))


def test_kfold_needs_enough_patients():
    with pytest.raises(ConfigError, match="cannot cut 2 patients into 5 folds"):
        iterative_stratified_group_kfold(np.ones((4, 1)), np.array(["a", "a", "b", "b"]), 5, seed=0)


# ---------------------------------------------------------- assign_splits
def test_assign_random_kfold_and_source_are_patient_wise():
    table = synthetic(800, seed=2, with_missing_ids=True)
    for split in (SplitConfig(method="random"), SplitConfig(method="kfold", fold=2)):
        assigned = assign_splits(table, split)
        assert parts_per_patient(assigned).max() == 1, split.method
        assert set(assigned.meta["split"]) == {"train", "val", "test"}
    source = synthetic(800, seed=2, splits=lambda p: np.where(p % 4 == 0, "test", "train"))
    assigned = assign_splits(source, SplitConfig(method="source", val_fraction=0.25))
    assert parts_per_patient(assigned).max() == 1
    before, after = source.meta["split"], assigned.meta["split"]
    assert (after[before == "test"] == "test").all()  # the source's test set is kept
    train_patients = source.meta.loc[before == "train", "patient_id"].nunique()
    val_patients = assigned.meta.loc[after == "val", "patient_id"].nunique()
    assert val_patients == round(0.25 * train_patients)


def test_kfold_folds_partition_the_non_test_images():
    table = synthetic(500, seed=3, splits=lambda p: np.where(p % 5 == 0, "test", "train"))
    vals = [assign_splits(table, SplitConfig(method="kfold", folds=4, fold=k)).meta["split"] for k in range(4)]
    is_val = np.stack([(v == "val").to_numpy() for v in vals])
    test = (table.meta["split"] == "test").to_numpy()
    assert (is_val.sum(axis=0) == np.where(test, 0, 1)).all()  # each non-test image is validation exactly once
    for v in vals:
        assert ((v == "test").to_numpy() == test).all()


def test_source_method_keeps_a_source_validation_set():
    table = synthetic(100, seed=4, splits=lambda p: np.select([p % 5 == 0, p % 5 == 1], ["test", "val"], "train"))
    assigned = assign_splits(table, SplitConfig(method="source", val_fraction=0.5))
    assert assigned.meta["split"].tolist() == table.meta["split"].tolist()


def test_same_patient_id_in_two_sources_is_two_patients():
    meta = pd.DataFrame({"image_id": ["a", "b"], "path": "x", "patient_id": ["1", "1"], "source": ["nih", "chexpert"]})
    table = LabelTable(meta, np.zeros((2, 1)), ["c"])
    assert len(set(table.patient_groups())) == 2


# ------------------------------------------------------------- real data
@pytest.mark.real_data
def test_real_nih_kfold_is_stratified(shared_data):
    table = SOURCES.build("nih", labels=shared_data / "nih" / "Data_Entry_2017_v2020.csv.gz", no_finding=True)
    groups = table.patient_groups()
    folds = iterative_stratified_group_kfold(table.labels, groups, 5, seed=0)
    assert pd.DataFrame({"g": groups, "f": folds}).groupby("g")["f"].nunique().max() == 1
    per_fold = np.stack([table.labels[folds == k].sum(axis=0) for k in range(5)])
    deviation = np.abs(per_fold / (table.labels.sum(axis=0) / 5) - 1).max(axis=0)
    worst = int(np.argmax(deviation))
    print(f"worst class {table.classes[worst]}: {100 * deviation[worst]:.2f}% from an even share")
    assert deviation.max() <= 0.10
