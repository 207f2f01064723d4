"""Explanations of a trained model: class maps (CAM, Grad-CAM), overlays, localisation against boxes.

- `cxrlt.explain.cam`: `compute_maps(model, images, classes, method)` for every head type.
- `cxrlt.explain.overlay`: heat-map overlays as PNG (`save_overlay`, `write_overlays`, `example_overlays`).
- `cxrlt.explain.localisation`: pointing game and IoU against NIH `BBox_List_2017` boxes.
"""

from cxrlt.explain.cam import ClassMaps, class_indices, compute_maps
from cxrlt.explain.overlay import example_overlays, save_overlay

__all__ = ["ClassMaps", "class_indices", "compute_maps", "example_overlays", "save_overlay"]
