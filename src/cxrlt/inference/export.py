"""Export a saved model to ONNX or TorchScript, and run an exported ONNX file.

The exported graph's contract (used by other tools): input `image`, float32
(N, 1, H, W), gray levels 0-255 of the image decoded and brought to the
model's input size exactly as `cxrlt predict` does (stored size, evaluation
transforms, resize: all recorded in the sidecar); the gray-level
normalisation happens inside the graph; output `probabilities`, (N, C)
sigmoid probabilities. The batch dimension is dynamic. The ONNX graph has a
second output `logits`, which `cxrlt predict` needs for a geometric TTA
merge. Every export is checked against the eager model before it is kept.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cxrlt.errors import InputError
from cxrlt.io import atomic_path, write_json
from cxrlt.layout import ExportFiles, ModelFiles, RunFiles
from cxrlt.models.backbones import GRAY_MEAN, GRAY_STD
from cxrlt.models.build import CxrModel
from cxrlt.models.card import ModelCard

FORMATS = tuple(ExportFiles.GRAPHS)
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
LOGITS_NAME = "logits"
# The exported graph must reproduce the eager model this closely on a check batch.
TOLERANCE = 1e-4
OPSET = 17


class GrayLevelModel(nn.Module):
    """The exported function: float gray levels 0-255 (N, 1, H, W) -> (probabilities, logits)."""

    def __init__(self, model: CxrModel):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # CxrModel normalises float input in [0, 1]; uint8 input is divided by 255 the same way.
        logits = self.model(image / 255.0)
        return torch.sigmoid(logits), logits


class ProbabilityModel(nn.Module):
    """The TorchScript function: same input, probabilities only (the contract's single output)."""

    def __init__(self, model: CxrModel):
        super().__init__()
        self.model = GrayLevelModel(model)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)[0]


def saved_model_folder(path: str | Path) -> Path:
    """The folder of the saved model at `path` (a finished run folder, an export, or their weights file).

    A run folder without its saved model has not finished: that is said, with how to finish it.
    """
    files = ModelFiles.at(path)
    if files.exist():
        return files.folder
    if RunFiles(files.folder).config.is_file():
        raise InputError(f"the run has not finished: it has no saved model ({files.WEIGHTS} and {files.CARD} are "
                         "written when the last stage ends); finish it with `cxrlt train --resume "
                         f"{files.folder}`, then export", files.folder)
    raise InputError(f"no saved model here: expected {files.WEIGHTS} and {files.CARD} (a finished run folder "
                     "or an export folder)", files.folder)


def export(path: str | Path, fmt: str, out: str | Path) -> ExportFiles:
    """Export the saved model at `path` as `fmt` ("onnx" or "torchscript") into the folder `out`.

    `out` receives the graph, its sidecar, a copy of the saved model (so the
    export is itself a cxrlt model: predict, init_from, push) and the model
    card README. The graph is checked against the eager model first.
    """
    from cxrlt.inference.model_readme import write_model_readme
    from cxrlt.inference.saved_model import export_model, load_model

    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    source = saved_model_folder(path)
    model, card = load_model(source)
    files = ExportFiles(Path(out))
    files.folder.mkdir(parents=True, exist_ok=True)
    example = check_batch(card)
    with tempfile.TemporaryDirectory(dir=files.folder, prefix=".export-") as tmp:
        graph = Path(tmp) / files.GRAPHS[fmt]
        _write_graph(model, card, fmt, example, graph)
        _check_graph(model, card, fmt, graph, example)
        with atomic_path(files.graph(fmt)) as target:
            shutil.move(str(graph), target)
    if source.resolve() != files.folder.resolve():
        export_model(model, files.folder, card)
    write_json(files.sidecar, sidecar(card, fmt))
    write_model_readme(source, files.readme, exported=fmt)
    return files


def check_batch(card: ModelCard, n: int = 2) -> torch.Tensor:
    """Gray levels 0-255 of `n` random images at the model's input size (seeded: exports are reproducible)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, card.image_size, card.image_size), generator=generator).float()


def _write_graph(model: CxrModel, card: ModelCard, fmt: str, example: torch.Tensor, target: Path) -> None:
    try:
        with warnings.catch_warnings():
            # The tracer warns about every Python-level shape computation; the check that follows is what counts.
            warnings.simplefilter("ignore")
            if fmt == "onnx":
                torch.onnx.export(GrayLevelModel(model), (example,), str(target), input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME, LOGITS_NAME], opset_version=OPSET, dynamo=False,
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"},
                                                LOGITS_NAME: {0: "batch"}})
            else:
                traced = torch.jit.trace(ProbabilityModel(model), (example,), check_trace=False)
                torch.jit.save(traced, str(target))
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise InputError(f"head {card.model.head.name!r} ({type(model.head).__name__}) cannot be traced to {fmt}: "
                         f"{type(exc).__name__}: {detail}") from None


def _check_graph(model: CxrModel, card: ModelCard, fmt: str, graph: Path, example: torch.Tensor) -> None:
    """Refuse a graph that does not reproduce the eager model on a batch of another size than it was traced with.

    Tracing records one path through the code; a head whose computation
    depends on the data or the batch size through Python would be frozen
    silently. A third image also checks that the batch dimension is dynamic.
    """
    size = card.image_size
    # Other images than the traced ones, extremes included, and one more of them.
    images = torch.cat([example.flip(0), torch.zeros(1, 1, size, size), torch.full((1, 1, size, size), 255.0)])
    images = images[[0, 2, 1, 3]]
    with torch.inference_mode():
        expected = GrayLevelModel(model.eval())(images)[0].numpy()
    try:
        got = run_graph(graph, fmt, images.numpy())
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        got, why = None, f"the traced graph fails on a batch of {len(images)} ({type(exc).__name__}: {detail})"
    if got is not None:
        gap = float(np.abs(got - expected).max())
        if gap <= TOLERANCE:
            return
        why = (f"the traced graph differs from the model by up to {gap:.2g} (> {TOLERANCE:g}): the head computes "
               "something through Python control flow or data-dependent shapes that tracing froze")
    raise InputError(f"head {card.model.head.name!r} ({type(model.head).__name__}) cannot be exported to {fmt}: {why}")


def run_graph(graph: Path, fmt: str, images: np.ndarray) -> np.ndarray:
    """Probabilities of an exported graph on float gray-level images (N, 1, H, W)."""
    if fmt == "onnx":
        return OnnxModel(graph).probabilities(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream; the file format is ours
        module = torch.jit.load(str(graph))
    with torch.inference_mode():
        return module(torch.from_numpy(images)).numpy()


def sidecar(card: ModelCard, fmt: str) -> dict[str, Any]:
    """Everything a user of the graph alone needs, in plain JSON (no cxrlt required to read it)."""
    size = card.image_size
    return {
        "format": fmt,
        "file": ExportFiles.GRAPHS[fmt],
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["N", 1, size, size],
                  "values": "gray levels 0-255 of the decoded image after the evaluation transforms and resize"},
        "output": {"name": OUTPUT_NAME, "shape": ["N", len(card.classes)], "values": "sigmoid probabilities",
                   **({"extra_outputs": [LOGITS_NAME]} if fmt == "onnx" else {})},
        "normalisation": {"inside_graph": True, "formula": "(image / 255 - mean) / std", "mean": GRAY_MEAN,
                          "std": GRAY_STD},
        "preprocessing": {"stored_size": card.stored_size, "eval_transforms": card.eval_transforms,
                          "input_size": size,
                          "steps": "decode to 8-bit gray, resize to stored_size, apply eval_transforms, resize to "
                                   "input_size (as `cxrlt predict`)"},
        "classes": list(card.classes),
        "thresholds": card.decision_thresholds(),
        "tuned_with_tta": {"views": list(card.tta), "merge": card.tta_merge} if card.tta else None,
        "train_positives": card.train_positives,
        "groups": card.groups,
        "backbone": card.model.backbone,
        "head": card.model.head.name,
    }


class OnnxModel(nn.Module):
    """An exported `model.onnx` run by onnxruntime, usable where `cxrlt predict` uses a model.

    Called on uint8 or float gray-level images, it returns logits (the ONNX
    graph's second output), so prediction and TTA merging stay the code
    paths of a PyTorch model. It has no head to score new class names.
    """

    head = None

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        import onnxruntime

        self.path = Path(path)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise InputError(f"onnxruntime cannot load this file ({type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'})",
                             self.path) from None
        outputs = [o.name for o in self.session.get_outputs()]
        if self.session.get_inputs()[0].name != INPUT_NAME or outputs[:1] != [OUTPUT_NAME]:
            raise InputError(f"not a cxrlt export: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, found "
                             f"{[i.name for i in self.session.get_inputs()]} -> {outputs}", self.path)
        self.has_logits = LOGITS_NAME in outputs

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, np.float32)})[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().cpu().numpy().astype(np.float32)
        if self.has_logits:
            logits = self.session.run([LOGITS_NAME], {INPUT_NAME: array})[0]
        else:
            p = np.clip(self.probabilities(array).astype(np.float64), 1e-12, 1 - 1e-12)
            logits = np.log(p) - np.log1p(-p)
        return torch.from_numpy(np.asarray(logits, np.float32)).to(images.device)


def load_onnx(path: str | Path) -> tuple[OnnxModel, ModelCard]:
    """An exported ONNX file and the model card beside it (the export folder's model.json)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such ONNX file", path)
    card = ModelFiles(path.parent).card
    if not card.is_file():
        raise InputError(f"no {ModelFiles.CARD} beside the ONNX file: `cxrlt predict` needs the export folder "
                         "`cxrlt export` wrote (the card holds the classes, thresholds and preprocessing)", path)
    return OnnxModel(path), ModelCard.read(card)
