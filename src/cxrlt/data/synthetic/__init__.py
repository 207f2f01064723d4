"""The synthetic long-tailed chest X-ray dataset: the toolkit's built-in default data.

`generate_dataset` writes frontal chest films (`render.render_image`) whose
labels follow the real NIH ChestX-ray14 training split (`label_model`): per
class frequency and co-occurrence of findings as in NIH, with the rarest
classes raised to `min_frequency` so that the tail stays trainable. Each
finding leaves its own visible sign, of varying strength and position, so a
small network trained from scratch can learn all 14 classes while the tail
is still a tail.

Everything is a pure function of the seed: the same `(n_images, image_size,
seed, min_frequency)` gives byte-identical files whatever the number of
workers.

Natural (NIH train_val) and synthetic frequencies at the default floor
(0.7 %): only Hernia changes, 0.163 % -> 0.700 % (8 -> 35 of 5,000 images);
every other class keeps its NIH frequency exactly, from Infiltration
(15.9 %) down to Pneumonia (1.01 %, 50 of 5,000), and "No Finding" goes from
58.4 % to 58.1 % (`label_model.natural_frequencies`, `target_frequencies`).
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from cxrlt.errors import ConfigError
from cxrlt.io import read_json, write_dataframe_csv, write_json
from cxrlt.labels import NIH14
from cxrlt.data.synthetic.label_model import (
    DEFAULT_MIN_FREQUENCY,
    fit_label_model,
    load_label_model,
    natural_frequencies,
    sample_label_sets,
    set_matrix,
    set_weights,
    target_frequencies,
    view_probabilities,
)
from cxrlt.data.synthetic.render import Anatomy, render_image, sample_anatomy

__all__ = [
    "DEFAULT_MIN_FREQUENCY",
    "GENERATOR_VERSION",
    "Anatomy",
    "fit_label_model",
    "generate_dataset",
    "load_label_model",
    "natural_frequencies",
    "plan_dataset",
    "render_image",
    "sample_anatomy",
    "sample_labels",
    "target_frequencies",
]

# Bump whenever rendering or sampling changes what a seed produces, so that a
# dataset made by an older version is not silently reused.
GENERATOR_VERSION = 1
MANIFEST = "synthetic.json"
LABELS = "labels.csv"
IMAGES = "images"
_PARTIAL = ".images.partial"
# Independent random streams derived from the seed.
_LABEL_STREAM, _PATIENT_STREAM, _VIEW_STREAM, _ANATOMY_STREAM, _IMAGE_STREAM = range(5)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer; got {seed!r}")
    return int(seed)


def sample_labels(n: int, seed: int = 0, min_frequency: float = DEFAULT_MIN_FREQUENCY) -> np.ndarray:
    """Labels of `n` synthetic images: a (n, 14) uint8 matrix in NIH-14 order.

    Whole NIH label sets are drawn from the shipped NIH train_val statistics
    after reweighting so that classes rarer than `min_frequency` reach it
    (`label_model.set_weights`; other classes keep their NIH frequency), by
    systematic resampling (`label_model.sample_label_sets`): the rarest
    class's count is within one of n * max(its NIH frequency, min_frequency).
    These are exactly the labels `generate_dataset` gives the same
    `n`, `seed` and `min_frequency`.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"number of images must be a non-negative integer; got {n!r}")
    model = load_label_model()
    members, _ = set_matrix(model)
    chosen = _draw_sets(model, int(n), _check_seed(seed), min_frequency)
    return members[chosen].astype(np.uint8)


def _draw_sets(model: dict, n: int, seed: int, min_frequency: float) -> np.ndarray:
    members, _ = set_matrix(model)
    weights = set_weights(model, min_frequency)
    return sample_label_sets(n, np.random.default_rng([seed, _LABEL_STREAM]), weights, members)


def plan_dataset(n_images: int, seed: int = 0, min_frequency: float = DEFAULT_MIN_FREQUENCY) -> pd.DataFrame:
    """The table of a synthetic dataset without its pixels.

    One row per image: image_id, path (relative to the dataset folder),
    patient_id, view (PA/AP), sex (F/M), age (years), then one 0/1 column per
    NIH-14 class. Patients have 1-4 images (NIH's proportions of patients
    with 1, 2, 3 and 4-or-more images), a sex and an age drawn from NIH's
    distributions (follow-up films add 0-1 year each); the view is drawn per
    image from NIH's AP fraction for that image's label set, shrunk toward
    the overall AP fraction for rare sets, since sicker patients are more
    often filmed AP.
    """
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ConfigError(f"n_images must be a positive integer; got {n_images!r}")
    n, seed = int(n_images), _check_seed(seed)
    model = load_label_model()
    members, _ = set_matrix(model)
    chosen = _draw_sets(model, n, seed, min_frequency)
    meta = model["metadata"]

    rng = np.random.default_rng([seed, _PATIENT_STREAM])
    per_patient = np.asarray(meta["patients_by_images"], dtype=float)
    # enough patients for n images on average, plus slack; truncated below
    mean_images = float(np.arange(1, len(per_patient) + 1) @ per_patient / per_patient.sum())
    counts = rng.choice(np.arange(1, len(per_patient) + 1), size=int(n / mean_images * 1.2) + 10, p=per_patient / per_patient.sum())
    while counts.sum() < n:
        counts = np.concatenate([counts, counts])
    last = int(np.searchsorted(np.cumsum(counts), n))
    counts = counts[: last + 1].copy()
    counts[-1] -= int(counts.sum()) - n
    n_patients = len(counts)
    female = rng.random(n_patients) < float(meta["female_fraction"])
    edges = np.asarray(meta["age_edges"], dtype=float)
    age_p = np.asarray(meta["age_counts"], dtype=float)
    bins = rng.choice(len(age_p), size=n_patients, p=age_p / age_p.sum())
    base_age = np.floor(edges[bins] + rng.random(n_patients) * np.diff(edges)[bins])

    patient = np.repeat(np.arange(n_patients), counts)
    follow_up = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    ageing = rng.integers(0, 2, size=n) * (follow_up > 0)
    age = base_age[patient] + _cumsum_within(ageing, counts)

    view_rng = np.random.default_rng([seed, _VIEW_STREAM])
    ap = view_rng.random(n) < view_probabilities(model)[chosen]

    frame = pd.DataFrame(
        {
            "image_id": [f"syn{p + 1:06d}_{k:03d}" for p, k in zip(patient.tolist(), follow_up.tolist())],
            "patient_id": [f"syn{p + 1:06d}" for p in patient.tolist()],
            "view": np.where(ap, "AP", "PA"),
            "sex": np.where(female[patient], "F", "M"),
            "age": age.astype(int),
        }
    )
    frame.insert(1, "path", IMAGES + "/" + frame["image_id"] + ".png")
    labels = members[chosen].astype(np.uint8)
    for j, name in enumerate(model["classes"]):
        frame[name] = labels[:, j]
    return frame


def _cumsum_within(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each group of `counts` consecutive rows."""
    total = np.cumsum(values)
    starts = np.cumsum(counts) - counts
    offset = np.repeat(total[starts] - values[starts], counts)
    return total - offset


def _label_model_digest() -> str:
    model = load_label_model()
    return hashlib.sha256(repr((model["classes"], model["sets"], model.get("metadata"))).encode()).hexdigest()[:16]


def generate_dataset(
    out: str | Path,
    n_images: int = 5000,
    image_size: int = 128,
    seed: int = 0,
    min_frequency: float = DEFAULT_MIN_FREQUENCY,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic chest X-ray dataset to `out` and return `out`.

    Writes `out/images/<image_id>.png` (8-bit grayscale, image_size square),
    `out/labels.csv` (image_id, path, patient_id, view, sex, age, then one 0/1
    column per NIH-14 class in `cxrlt.labels.NIH14` order; `path` is relative
    to `out`, e.g. "images/syn000001_000.png") and `out/synthetic.json` (the
    parameters). See `plan_dataset` for the table and `render_image` for the
    films. About 3 ms per 128-pixel image on one core (render + PNG).

    Completion is atomic: images go to a temporary folder that is renamed
    into place, and labels.csv is written last, so an interrupted run never
    leaves a labels.csv that looks complete. Calling again with the same
    parameters reuses a complete dataset (returns at once); a folder holding
    a dataset made with other parameters, or other files, is refused unless
    `overwrite=True`. `workers` > 1 renders in that many processes; the
    files are identical either way.
    """
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"workers must be a positive integer; got {workers!r}")
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ConfigError(f"n_images must be a positive integer; got {n_images!r}")
    from cxrlt.data.synthetic.render import MAX_SIZE, MIN_SIZE

    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or not MIN_SIZE <= image_size <= MAX_SIZE:
        raise ConfigError(f"image_size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels; got {image_size!r}")
    out = Path(out)
    target_frequencies(load_label_model(), min_frequency)  # validates min_frequency early
    params = {
        "generator": "cxrlt.data.synthetic",
        "version": GENERATOR_VERSION,
        "n_images": int(n_images),
        "image_size": int(image_size),
        "seed": _check_seed(seed),
        "min_frequency": float(min_frequency),
        "label_model": _label_model_digest(),
    }
    manifest_path, labels_path = out / MANIFEST, out / LABELS
    if _is_complete(out, params):
        return out
    _claim_folder(out, params, overwrite)

    frame = plan_dataset(n_images, seed, min_frequency)
    labels_path.unlink(missing_ok=True)  # from here on the folder is incomplete until labels.csv returns
    write_json(manifest_path, params)
    partial = out / _PARTIAL
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _render_all(frame, partial, int(image_size), params["seed"], int(workers), progress)
    final = out / IMAGES
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    write_dataframe_csv(labels_path, frame)
    return out


def _is_complete(out: Path, params: dict) -> bool:
    """Whether `out` holds a finished dataset made with exactly `params`."""
    manifest_path, labels_path = out / MANIFEST, out / LABELS
    if not (manifest_path.is_file() and labels_path.is_file() and (out / IMAGES).is_dir()):
        return False
    try:
        existing = read_json(manifest_path)
    except Exception:
        return False
    return existing == params


def _claim_folder(out: Path, params: dict, overwrite: bool) -> None:
    """Refuse to write over a different dataset or foreign files unless told to."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; choose another output folder for the synthetic dataset")
    entries = [p.name for p in out.iterdir()]
    if not entries or overwrite:
        return
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        try:
            existing = read_json(manifest_path)
        except Exception:
            existing = None
        if not (out / LABELS).is_file() and isinstance(existing, dict) and existing.get("generator") == params["generator"]:
            return  # an interrupted generation: ours to finish
        if isinstance(existing, dict):
            differences = ", ".join(
                f"{key} {existing.get(key)!r} -> {value!r}" for key, value in params.items() if existing.get(key) != value
            )
            raise ConfigError(
                f"{out} already holds a synthetic dataset made with other parameters ({differences}); "
                "pass overwrite=True (or --overwrite) to replace it, or choose another output folder"
            )
    raise ConfigError(
        f"{out} is not empty and holds no synthetic dataset ({', '.join(sorted(entries)[:5])}"
        f"{'...' if len(entries) > 5 else ''}); choose an empty or new folder, or pass overwrite=True to write into it "
        f"(replacing any {LABELS}, {MANIFEST} and {IMAGES}/ there)"
    )


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _render_all(frame: pd.DataFrame, folder: Path, size: int, seed: int, workers: int, progress: bool) -> None:
    from cxrlt.progress import progress_bar

    n = len(frame)
    labels = frame[list(NIH14)].to_numpy(dtype=np.uint8)
    patients = frame["patient_id"].str.slice(3).astype(int).to_numpy() - 1
    # a patient's body is drawn once, from their sex and their first film's age
    first_age = frame.groupby("patient_id", sort=False)["age"].transform("first").to_numpy()
    jobs = []
    chunk = max(16, min(256, math.ceil(n / (workers * 8))))
    for start, stop in _chunks(n, chunk):
        jobs.append(
            (
                str(folder),
                frame["image_id"].iloc[start:stop].tolist(),
                list(range(start, stop)),
                patients[start:stop].tolist(),
                frame["sex"].iloc[start:stop].tolist(),
                first_age[start:stop].tolist(),
                frame["view"].iloc[start:stop].tolist(),
                labels[start:stop],
                size,
                seed,
            )
        )
    with progress_bar(total=n, unit="img", desc="synthetic images", enabled=progress, leave=False) as bar:
        if workers == 1:
            for job in jobs:
                bar.update(_render_chunk(job))
        else:
            with multiprocessing.get_context().Pool(workers) as pool:
                for done in pool.imap_unordered(_render_chunk, jobs):
                    bar.update(done)


def _render_chunk(job: tuple) -> int:
    """Render and save one chunk of images (runs in a worker process when workers > 1)."""
    from PIL import Image

    folder, ids, indices, patients, sexes, ages, views, labels, size, seed = job
    folder = Path(folder)
    anatomy: Anatomy | None = None
    last_patient = -1
    for image_id, index, patient, sex, age, view, row in zip(ids, indices, patients, sexes, ages, views, labels):
        if patient != last_patient:
            # the patient's first film's age and sex shape their body for all their films
            anatomy = sample_anatomy(np.random.default_rng([seed, _ANATOMY_STREAM, patient]), sex=sex, age=age)
            last_patient = patient
        pixels = render_image(np.random.default_rng([seed, _IMAGE_STREAM, index]), row, size, anatomy=anatomy, view=view)
        Image.fromarray(pixels).save(folder / f"{image_id}.png", format="PNG", compress_level=1)
    return len(ids)
