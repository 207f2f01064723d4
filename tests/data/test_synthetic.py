"""The synthetic dataset: label model, sampling, rendering and generation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrlt.data.synthetic import (
    DEFAULT_MIN_FREQUENCY,
    fit_label_model,
    generate_dataset,
    load_label_model,
    natural_frequencies,
    plan_dataset,
    render_image,
    sample_anatomy,
    sample_labels,
    target_frequencies,
)
from cxrlt.data.synthetic import label_model as lm
from cxrlt.errors import ConfigError, InputError
from cxrlt.labels import NIH14

HERNIA = NIH14.index("Hernia")


# ------------------------------------------------------------------ label model
def test_fit_label_model_counts_sets_and_metadata_by_hand():
    classes = ["A", "B", "C"]
    labels = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]])
    model = fit_label_model(
        labels,
        classes,
        view=["PA", "AP", "AP", "PA", "PA", "ap", "PA"],
        sex=["F", "F", "M", "M", "M", "M", "F"],
        age=[3, 4, 99, 100, 47, 47.5, 50],
        patient_id=[1, 1, 2, 2, 2, 3, 4],
    )
    assert model["classes"] == classes
    assert model["n_images"] == 7
    assert model["class_counts"] == [3, 2, 1]
    # most frequent set first, ties by name: "" (3), "A|B" (2), then "A" and "C" (1 each)
    assert model["sets"]["findings"] == ["", "A|B", "A", "C"]
    assert model["sets"]["count"] == [3, 2, 1, 1]
    assert model["sets"]["ap_count"] == [1, 1, 1, 0]
    meta = model["metadata"]
    assert meta["ap_fraction"] == pytest.approx(3 / 7)
    assert meta["female_fraction"] == pytest.approx(2 / 4)  # patients 1 and 4 of 4
    counts = meta["age_counts"]
    # [0, 5): 3, 4; [45, 50): 47, 47.5; [50, 55): 50; [95, 100]: 99 and 100 (the last bin is closed)
    assert counts[0] == 2 and counts[9] == 2 and counts[10] == 1 and counts[19] == 2 and sum(counts) == 7
    assert meta["patients_by_images"] == [2, 1, 1, 0]


def test_fit_label_model_caps_patients_at_four_images():
    labels = np.zeros((7, 1), dtype=int)
    model = fit_label_model(labels, ["A"], patient_id=[1] * 6 + [2])
    assert model["metadata"]["patients_by_images"] == [1, 0, 0, 1]


@pytest.mark.parametrize(
    "labels, classes",
    [
        (np.array([[0, np.nan]]), ["A", "B"]),
        (np.array([[0, 2]]), ["A", "B"]),
        (np.array([[0, 1]]), ["A"]),
        (np.array([[0, 1]]), ["A|B", "C"]),
        (np.zeros((0, 2)), ["A", "B"]),
    ],
)
def test_fit_label_model_rejects_bad_matrices(labels, classes):
    with pytest.raises(InputError):
        fit_label_model(labels, classes)


def test_shipped_model_is_consistent():
    model = load_label_model()
    members, counts = lm.set_matrix(model)
    assert model["classes"] == list(NIH14)
    assert counts.sum() == model["n_images"] == 86524  # official train_val list
    np.testing.assert_array_equal(counts @ members, model["class_counts"])
    assert len(set(model["sets"]["findings"])) == len(model["sets"]["findings"])


@pytest.mark.real_data
def test_shipped_model_refits_from_the_nih_label_file(shared_data, tmp_path):
    from cxrlt.cli import main

    nih = shared_data / "nih"
    out = tmp_path / "label_model.json"
    assert main(["stats", "--source", "nih", "--labels", str(nih / "Data_Entry_2017_v2020.csv.gz"),
                 "--train-list", str(nih / "train_val_list.txt"), "--test-list", str(nih / "test_list.txt"),
                 "--split", "train", "--label-model", str(out)]) == 0
    refit = json.loads(out.read_text())
    shipped = load_label_model()
    for key in ("classes", "n_images", "class_counts", "sets", "metadata"):
        assert refit[key] == shipped[key], key
    # Hernia is NIH's rarest class: 141 of 86,524 train_val images
    assert refit["class_counts"][HERNIA] == 141


# ------------------------------------------------------------- reweighting
def test_set_weights_hit_targets_and_are_the_kl_projection():
    model = load_label_model()
    members, counts = lm.set_matrix(model)
    natural = counts / counts.sum()
    weights = lm.set_weights(model, DEFAULT_MIN_FREQUENCY)
    targets = target_frequencies(model, DEFAULT_MIN_FREQUENCY)
    np.testing.assert_allclose(weights @ members, targets, atol=1e-10)
    assert weights.sum() == pytest.approx(1.0)
    # only Hernia is below the default floor; every other class keeps its NIH frequency
    nat = natural_frequencies(model)
    assert np.flatnonzero(nat < DEFAULT_MIN_FREQUENCY).tolist() == [HERNIA]
    np.testing.assert_allclose(np.delete(targets, HERNIA), np.delete(nat, HERNIA))
    assert targets[HERNIA] == DEFAULT_MIN_FREQUENCY
    # the minimum-KL distribution under marginal constraints is exponential-family:
    # log(w / w0) is an affine function of the set's class indicators
    design = np.column_stack([np.ones(len(weights)), members.astype(float)])
    log_ratio = np.log(weights / natural)
    coef, *_ = np.linalg.lstsq(design, log_ratio, rcond=None)
    np.testing.assert_allclose(design @ coef, log_ratio, atol=1e-8)


def test_zero_floor_keeps_the_natural_distribution():
    model = load_label_model()
    _, counts = lm.set_matrix(model)
    np.testing.assert_allclose(lm.set_weights(model, 0.0), counts / counts.sum(), rtol=1e-12)


@pytest.mark.parametrize("bad", [-0.01, 0.5, "0.1", None])
def test_min_frequency_is_validated(bad):
    with pytest.raises(ConfigError):
        sample_labels(10, 0, bad)


def test_unreachable_floor_is_a_config_error():
    # A and B never co-occur and B is in 98 % of images: raising A to 3 % would
    # need P(A) + P(B) = 101 %
    labels = np.array([[1, 0]] + [[0, 1]] * 98 + [[0, 0]])
    model = fit_label_model(labels, ["A", "B"])
    np.testing.assert_allclose(lm.set_weights(model, 0.015) @ lm.set_matrix(model)[0], [0.015, 0.98], atol=1e-10)
    with pytest.raises(ConfigError, match="cannot be reached"):
        lm.set_weights(model, 0.03, max_sweeps=2000)


# ------------------------------------------------------------------ sampling
def test_sampled_frequencies_match_targets_within_sampling_error():
    n = 200_000
    labels = sample_labels(n, seed=3)
    assert labels.shape == (n, 14) and labels.dtype == np.uint8
    targets = target_frequencies(load_label_model())
    observed = labels.mean(axis=0)
    sigma = np.sqrt(targets * (1 - targets) / n)
    assert np.all(np.abs(observed - targets) < 4 * sigma), (observed - targets) / sigma


def test_sampled_cooccurrence_follows_nih():
    model = load_label_model()
    members, counts = lm.set_matrix(model)
    natural_pair = (members.T * counts) @ members  # co-occurrence counts in NIH train_val
    labels = sample_labels(200_000, seed=4).astype(np.int64)
    pair = labels.T @ labels
    checked = 0
    for i in range(14):
        for j in range(14):
            if i == j or natural_pair[i, j] < 100:
                continue
            nih = natural_pair[i, j] / natural_pair[i, i]
            ours = pair[i, j] / pair[i, i]
            sigma = np.sqrt(nih * (1 - nih) / pair[i, i])
            assert abs(ours - nih) < 0.01 + 4 * sigma, (NIH14[i], NIH14[j], nih, ours)
            checked += 1
    assert checked > 80
    # reweighting keeps what Hernia co-occurs with: P(Atelectasis | Hernia) is NIH's
    ate = NIH14.index("Atelectasis")
    nih = natural_pair[HERNIA, ate] / natural_pair[HERNIA, HERNIA]
    assert pair[HERNIA, ate] / pair[HERNIA, HERNIA] == pytest.approx(nih, abs=0.04)


@pytest.mark.parametrize("seed", [0, 1, 2, 17])
def test_rarest_class_count_in_5000_is_within_one_of_the_floor(seed):
    labels = sample_labels(5000, seed=seed)
    assert abs(int(labels[:, HERNIA].sum()) - 35) <= 1


def test_sample_labels_is_deterministic():
    np.testing.assert_array_equal(sample_labels(500, 5), sample_labels(500, 5))
    assert not np.array_equal(sample_labels(500, 5), sample_labels(500, 6))


def test_plan_patients_views_and_labels():
    plan = plan_dataset(3000, seed=2)
    assert list(plan.columns) == ["image_id", "path", "patient_id", "view", "sex", "age", *NIH14]
    assert plan["image_id"].is_unique
    assert (plan["path"] == "images/" + plan["image_id"] + ".png").all()
    per_patient = plan.groupby("patient_id").size()
    assert per_patient.min() >= 1 and per_patient.max() <= 4 and (per_patient > 1).sum() > 300
    # one sex per patient; ages never decrease along a patient's films
    assert (plan.groupby("patient_id")["sex"].nunique() == 1).all()
    assert (plan.groupby("patient_id")["age"].apply(lambda a: a.is_monotonic_increasing)).all()
    assert set(plan["view"]) == {"AP", "PA"} and set(plan["sex"]) == {"F", "M"}
    assert plan["age"].between(0, 101).all() and 40 < plan["age"].mean() < 53  # NIH mean 46.6
    np.testing.assert_array_equal(plan[list(NIH14)].to_numpy(), sample_labels(3000, 2))
    # sicker films are more often AP, as in NIH: compare images with and without a finding
    sick = plan[list(NIH14)].sum(axis=1) > 0
    assert (plan["view"][sick] == "AP").mean() > (plan["view"][~sick] == "AP").mean()


# ------------------------------------------------------------------ rendering
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(size) + 0.5) / size * 2 - 1
    return np.meshgrid(centres, centres)  # x (columns), y (rows)


def test_render_is_deterministic_and_seed_dependent():
    a = render_image(np.random.default_rng(7), ["Effusion", "Nodule"], 96)
    b = render_image(np.random.default_rng(7), ["Effusion", "Nodule"], 96)
    c = render_image(np.random.default_rng(8), ["Effusion", "Nodule"], 96)
    assert a.dtype == np.uint8 and a.shape == (96, 96)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 2


@pytest.mark.parametrize("size", [16, 64, 1024])
def test_render_any_size(size):
    image = render_image(np.random.default_rng(0), [], size)
    assert image.shape == (size, size) and 40 < image.mean() < 230


def test_render_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError):
        render_image(rng, ["Pneumothorax", "Flu"], 64)
    with pytest.raises(ConfigError):
        render_image(rng, [], 8)
    with pytest.raises(ConfigError):
        render_image(rng, [], 64, view="LAT")
    with pytest.raises(ConfigError):
        render_image(rng, {"Mass": 3.0}, 64)


def test_films_have_chest_structure():
    """Lungs are dark, mediastinum and abdomen bright, the heart extends to the image right."""
    size = 128
    x, y = _grid(size)
    lungs = (np.abs(np.abs(x) - 0.45) < 0.12) & (np.abs(y + 0.25) < 0.15)
    mediastinum = (np.abs(x) < 0.05) & (np.abs(y + 0.3) < 0.15)
    abdomen = (np.abs(x) < 0.5) & (y > 0.8)
    # at heart level the image right (patient's left) is mostly heart, its mirror mostly lung
    heart_side = (np.abs(x - 0.25) < 0.07) & (np.abs(y - 0.18) < 0.06)
    heart_mirror = (np.abs(x + 0.35) < 0.07) & (np.abs(y - 0.18) < 0.06)
    for seed in range(12):
        image = render_image(np.random.default_rng(seed), [], size).astype(float)
        assert image[lungs].mean() + 60 < image[mediastinum].mean()
        assert image[lungs].mean() + 60 < image[abdomen].mean()
        assert image[heart_side].mean() > image[heart_mirror].mean() + 40


# the region each finding's sign must fall in (x to the image right, y down)
def _region(name, x, y):
    regions = {
        # plates and collapse low in one lung; the volume loss also shifts the mediastinum
        "Atelectasis": (y > -0.8) & (np.abs(x) < 0.95) & (y < 0.75),
        "Cardiomegaly": (x > -0.55) & (x < 0.8) & (y > -0.3) & (y < 0.75),
        "Effusion": (y > -0.05) & (np.abs(x) > 0.1),
        "Infiltration": (np.abs(x) > 0.08) & (y < 0.7),
        "Mass": (np.abs(x) > 0.08) & (y > -0.75) & (y < 0.5),
        "Nodule": (np.abs(x) > 0.08) & (y > -0.75) & (y < 0.5),
        "Pneumonia": (np.abs(x) > 0.08) & (y > -0.6) & (y < 0.6),
        "Pneumothorax": (np.abs(x) > 0.15) & (y < 0.55),
        "Consolidation": (np.abs(x) > 0.08) & (y < 0.65),
        "Edema": (np.abs(x) > 0.08) & (np.abs(x) < 0.9) & (y < 0.65),
        "Emphysema": (y > -0.9),
        # peripheral reticulation, and raised domes from the volume loss
        "Fibrosis": ((np.abs(x) > 0.3) | (y > 0.1)) & (y < 0.75),
        "Pleural_Thickening": ((np.abs(x) > 0.45) | (y < -0.4)) & (y < 0.5),
        "Hernia": (np.abs(x) < 0.4) & (y > -0.05) & (y < 0.65),
    }
    return regions[name]


@pytest.mark.parametrize("name", NIH14)
def test_each_sign_changes_pixels_in_its_region(name):
    size = 128
    x, y = _grid(size)
    for seed in range(3):
        anatomy = sample_anatomy(np.random.default_rng(100 + seed))
        base = render_image(np.random.default_rng(seed), [], size, anatomy=anatomy).astype(float)
        sign = render_image(np.random.default_rng(seed), {name: 1.0}, size, anatomy=anatomy).astype(float)
        diff = sign - base
        mass = np.abs(diff)
        assert mass.sum() > 300, f"{name}: sign too faint ({mass.sum():.0f})"
        inside = mass[_region(name, x, y)].sum() / mass.sum()
        assert inside > 0.9, f"{name}: only {inside:.0%} of the change is in its region"
        if name == "Emphysema":
            lungs = (np.abs(np.abs(x) - 0.45) < 0.12) & (np.abs(y + 0.2) < 0.2)
            assert diff[lungs].mean() < -10  # hyperlucent
        elif name == "Pneumothorax":
            assert diff.min() < -15  # a darker rim of pleural air
        elif name == "Hernia":
            assert diff.min() < -15 and diff.max() > 5  # gas inside a soft-tissue sac
        elif name == "Atelectasis":
            # opacities and a raised diaphragm outweigh the darkening from the mediastinal shift
            assert diff[diff > 0].sum() > 1.5 * -diff[diff < 0].sum()
        elif name == "Edema":
            left, right = mass[x < 0].sum(), mass[x > 0].sum()
            assert min(left, right) > 0.25 * (left + right)  # bilateral
        else:
            assert diff[diff > 0].sum() > 3 * -diff[diff < 0].sum()  # an opacity
    # a nodule is small and a mass larger
    if name in ("Nodule", "Mass"):
        changed = (np.abs(diff) > 10).mean()
        assert (changed < 0.02) if name == "Nodule" else (0.01 < changed < 0.08)


def test_strength_scales_the_sign():
    anatomy = sample_anatomy(np.random.default_rng(1))
    base = render_image(np.random.default_rng(0), [], 96, anatomy=anatomy).astype(float)
    faint = render_image(np.random.default_rng(0), {"Cardiomegaly": 0.2}, 96, anatomy=anatomy).astype(float)
    clear = render_image(np.random.default_rng(0), {"Cardiomegaly": 1.0}, 96, anatomy=anatomy).astype(float)
    assert 0 < np.abs(faint - base).sum() < 0.5 * np.abs(clear - base).sum()


def test_finding_vector_and_names_agree():
    vector = np.zeros(14, dtype=np.uint8)
    vector[[2, 5]] = 1
    a = render_image(np.random.default_rng(3), vector, 64)
    b = render_image(np.random.default_rng(3), ["Effusion", "Nodule"], 64)
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- generation
def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_generate_is_deterministic_across_workers(tmp_path):
    one = generate_dataset(tmp_path / "one", n_images=20, image_size=32, seed=5, progress=False)
    two = generate_dataset(tmp_path / "two", n_images=20, image_size=32, seed=5, workers=2, progress=False)
    assert _digest(one) == _digest(two)
    other = generate_dataset(tmp_path / "other", n_images=20, image_size=32, seed=6, progress=False)
    assert _digest(other)["images/syn000001_000.png"] != _digest(one)["images/syn000001_000.png"]
    frame = pd.read_csv(one / "labels.csv")
    assert len(frame) == 20 and len(list((one / "images").glob("*.png"))) == 20
    assert all((one / p).is_file() for p in frame["path"])
    np.testing.assert_array_equal(frame[list(NIH14)].to_numpy(), sample_labels(20, 5))
    assert json.loads((one / "synthetic.json").read_text())["seed"] == 5


def test_generate_reuses_refuses_and_overwrites(tmp_path):
    out = tmp_path / "data"
    generate_dataset(out, n_images=6, image_size=24, seed=1, progress=False)
    stamp = (out / "labels.csv").stat().st_mtime_ns
    generate_dataset(out, n_images=6, image_size=24, seed=1, progress=False)
    assert (out / "labels.csv").stat().st_mtime_ns == stamp  # reused, not rewritten
    with pytest.raises(ConfigError, match="other parameters.*seed 1 -> 2"):
        generate_dataset(out, n_images=6, image_size=24, seed=2, progress=False)
    generate_dataset(out, n_images=4, image_size=24, seed=2, progress=False, overwrite=True)
    assert len(pd.read_csv(out / "labels.csv")) == 4 and len(list((out / "images").iterdir())) == 4
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        generate_dataset(foreign, n_images=4, image_size=24, progress=False)


def test_interrupted_generation_leaves_no_labels_and_resumes(tmp_path, monkeypatch):
    import cxrlt.data.synthetic as synthetic

    out = tmp_path / "data"
    calls = {"n": 0}
    original = synthetic.render_image

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_image", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(out, n_images=8, image_size=24, seed=0, progress=False)
    assert not (out / "labels.csv").exists() and not (out / "images").exists()
    monkeypatch.setattr(synthetic, "render_image", original)
    generate_dataset(out, n_images=8, image_size=24, seed=0, progress=False)
    assert len(pd.read_csv(out / "labels.csv")) == 8
    assert _digest(out) == _digest(generate_dataset(tmp_path / "fresh", n_images=8, image_size=24, seed=0, progress=False))
