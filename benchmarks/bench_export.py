"""Time CPU inference of an exported ONNX model (onnxruntime) against the same model in PyTorch.

    python benchmarks/bench_export.py [--backbones resnet50 densenet121] [--size 224] [--batch 8]
                                      [--repeats 5] [--threads 1]

Per backbone: a 14-class linear-head model (random weights: speed does not
depend on them) is saved, exported with `cxrlt export`'s code, and both
run the same float gray-level batch; the exported graph is first checked to
give the same probabilities. Prints milliseconds per image (best of
`repeats` timed batches after one warm-up) and the ratio PyTorch / ONNX
(above 1: onnxruntime is faster).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cxrlt.config import ModelConfig
from cxrlt.inference.export import GrayLevelModel, OnnxModel, export
from cxrlt.inference.saved_model import export_model
from cxrlt.models.build import build_model
from cxrlt.models.card import ModelCard

CLASSES = [f"class {k}" for k in range(14)]


def best_ms_per_image(run, images, repeats: int) -> float:
    run(images)  # warm-up: allocations, lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(images)
        times.append(time.perf_counter() - start)
    return 1000 * min(times) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "densenet121"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for both runtimes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (args.batch, 1, args.size, args.size))
                              .astype(np.float32))
    print(f"CPU inference, batch {args.batch} x 1 x {args.size} x {args.size}, {args.threads} thread(s), "
          f"best of {args.repeats}")
    print(f"{'backbone':<14} {'PyTorch ms/img':>15} {'onnxruntime ms/img':>19} {'ratio':>7}")
    for name in args.backbones:
        config = ModelConfig(backbone=name)
        model = build_model(config, len(CLASSES), args.size).eval()
        with tempfile.TemporaryDirectory() as tmp:
            export_model(model, Path(tmp) / "model", ModelCard(model=config, classes=CLASSES, image_size=args.size))
            files = export(Path(tmp) / "model", "onnx", Path(tmp) / "onnx")
            onnx = OnnxModel(files.graph("onnx"), threads=args.threads)
            eager = GrayLevelModel(model)

            def run_torch(x):
                with torch.inference_mode():
                    return eager(x)[0].numpy()

            def run_onnx(x):
                return onnx.probabilities(x.numpy())

            gap = float(np.abs(run_torch(images) - run_onnx(images)).max())
            torch_ms = best_ms_per_image(run_torch, images, args.repeats)
            onnx_ms = best_ms_per_image(run_onnx, images, args.repeats)
        print(f"{name:<14} {torch_ms:>15.1f} {onnx_ms:>19.1f} {torch_ms / onnx_ms:>7.2f}   (max |diff| {gap:.1e})")


if __name__ == "__main__":
    main()
