"""The model card for people and for the Hugging Face hub: `README.md` of a run folder or an export.

It is written from the files of the saved model's folder (`model.json`,
and for a run folder `config.yaml`, `environment.json`, `metrics.json`),
never from memory, so a card written again later says the same. The YAML
front matter is the hub's model-card metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cxrlt.io import read_json, write_text
from cxrlt.layout import RunFiles
from cxrlt.models.card import ModelCard

# The methods cxrlt implements, by the seed papers' titles; a card cites those its model uses.
SEED_PAPERS = {
    "aggregate": "An Aggregate Method for Thorax Diseases Classification",
    "bag_of_tricks": "Bag of Tricks for Long-Tailed Multi-Label Classification on Chest X-Rays",
    "augmentation_ensemble": "Advanced Augmentation and Ensemble Approaches for Classifying Long-Tailed Multi-Label "
                             "Chest X-Rays",
    "mlt": "Multi-label long-tailed disease recognition on Chest X-ray images",
}
# What each seed contributed, as a card names it.
_USES = {
    "aggregate": "the aggregate method (experts with multi-head attention, class-balanced losses)",
    "bag_of_tricks": "the long-tailed training tricks (re-sampling, re-weighting losses, decoupled stages, "
                     "tau normalisation)",
    "augmentation_ensemble": "augmentation, test-time augmentation and ensembling",
    "mlt": "the CXR-LT task definition (head / medium / tail groups, label-aware heads)",
}


def cited_papers(head: str, loss: str, stages: int, tta: bool) -> list[str]:
    """The seed papers whose methods a model uses (the task paper always)."""
    keys = ["mlt"]
    if head == "experts":
        keys.append("aggregate")
    if loss != "bce" or stages > 1:
        keys.append("bag_of_tricks")
    if tta:
        keys.append("augmentation_ensemble")
    return keys


def model_readme(folder: str | Path, exported: str | None = None) -> str:
    """The Markdown model card of the saved model in `folder` (a run folder or an export)."""
    folder = Path(folder)
    files = RunFiles(folder)
    card = ModelCard.read(folder)
    config = _read_yaml(files.config)
    metrics = read_json(files.headline_metrics) if files.headline_metrics.is_file() else None
    environment = read_json(files.environment) if files.environment.is_file() else {}
    loss = (config.get("loss") or {}).get("name", "unknown") if config else "unknown"
    sampler = ((config.get("train") or {}).get("sampler") or {}).get("name", "unknown") if config else "unknown"
    stages = (config.get("stages") or [{"name": "single"}]) if config else []
    papers = cited_papers(card.model.head.name, loss, len(stages), bool(card.tta))
    sources = [s.get("name") for s in ((config.get("data") or {}).get("sources") or [])] if config else []
    metadata = {
        "library_name": "cxrlt",
        "license": "other",
        "tags": ["chest-x-ray", "multi-label", "long-tailed", "image-classification", "cxrlt", "research-only"],
        "pipeline_tag": "image-classification",
    }
    if metrics:
        metadata["model-index"] = [{"name": config.get("name", folder.name) if config else folder.name, "results": [{
            "task": {"type": "image-classification", "name": "multi-label chest X-ray classification"},
            "metrics": [{"type": "roc_auc", "name": "mean AUC", "value": _round(metrics["mean"].get("auc"))},
                        {"type": "mean_average_precision", "name": "mAP", "value": _round(metrics["mean"].get("ap"))}],
        }]}]
    lines = ["---", yaml.safe_dump(metadata, sort_keys=False).strip(), "---", "",
             f"# {config.get('name', folder.name) if config else folder.name}: chest X-ray findings "
             f"({len(card.classes)} classes)", "",
             "Multi-label classifier of findings on chest radiographs, trained with cxrlt.", "",
             "## Intended use", "",
             "**For research only. Not a medical device; not for diagnosis, triage or any clinical decision.** "
             "It is meant for studying long-tailed, multi-label recognition on chest X-rays, for comparing methods "
             "and as a starting point for fine-tuning. Its probabilities are uncalibrated unless the calibration "
             "below says otherwise, its thresholds were tuned on one validation split, and it has not been "
             "validated on any population other than its test split.", "",
             "## Model", "",
             f"- backbone: `{card.model.backbone}` (input {card.image_size} x {card.image_size}, "
             f"{card.model.in_chans} channel(s)), pooling `{card.model.pooling.name}`, "
             f"head `{card.model.head.name}`",
             f"- loss: `{loss}`; sampler: `{sampler}`",
             f"- stages: {', '.join(str(s.get('name')) for s in stages) if stages else 'unknown'}",
             f"- images: decoded to 8-bit gray at {card.stored_size} px, evaluation transforms "
             f"{[t.get('name') for t in card.eval_transforms] or 'none'}, resized to {card.image_size} px",
             f"- test-time augmentation the thresholds were tuned with: {'+'.join(card.tta) or 'none'}",
             f"- classes: {', '.join(card.classes)}", "",
             "## Training data", "",
             f"- sources: {', '.join(map(str, sources)) if sources else 'see config.yaml'}"]
    if config:
        split = (config.get("data") or {}).get("split")
        lines.append(f"- split: `{yaml.safe_dump(split, default_flow_style=True).strip()}`" if split
                     else "- split: the sources' own")
    if card.train_positives is not None:
        lines.append("- training positives per class: " + ", ".join(
            f"{name} {n}" for name, n in zip(card.classes, card.train_positives)))
    lines += ["", *_results(card, metrics), "", *_usage(exported), ""]
    if environment.get("command"):
        lines += ["## How it was trained", "", "```", " ".join(["cxrlt", *map(str, environment["command"][1:])]),
                  "```", ""]
    if config:
        lines += ["Configuration (`config.yaml`):", "", "```yaml", yaml.safe_dump(config, sort_keys=False).strip(),
                  "```", ""]
    lines += ["## Citations", "", "The methods this model uses come from:", ""]
    lines += [f"- *{SEED_PAPERS[key]}*: {_USES[key]}" for key in papers]
    return "\n".join(lines) + "\n"


def write_model_readme(folder: str | Path, target: str | Path | None = None, exported: str | None = None) -> Path:
    """Write the model card of `folder` to `target` (default: the folder's README.md), atomically."""
    return write_text(target or RunFiles(Path(folder)).readme, model_readme(folder, exported))


def _results(card: ModelCard, metrics: dict[str, Any] | None) -> list[str]:
    if not metrics:
        return ["## Results", "", "No evaluation was recorded with this model."]
    intervals = metrics.get("intervals") or {}
    span = lambda pair: "" if not pair else f" [{pair[0]:.3f}, {pair[1]:.3f}]"  # noqa: E731
    level = f" ({intervals['level']:.0%} bootstrap intervals over {intervals['unit']}s)" if intervals else ""
    mean = metrics["mean"]
    lines = ["## Results", "", f"On the `{metrics['split']}` split ({metrics['n_images']} images){level}:", "",
             f"- mean AUC {_fmt(mean.get('auc'))}{span(intervals.get('mean', {}).get('auc'))}, "
             f"mAP {_fmt(mean.get('ap'))}{span(intervals.get('mean', {}).get('ap'))}", "",
             "| group | classes | AUC | AP |", "|---|---|---|---|"]
    for group, values in (metrics.get("groups") or {}).items():
        bounds = (intervals.get("groups") or {}).get(group, {})
        lines.append(f"| {group} | {values.get('classes')} | {_fmt(values.get('auc'))}{span(bounds.get('auc'))} "
                     f"| {_fmt(values.get('ap'))}{span(bounds.get('ap'))} |")
    lines += ["", f"| class | group | {metrics['split']} positives | AUC | AP | threshold |", "|---|---|---|---|---|---|"]
    for name, values in metrics["per_class"].items():
        bounds = (intervals.get("per_class") or {}).get(name) or {}
        threshold = values.get("threshold")
        lines.append(f"| {name} | {values.get('group', '')} | {values.get('positives')} "
                     f"| {_fmt(values.get('auc'))}{span(bounds.get('auc'))} "
                     f"| {_fmt(values.get('ap'))}{span(bounds.get('ap'))} | {_fmt(threshold)} |")
    calibration = metrics.get("calibration") or {}
    thresholds = metrics.get("thresholds") or {}
    lines += ["", f"Calibration: pooled ECE {_fmt(calibration.get('pooled_ece'))}, mean per-class ECE "
                  f"{_fmt(calibration.get('mean_ece'))}"
              + (f"; temperature {calibration['temperature']:.4g}" if calibration.get("temperature") else "") + ".",
              f"Thresholds: `{thresholds.get('method', 'none')}`, tuned on `{thresholds.get('tuned_on', '-')}`."]
    return lines


def _usage(exported: str | None) -> list[str]:
    lines = ["## How to use it", "", "With cxrlt (`pip install cxrlt`), from this folder or from the hub:", "",
             "```", "cxrlt predict . scans/ --out predictions.csv", "cxrlt predict hf-hub:OWNER/NAME scans/",
             "```", "",
             "Fine-tune it on another label space (shared classes keep their classifier rows): "
             "`model.init_from: PATH_OR_RUN` in a config.", ""]
    if exported == "onnx":
        lines += ["Without cxrlt, `model.onnx` with onnxruntime: input `image`, float32 (N, 1, H, W), gray levels "
                  "0-255 after the preprocessing in `model_export.json`; output `probabilities` (N, C) in the "
                  "order of its `classes`.", "",
                  "```python", "import json, numpy as np, onnxruntime as ort",
                  "meta = json.load(open('model_export.json'))",
                  "session = ort.InferenceSession('model.onnx')",
                  "size = meta['input']['shape'][2]",
                  "image = np.zeros((1, 1, size, size), np.float32)  # your preprocessed gray image",
                  "probabilities = session.run(['probabilities'], {'image': image})[0]", "```"]
    elif exported == "torchscript":
        lines += ["Without cxrlt, `model.pt` with PyTorch: `torch.jit.load('model.pt')(image)` with `image` float32 "
                  "(N, 1, H, W) gray levels 0-255 (preprocessing in `model_export.json`) returns probabilities "
                  "(N, C)."]
    return lines


def _read_yaml(path: Path) -> dict[str, Any] | None:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
