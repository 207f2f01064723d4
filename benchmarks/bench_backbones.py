"""Parameters, GFLOPs and CPU training-step time of vision-transformer backbones next to ResNet-50.

    python benchmarks/bench_backbones.py [--size 224] [--batch 8] [--threads 2] [--classes 26] [--repeats 3]
                                         [--backbones resnet50 vit_small_patch16_224 vit_small_patch14_dinov2]

Each backbone is built as cxrlt trains it (grayscale input, linear head on
average-pooled features: patch tokens for the ViTs, see
`cxrlt.models.token_backbones`; random weights, the cost does not depend on
them). FLOPs (torch's counter: convolutions and matrix products, forward
pass, per image) and a training step (forward, BCE, backward, AdamW step)
of a batch of uint8 images: the best of `repeats` after one warm-up step,
divided by the batch size. Each ratio is to the first backbone. On a
machine shared with other work only parameters and FLOPs compare exactly.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from cxrlt.config import ModelConfig
from cxrlt.models.build import build_model


def forward_flops(model: torch.nn.Module, images: torch.Tensor) -> int:
    """Floating-point operations of one forward pass (torch's counter)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(images)
    return counter.get_total_flops()


def train_step_seconds(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                       targets: torch.Tensor) -> float:
    """Seconds of one forward + BCE + backward + optimiser step."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), targets)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+",
                        default=["resnet50", "vit_small_patch16_224", "vit_small_patch14_dinov2"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--classes", type=int, default=26)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 1, args.size, args.size), dtype=torch.uint8)
    targets = (torch.rand(args.batch, args.classes) < 0.2).float()
    print(f"{args.size} px, batch {args.batch}, {args.classes} classes, cpu, {args.threads} threads, "
          f"best of {args.repeats} training steps")
    print(f"{'backbone':<28} {'params (M)':>10} {'GFLOPs/img':>10} {'step ms/img':>11} {'x params':>8} "
          f"{'x GFLOPs':>8} {'x time':>7}")
    first = None
    for name in args.backbones:
        model = build_model(ModelConfig(backbone=name), args.classes, image_size=args.size)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        flops = forward_flops(model.eval(), images) / args.batch / 1e9
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        train_step_seconds(model, optimizer, images, targets)  # warm-up
        step = min(train_step_seconds(model, optimizer, images, targets) for _ in range(args.repeats))
        step_ms = step / args.batch * 1e3
        first = first or (params, flops, step_ms)
        print(f"{name:<28} {params:>10.1f} {flops:>10.2f} {step_ms:>11.1f} {params / first[0]:>8.2f} "
              f"{flops / first[1]:>8.2f} {step_ms / first[2]:>7.2f}")


if __name__ == "__main__":
    main()
