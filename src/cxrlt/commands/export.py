"""`cxrlt export`: a trained model as ONNX or TorchScript, with its sidecar and model card."""

from __future__ import annotations

import argparse

HELP = "export a trained model to ONNX or TorchScript (input `image` gray levels 0-255, output `probabilities`)"
DESCRIPTION = """
RUN is a finished run folder (or an export, or its model.safetensors). DIR
receives model.onnx (--format onnx) or model.pt (--format torchscript), its
sidecar model_export.json (classes, input size, preprocessing, thresholds,
training positives, groups), a copy of the saved model and the model card
README.md. The graph takes float32 (N, 1, H, W) gray levels 0-255 of images
decoded and resized as `cxrlt predict` does, normalises inside, and returns
(N, C) sigmoid probabilities; the batch dimension is dynamic. The export is
checked against the PyTorch model before it is written.
"""
EXAMPLE = """
cxrlt export runs/demo --format onnx --out exports/demo
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cxrlt export`."""
    parser.add_argument("run", metavar="RUN", help="finished run folder, export folder or model.safetensors")
    parser.add_argument("--format", default="onnx", help="onnx (default) or torchscript")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the export into")


def run(args: argparse.Namespace) -> int:
    """Export and say what was written."""
    from cxrlt.inference.export import export
    from cxrlt.io import check_output

    check_output(args.out, "--out", folder=True)
    files = export(args.run, args.format, args.out)
    print(f"wrote {files.graph(args.format)}, {files.sidecar.name}, {files.model.weights.name}, "
          f"{files.model.card.name}, {files.readme.name}")
    return 0
