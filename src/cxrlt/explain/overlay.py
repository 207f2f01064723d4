"""Heat-map overlays: a class map blended over the gray X-ray, saved as PNG.

Each figure has two panels at the model's input resolution: the image as the
model saw it, and the same image with the map blended over it. The blend
weight grows with the map value (alpha = `alpha` x value), so where the map
is low the X-ray shows through unchanged and only the regions that drive
the score are coloured. Optional boxes (ground truth) are outlined in both
panels, and an optional threshold draws the contour of the region used for
IoU.

`write_overlays` renders a batch of (image, class) overlays (the `cxrlt cam`
command), `example_overlays` a few for reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cxrlt.io import safe_name, save_figure

if TYPE_CHECKING:
    from cxrlt.models.card import ModelCard


def blend(image: np.ndarray, heat: np.ndarray, colormap: str = "jet", alpha: float = 0.6) -> np.ndarray:
    """RGB float (H, W, 3) in [0, 1]: gray `image` (uint8) with `heat` ([0, 1]) coloured over it.

    Per-pixel weight alpha x heat: zero heat leaves the X-ray untouched.
    """
    import matplotlib

    if image.shape != heat.shape:
        raise ValueError(f"image {image.shape} and map {heat.shape} differ in size")
    gray = np.repeat((image.astype(np.float32) / 255.0)[..., None], 3, axis=2)
    heat = np.clip(np.nan_to_num(heat.astype(np.float32)), 0.0, 1.0)
    colour = matplotlib.colormaps[colormap](heat)[..., :3].astype(np.float32)
    weight = alpha * heat[..., None]
    return (1.0 - weight) * gray + weight * colour


def save_overlay(
    path: str | Path,
    image: np.ndarray,
    heat: np.ndarray,
    title: str,
    colormap: str = "jet",
    alpha: float = 0.6,
    boxes: Sequence[tuple[float, float, float, float]] = (),
    threshold: float | None = None,
) -> Path:
    """Write the two-panel overlay PNG of `heat` over `image` atomically.

    `image` uint8 (H, W); `heat` (H, W) in [0, 1]; `title` names the image,
    class, probability and method; `boxes` (x0, y0, x1, y1) in pixels of
    `image`, drawn in both panels; `threshold` outlines heat >= threshold.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    # A pyplot-free figure: no GUI backend is needed or switched (notebooks keep theirs).
    figure = Figure(figsize=(9.2, 4.8), layout="constrained")
    axes = figure.subplots(1, 2)
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axes[0].set_title("input", fontsize=10)
    axes[1].imshow(blend(image, heat, colormap, alpha), interpolation="nearest")
    axes[1].set_title("class map", fontsize=10)
    if threshold is not None:
        axes[1].contour(heat, levels=[threshold], colors="white", linewidths=1.0, linestyles="--")
    for axis in axes:
        for x0, y0, x1, y1 in boxes:
            # Pixel i spans [i - 0.5, i + 0.5] in imshow's coordinates.
            axis.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="lime",
                                     linewidth=1.5))
        axis.set_xticks([])
        axis.set_yticks([])
    bar = figure.colorbar(ScalarMappable(Normalize(0, 1), colormap), ax=axes[1], fraction=0.046, pad=0.02)
    bar.set_label("map value (scaled to [0, 1]); opacity grows with it", fontsize=9)
    figure.suptitle(title, fontsize=11)
    return save_figure(path, figure)


@dataclass
class OverlayRecord:
    """One written overlay: the image, the class, its probability, the method and the PNG."""

    image_id: str
    class_name: str
    probability: float
    method: str
    path: Path


def model_input(path: str | Path, card: "ModelCard") -> np.ndarray:
    """uint8 (S, S) image as the saved model sees it: decoded at its stored size, then its evaluation pipeline.

    The same steps as `cxrlt predict` and as the run's validation and test
    (which read the prepared cache at the stored size): the evaluation
    transforms saved in the model card (`augment.eval`), then the resize to the
    input size.
    """
    from cxrlt.data.images import load_image

    return card.eval_pipeline()(load_image(path, card.stored_size))


def _display_path(image_id: str) -> Path:
    """The part of an image id that names its file: the id itself, or the file name for absolute or '..' paths."""
    path = Path(image_id)
    return Path(path.name) if path.is_absolute() or ".." in path.parts else path


def _unique_name(base: str, used: set[str]) -> str:
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}-{n}"
    used.add(name)
    return name


def _probabilities(model: Any, pixels: Any) -> Any:
    """Sigmoid outputs (B, K) of `model` in eval mode (its mode is restored)."""
    import torch

    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.sigmoid(model(pixels.to(next(model.parameters()).device)).float()).cpu()
    finally:
        model.train(training)


def write_overlays(
    model: Any,
    card: "ModelCard",
    images: Sequence[tuple[str, np.ndarray]],
    out_dir: str | Path,
    classes: Sequence[int] | None = None,
    top_k: int = 3,
    method: str = "auto",
    colormap: str = "jet",
    alpha: float = 0.6,
    batch_size: int = 8,
    progress: bool = True,
) -> list[OverlayRecord]:
    """Write one overlay PNG per (image, class) into `out_dir`; return what was written.

    `images`: (image id, uint8 (S, S) model input, see `model_input`).
    `classes`: indices into `card.classes`; None picks, per image, the
    `top_k` classes of highest probability. Files are named
    `<image>_<class>.png`, <image> being the id without its suffix (its
    file name alone for an absolute or '..' path; unsafe characters
    replaced; a repeated name gets a `-2`, `-3`... suffix).
    """
    import torch

    from cxrlt.explain.cam import METHOD_NAMES, compute_maps
    from cxrlt.progress import progress_bar

    names = list(card.classes)
    out_dir = Path(out_dir)
    used: set[str] = set()
    records: list[OverlayRecord] = []
    for start in progress_bar(range(0, len(images), batch_size), enabled=progress, desc="maps", leave=False):
        chunk = images[start:start + batch_size]
        pixels = torch.from_numpy(np.stack([image for _, image in chunk]))[:, None]
        if classes is None:
            probs = _probabilities(model, pixels)
            chosen = [torch.argsort(row, descending=True, stable=True)[:top_k].tolist() for row in probs]
        else:
            chosen = [list(classes)] * len(chunk)
        needed = sorted({k for row in chosen for k in row})
        maps = compute_maps(model, pixels, needed, method=method)
        column = {k: i for i, k in enumerate(needed)}
        for b, ((image_id, image), wanted) in enumerate(zip(chunk, chosen)):
            stem = safe_name(str(_display_path(image_id).with_suffix("")))
            for k in wanted:
                probability = float(maps.probabilities[b, k])
                name = _unique_name(f"{stem}_{safe_name(names[k])}", used)
                title = f"{image_id}: {names[k]}  p = {probability:.3f}  ({METHOD_NAMES[maps.method]})"
                path = save_overlay(out_dir / f"{name}.png", image, maps.maps[b, column[k]].numpy(), title,
                                    colormap, alpha)
                records.append(OverlayRecord(image_id, names[k], probability, maps.method, path))
    return records


def example_overlays(
    model: Any,
    card: "ModelCard",
    images: list[Path],
    out_dir: str | Path,
    classes: Sequence[str] | None = None,
    per_image: int = 2,
) -> list[Path]:
    """Overlay PNGs for a few images (for reports): `classes` by name, else each image's `per_image` top classes.

    Images are read as the model reads them (`model_input`); the method is
    CAM where the head defines it, else Grad-CAM. Returns the PNG paths in
    image order. Raises `InputError` for an unreadable image or an unknown
    class name.
    """
    from cxrlt.explain.cam import class_indices

    indices = None if classes is None else class_indices(list(classes), list(card.classes))
    loaded = [(Path(path).name, model_input(path, card)) for path in images]
    records = write_overlays(model, card, loaded, out_dir, indices, top_k=per_image, progress=False)
    return [record.path for record in records]
