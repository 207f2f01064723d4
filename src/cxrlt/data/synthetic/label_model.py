"""The label model of the synthetic dataset: NIH label sets, reweighted for a trainable tail.

The model is the empirical distribution of label *sets* in a training split:
each image's set of positive findings ("No Finding" is the empty set) and how
many images carry exactly that set. Drawing whole sets keeps every class
frequency and every co-occurrence (pairs, triples...) of the source, which
drawing classes one by one would not.

The shipped statistics (`cxrlt/resources/nih_label_sets.json`) were fitted
with `fit_label_model` on the official NIH ChestX-ray14 train_val split
(86,524 images, `Data_Entry_2017_v2020.csv` + `train_val_list.txt`).

Tail floor. NIH's rarest class (Hernia, 0.16 %) would have about 8 positives
in 5,000 images: too few to train or to score. `set_weights` therefore
raises every class whose natural frequency is below `min_frequency` to
exactly `min_frequency`, keeps every other class at its natural frequency,
and does so by *reweighting* label sets, never by editing them: the weights
are the distribution closest to the natural one in Kullback-Leibler
divergence whose class marginals equal those targets, found by iterative
proportional fitting (raking) over the 14 binary margins. Sets keep their
contents, so which findings appear together is unchanged and conditional
co-occurrence P(j | i) moves only through the reweighting (for the default
floor, Hernia's sets become about 4.3 times as likely and every other
set about 0.5 % less likely).

Sampling. `sample_label_sets` draws n sets by systematic (low-variance)
resampling of the weights after ordering the sets rarest-class-first, then
shuffles them: every draw has exactly the model's distribution, and the
rarest class's count is within one of n times its target frequency (35 for
the default floor at n = 5,000), instead of varying by about +-6 as
independent draws would.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from cxrlt.errors import ConfigError, InputError

FORMAT = "cxrlt-label-sets/1"
RESOURCE = "nih_label_sets.json"
# Floor on class frequency: the rarest NIH class gets 35 positives in 5,000 images.
if TYPE_CHECKING:
    from cxrlt.data.table import LabelTable

DEFAULT_MIN_FREQUENCY = 0.007
AGE_EDGES = tuple(range(0, 105, 5))
MAX_IMAGES_PER_PATIENT = 4
# Pseudo-count that shrinks a rare label set's AP fraction toward the overall one.
VIEW_PRIOR_STRENGTH = 10.0


def fit_label_model(
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    view: Sequence[str] | None = None,
    sex: Sequence[str] | None = None,
    age: Sequence[float] | None = None,
    patient_id: Sequence[Any] | None = None,
) -> dict:
    """The label-set model (the shipped JSON's content) of a 0/1 training label matrix.

    Args:
        labels: images x classes, 1 positive and 0 negative (no missing values:
            a label set needs every class decided).
        classes: class names in column order (no "|" inside a name).
        view, sex, age, patient_id: optional per-image metadata; when given,
            the model also records the AP count of every label set (`view`,
            "AP" or "PA"), the female fraction of patients (`sex` "F"/"M",
            counted per patient when `patient_id` is given), the age histogram
            in 5-year bins (`age`) and the number of patients with 1, 2, 3 and
            4+ images (`patient_id`; more than 4 counts as 4, since synthetic
            patients have at most 4 images).

    Returns:
        A JSON-ready dict: `format`, `classes`, `n_images`, `class_counts`,
        `sets` (parallel lists `findings` ("|"-joined class names, "" for no
        finding), `count` and, with `view`, `ap_count`; most frequent set
        first) and, with metadata, `metadata`.
    """
    matrix = np.asarray(labels)
    classes = [str(c) for c in classes]
    if matrix.ndim != 2 or matrix.shape[1] != len(classes):
        raise InputError(f"label matrix has shape {matrix.shape}; expected (images, {len(classes)}) for classes {classes}")
    if matrix.shape[0] == 0:
        raise InputError("label matrix has no rows; a label model needs at least one image")
    if not np.isin(matrix, (0, 1)).all():
        raise InputError("labels must all be 0 or 1 (a label set needs every class decided; no missing values)")
    if any("|" in c for c in classes) or len(set(classes)) != len(classes):
        raise InputError(f"class names must be distinct and contain no '|': {classes}")
    n = matrix.shape[0]
    for name, column in (("view", view), ("sex", sex), ("age", age), ("patient_id", patient_id)):
        if column is not None and len(column) != n:
            raise InputError(f"{name} has {len(column)} values for {n} label rows")

    binary = matrix.astype(bool)
    powers = 1 << np.arange(len(classes), dtype=np.int64)
    codes = binary.astype(np.int64) @ powers
    unique, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    names = ["|".join(c for j, c in enumerate(classes) if code >> j & 1) for code in unique.tolist()]
    order = sorted(range(len(unique)), key=lambda k: (-counts[k], names[k]))
    sets: dict[str, list] = {
        "findings": [names[k] for k in order],
        "count": [int(counts[k]) for k in order],
    }
    model: dict[str, Any] = {
        "format": FORMAT,
        "classes": classes,
        "n_images": int(n),
        "class_counts": [int(v) for v in binary.sum(axis=0)],
        "sets": sets,
    }
    metadata: dict[str, Any] = {}
    if view is not None:
        views = np.asarray([str(v).strip().upper() for v in view])
        unknown = sorted(set(views.tolist()) - {"AP", "PA"})
        if unknown:
            raise InputError(f"view must be AP or PA; found {unknown[:5]}")
        ap = np.bincount(inverse, weights=(views == "AP").astype(float), minlength=len(unique))
        sets["ap_count"] = [int(ap[k]) for k in order]
        metadata["ap_fraction"] = float((views == "AP").mean())
    if sex is not None:
        sexes = np.asarray([str(s).strip().upper() for s in sex])
        unknown = sorted(set(sexes.tolist()) - {"F", "M"})
        if unknown:
            raise InputError(f"sex must be F or M; found {unknown[:5]}")
        if patient_id is not None:
            # One vote per patient (their first image), not per image.
            _, first = np.unique(np.asarray([str(p) for p in patient_id]), return_index=True)
            sexes = sexes[first]
        metadata["female_fraction"] = float((sexes == "F").mean())
    if age is not None:
        ages = np.asarray(age, dtype=float)
        if not np.isfinite(ages).all() or ages.min() < 0:
            raise InputError("age must be finite and non-negative")
        hist, _ = np.histogram(np.clip(ages, 0, AGE_EDGES[-1] - 1e-9), bins=AGE_EDGES)
        metadata["age_edges"] = list(AGE_EDGES)
        metadata["age_counts"] = [int(v) for v in hist]
    if patient_id is not None:
        _, per_patient = np.unique(np.asarray([str(p) for p in patient_id]), return_counts=True)
        capped = np.minimum(per_patient, MAX_IMAGES_PER_PATIENT)
        metadata["patients_by_images"] = [int((capped == k).sum()) for k in range(1, MAX_IMAGES_PER_PATIENT + 1)]
    if metadata:
        model["metadata"] = metadata
    return model


def load_label_model(path: str | Path | None = None) -> dict:
    """Read and check a label-set model (the shipped NIH statistics by default)."""
    if path is None:
        text = importlib.resources.files("cxrlt").joinpath("resources", RESOURCE).read_text(encoding="utf-8")
        where: str | Path = f"cxrlt/resources/{RESOURCE}"
        model = json.loads(text)
    else:
        where = Path(path)
        try:
            model = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError("label model file not found", path) from None
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", path, exc.lineno) from None
    _check_model(model, where)
    return model


def _check_model(model: Mapping[str, Any], where: str | Path) -> None:
    if not isinstance(model, Mapping) or model.get("format") != FORMAT:
        raise InputError(f"not a label-set model: expected format {FORMAT!r}", where)
    sets = model.get("sets", {})
    findings, counts = sets.get("findings"), sets.get("count")
    if not isinstance(findings, list) or not isinstance(counts, list) or len(findings) != len(counts) or not findings:
        raise InputError("sets.findings and sets.count must be non-empty lists of equal length", where)
    known = set(model.get("classes", []))
    for name in findings:
        extra = {c for c in name.split("|") if c} - known
        if extra:
            raise InputError(f"label set {name!r} names classes {sorted(extra)} missing from 'classes'", where)


def set_matrix(model: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The model's label sets as a boolean matrix (sets x classes) and their counts."""
    position = {c: j for j, c in enumerate(model["classes"])}
    findings = model["sets"]["findings"]
    members = np.zeros((len(findings), len(position)), dtype=bool)
    for i, name in enumerate(findings):
        for c in filter(None, name.split("|")):
            members[i, position[c]] = True
    return members, np.asarray(model["sets"]["count"], dtype=float)


def natural_frequencies(model: Mapping[str, Any]) -> np.ndarray:
    """Per-class positive fraction in the source split."""
    members, counts = set_matrix(model)
    return counts @ members / counts.sum()


def target_frequencies(model: Mapping[str, Any], min_frequency: float = DEFAULT_MIN_FREQUENCY) -> np.ndarray:
    """Per-class frequency the synthetic labels aim at: max(natural, `min_frequency`)."""
    _check_min_frequency(min_frequency)
    return np.maximum(natural_frequencies(model), min_frequency)


def _check_min_frequency(min_frequency: float) -> None:
    if not (isinstance(min_frequency, (int, float)) and 0.0 <= float(min_frequency) < 0.5):
        raise ConfigError(f"min_frequency must be a number in [0, 0.5); got {min_frequency!r}")


def set_weights(
    model: Mapping[str, Any],
    min_frequency: float = DEFAULT_MIN_FREQUENCY,
    tolerance: float = 1e-12,
    max_sweeps: int = 10_000,
) -> np.ndarray:
    """Probabilities of the label sets after raising rare classes to `min_frequency`.

    Iterative proportional fitting from the natural set frequencies: each
    sweep rescales, class by class, the sets that contain the class and the
    sets that do not so that the class's marginal equals its target
    (`target_frequencies`). The fixed point is the KL-closest distribution to
    the natural one with those marginals. Raises ConfigError when the
    targets cannot be met with the sets the model has (e.g. a floor so high
    that two classes that never co-occur would need more than 100 % together).
    """
    members, counts = set_matrix(model)
    targets = target_frequencies(model, min_frequency)
    weights = counts / counts.sum()
    for _ in range(max_sweeps):
        for j, target in enumerate(targets):
            has = members[:, j]
            current = weights[has].sum()
            if current > 0:
                weights[has] *= target / current
            if current < 1:
                weights[~has] *= (1 - target) / (1 - current)
        if np.abs(weights @ members - targets).max() < tolerance:
            return weights / weights.sum()
    raise ConfigError(
        f"min_frequency={min_frequency} cannot be reached by reweighting the label sets "
        f"(largest marginal error {np.abs(weights @ members - targets).max():.2g} after {max_sweeps} sweeps); "
        "choose a lower min_frequency"
    )


def sample_label_sets(n: int, rng: np.random.Generator, weights: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Indices of `n` label sets drawn by systematic resampling, in shuffled order.

    Sets are ordered by their membership of the classes from rarest to most
    frequent (sets holding the rarest class first), so each rare class's sets
    form few contiguous stretches of the cumulative weights and its count
    stays within a few of n times its frequency (within one for the rarest).
    """
    if n < 0:
        raise ConfigError(f"number of images must be non-negative; got {n}")
    rarity = np.argsort(weights @ members, kind="stable")
    keys = [~members[:, j] for j in rarity[::-1]]  # np.lexsort: last key is primary
    order = np.lexsort(keys) if keys else np.arange(len(weights))
    cumulative = np.cumsum(weights[order])
    cumulative /= cumulative[-1]
    points = (rng.random() + np.arange(n)) / max(n, 1)
    chosen = order[np.minimum(np.searchsorted(cumulative, points, side="right"), len(order) - 1)]
    return rng.permutation(chosen)


def view_probabilities(model: Mapping[str, Any]) -> np.ndarray:
    """P(AP view | label set), shrunk toward the overall AP fraction for rare sets."""
    overall = float(model["metadata"]["ap_fraction"])
    ap = np.asarray(model["sets"]["ap_count"], dtype=float)
    counts = np.asarray(model["sets"]["count"], dtype=float)
    return (ap + VIEW_PRIOR_STRENGTH * overall) / (counts + VIEW_PRIOR_STRENGTH)


def fit_label_model_from_table(table: "LabelTable") -> dict:
    """`fit_label_model` of a label table, with its view, sex, age and patient columns.

    The shipped `nih_label_sets.json` is this function of the NIH official
    train_val split: `cxrlt stats --source nih --labels Data_Entry_2017_v2020.csv.gz
    --train-list train_val_list.txt --test-list test_list.txt --split train --label-model OUT.json`.
    """
    meta = table.meta
    return fit_label_model(table.labels, table.classes, view=meta["view"].tolist(), sex=meta["sex"].tolist(),
                           age=meta["age"].tolist(), patient_id=meta["patient_id"].tolist())
