"""Parameters, FLOPs and CPU forward time per image of each head on one backbone, next to the linear head.

    python benchmarks/bench_heads.py [--backbone resnet50] [--size 224] [--batch 8] [--threads 2]
                                     [--classes 26] [--repeats 5] [--device cpu]

Heads: linear, gcn (GloVe 300-d, 2 GCN layers), experts (4, linear
classifiers), experts (4, GCN classifiers) + MHA, query decoder (768-d, 4
layers) with separate and with shared classifiers; LSE pooling. Parameters
and FLOPs (torch's counter: convolutions and matrix products) are the whole
model's (an experts head owns 4 copies of the backbone's last stage). Time:
the best of `repeats` eval-mode forwards of a batch of uint8 images (after
one warm-up pass; the heads take turns in each round), divided by the
batch size; on a machine shared with other work only the FLOPs compare.
Also prints the time to train GloVe label vectors on an NIH-size label
matrix (112,120 images, 15 classes with the SPEC 8 class totals).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from cxrlt.config import ModelConfig
from cxrlt.models.build import build_model
from cxrlt.models.embeddings import glove_vectors

HEADS = {
    "linear": {"name": "linear"},
    "gcn": {"name": "gcn"},
    "experts (4)": {"name": "experts"},
    "experts (4, gcn) + MHA": {"name": "experts", "classifier": "gcn", "mha": "separate"},
    "query, separate": {"name": "query"},
    "query, shared": {"name": "query", "separate": False},
}
NIH_TOTALS = {"Hernia": 227, "Pneumonia": 1431, "Fibrosis": 1686, "Edema": 2303, "Emphysema": 2516,
              "Cardiomegaly": 2776, "Pleural_Thickening": 3385, "Consolidation": 4667, "Pneumothorax": 5302,
              "Mass": 5782, "Nodule": 6331, "Atelectasis": 11559, "Effusion": 13317, "Infiltration": 19894,
              "No Finding": 60361}


def forward_flops(model: torch.nn.Module, images: torch.Tensor) -> int:
    """Floating-point operations of one forward pass (convolutions and matrix products, torch's counter)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(images)
    return counter.get_total_flops()


def forward_seconds(model: torch.nn.Module, images: torch.Tensor) -> float:
    """Seconds of one forward pass of `images`."""
    with torch.inference_mode():
        start = time.perf_counter()
        model(images)
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--classes", type=int, default=26)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    rng = np.random.default_rng(0)
    labels = (rng.random((5000, args.classes)) < np.geomspace(0.3, 0.003, args.classes)).astype(np.float32)
    context = {"class_names": [f"class {i}" for i in range(args.classes)], "train_labels": labels}
    images = torch.randint(0, 256, (args.batch, 1, args.size, args.size), dtype=torch.uint8, device=device)
    print(f"{args.backbone} at {args.size} px, batch {args.batch}, {args.classes} classes, {device}"
          + (f", {args.threads} threads" if device.type == "cpu" else ""))
    models, params, flops = {}, {}, {}
    for name, head in HEADS.items():
        torch.manual_seed(0)
        models[name] = build_model(ModelConfig(backbone=args.backbone, head=head, pooling="lse"), args.classes,
                                   image_size=args.size, context=context).to(device).eval()
        params[name] = sum(p.numel() for p in models[name].parameters())
        flops[name] = forward_flops(models[name], images) / args.batch
    for model in models.values():  # warm-up
        forward_seconds(model, images)
    # Rounds interleave the heads, and the best round counts: on a shared machine other
    # processes only ever add time, and they hit every head alike.
    best = {name: float("inf") for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            best[name] = min(best[name], forward_seconds(model, images))
    print(f"{'head':<26}{'params (M)':>11}{'x linear':>9}{'GFLOP / image':>15}{'x linear':>9}"
          f"{'ms / image':>12}{'x linear':>9}")
    for name in HEADS:
        print(f"{name:<26}{params[name] / 1e6:>11.1f}{params[name] / params['linear']:>9.2f}"
              f"{flops[name] / 1e9:>15.2f}{flops[name] / flops['linear']:>9.2f}"
              f"{best[name] / args.batch * 1e3:>12.1f}{best[name] / best['linear']:>9.2f}")

    totals = np.array(list(NIH_TOTALS.values()), dtype=np.float64)
    nih = (rng.random((112_120, len(totals))) < totals / 112_120).astype(np.float32)
    start = time.perf_counter()
    glove_vectors(nih, dim=300, seed=0)
    print(f"GloVe label vectors (300-d, 1000 AdaGrad steps) on 112,120 x 15 labels: "
          f"{time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
