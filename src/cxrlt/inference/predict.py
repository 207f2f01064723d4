"""Batch inference: probabilities for every image of a store."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from cxrlt.progress import progress_bar

from cxrlt.data.dataset import ImageDataset
from cxrlt.data.transforms import eval_pipeline


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
