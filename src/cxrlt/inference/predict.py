"""Batch inference: probabilities for every image of a store."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from cxrlt.progress import progress_bar

from cxrlt.data.dataset import ImageDataset
from cxrlt.data.transforms import eval_pipeline

if TYPE_CHECKING:
    from cxrlt.models.card import ModelCard


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def predict_probabilities(
    model: torch.nn.Module,
    store: Sequence[np.ndarray],
    image_size: int,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | None = None,
    progress: bool = True,
    description: str = "predict",
    tta: Sequence[str] | str | None = None,
    tta_merge: str = "arithmetic",
    eval_transforms: Sequence = (),
) -> np.ndarray:
    """Sigmoid probabilities (images x classes) of `model` on every image of `store`.

    Each stored image goes through `eval_transforms` (config `augment.eval`
    or `model.json`'s `eval_transforms`, see `eval_pipeline`) and is resized
    to `image_size`. With `tta` (families of `cxrlt.inference.tta`, e.g.
    ["hflip", "multicrop"]), each image is scored on all its views, cut from
    that evaluation view, and the views are merged per class by `tta_merge`
    (arithmetic: mean probability; geometric: sigmoid of the mean logit). A
    forward pass still holds about `batch_size` images.
    """
    from cxrlt.inference.tta import TestTimeAugmentation, ViewDataset, check_merge, merge_logits

    device = device or default_device()
    model = model.to(device).eval()
    check_merge(tta_merge)
    pipeline = eval_pipeline(eval_transforms, image_size)
    augmentation = TestTimeAugmentation(tta, image_size, base=pipeline)
    if augmentation.n_views > 1:
        dataset: torch.utils.data.Dataset = ViewDataset(store, augmentation)
        batch_size = max(1, batch_size // augmentation.n_views)
    else:
        dataset = ImageDataset(store, np.zeros((len(store), 0), np.float32), pipeline)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    outputs = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    with autocast:
        for batch in progress_bar(loader, enabled=progress, desc=description, leave=False):
            if augmentation.n_views > 1:
                images = batch.flatten(0, 1).to(device, non_blocking=True)
                logits = model(images).float().unflatten(0, (batch.shape[0], augmentation.n_views))
                outputs.append(merge_logits(logits, tta_merge).cpu())
            else:
                outputs.append(torch.sigmoid(model(batch[0].to(device, non_blocking=True)).float()).cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), np.float32)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ""}


def find_images(paths: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """(image id, file) for every image file given or found under given folders.

    Folders are searched recursively for PNG, JPEG and DICOM files (DICOMs
    often have no extension); the id is the path relative to the folder, or
    the path as given for a file.
    """
    from cxrlt.errors import InputError

    found: list[tuple[str, Path]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not p.name.startswith("."))
            found += [(str(p.relative_to(path)), p) for p in files]
        elif path.is_file():
            found.append((str(given), path))
        else:
            raise InputError("no such file or folder", path)
    if not found:
        raise InputError(f"no image files (PNG, JPEG, DICOM) found in {', '.join(map(str, paths))}")
    _check_unique_ids(found)
    return found


def _check_unique_ids(found: list[tuple[str, Path]]) -> None:
    """Two files with one id would share a row of the output (and one overlay file name): refuse them."""
    from cxrlt.errors import InputError

    seen: dict[str, Path] = {}
    clashes = []
    for image_id, path in found:
        other = seen.setdefault(image_id, path)
        if other is not path:
            clashes.append(f"{image_id!r} ({other} and {path})")
    if clashes:
        raise InputError(
            f"{len(clashes)} image id(s) name two files: {'; '.join(clashes[:3])}{' ...' if len(clashes) > 3 else ''}; "
            "an image's id is its path inside the folder given (or the path given for a file); give each file "
            "once, and for two folders holding the same names give their common parent folder (the ids then "
            "start with the folder names)"
        )


def readable_images(paths: Sequence[str | Path], skip_bad: bool = False,
                    progress: bool = True) -> tuple[list[tuple[str, Path]], list[tuple[Path, str]]]:
    """(image id, file) of every readable image given or found under given folders, and the unreadable ones.

    An unreadable file is an InputError listing them all, unless `skip_bad`
    leaves them out (then at least one image must remain).
    """
    from cxrlt.data.images import format_bad_images, scan_images
    from cxrlt.errors import InputError

    images = find_images(paths)
    bad = scan_images([path for _, path in images], progress=progress)
    if bad and not skip_bad:
        raise InputError("cannot read these images (nothing was written; --skip-bad leaves them out):\n"
                         + format_bad_images(bad))
    unreadable = {path for path, _ in bad}
    images = [(image_id, path) for image_id, path in images if path not in unreadable]
    if not images:
        raise InputError("no readable image left")
    return images, bad


@dataclass
class Predictor:
    """A saved model ready to score image files: its classes, decision thresholds and test-time augmentation.

    `load` reads a run folder (or its weights file), an exported `model.onnx`
    (run by onnxruntime) or a hub model `hf-hub:OWNER/NAME`; `classes` picks and
    orders columns (an untrained name is scored zero-shot by a query head),
    keeping each trained class's tuned threshold (0.5 for a zero-shot one);
    `tta` "none" switches off the augmentation the run was evaluated with.
    """

    model: torch.nn.Module
    card: "ModelCard"
    classes: list[str]
    thresholds: np.ndarray
    tta: tuple[str, ...]
    tta_merge: str

    @classmethod
    def load(cls, path: str | Path, classes: Sequence[str] | None = None, tta: str | None = None,
             tta_merge: str | None = None, threshold: float | None = None) -> "Predictor":
        from cxrlt.inference.hub import local_model
        from cxrlt.inference.saved_model import load_model
        from cxrlt.inference.tta import parse_tta

        path = local_model(path)
        if path.suffix == ".onnx":
            from cxrlt.inference.export import load_onnx

            model, card = load_onnx(path)
        else:
            model, card = load_model(path)
        names, thresholds = list(card.classes), np.asarray(card.decision_thresholds())
        if classes:
            from cxrlt.labels import canonical_key
            from cxrlt.models.class_scoring import ClassScorer

            model = ClassScorer(model, names, classes)
            tuned = {canonical_key(c): t for c, t in zip(names, thresholds)}
            names, thresholds = list(classes), np.array([tuned.get(canonical_key(c), 0.5) for c in classes])
        if threshold is not None:
            thresholds = np.full(len(names), threshold)
        views = tuple(card.tta) if tta is None else () if tta.strip().lower() == "none" else parse_tta(tta)
        return cls(model, card, names, thresholds, views, tta_merge or card.tta_merge)

    def predict(self, files: Sequence[Path], batch_size: int = 32, progress: bool = True) -> np.ndarray:
        """Probabilities (files x classes), each file decoded and transformed as the run's test images were."""
        from cxrlt.data.store import DecodingStore

        store = DecodingStore(list(files), self.card.stored_size)
        return predict_probabilities(self.model, store, self.card.image_size, batch_size=batch_size,
                                     progress=progress, tta=self.tta, tta_merge=self.tta_merge,
                                     eval_transforms=self.card.eval_transforms)

    def findings(self, probs: np.ndarray) -> list[str]:
        """Per image, the classes at or above their threshold, most probable first, with their probabilities."""
        return [", ".join(f"{self.classes[j]} {row[j]:.2f}" for j in np.argsort(-row) if row[j] >= self.thresholds[j])
                or "no finding above threshold" for row in probs]
