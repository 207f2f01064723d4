"""Draw the positive and negative loss curves of BCE, focal, ASL and CAL (thesis figs. 10-11).

Usage (from the repository root):

    python docs/scripts/loss_curves.py --out docs/images/loss_curves.png

The first two rows are a head and a tail class of NIH ChestX-ray14
(Infiltration, 19,894 positives, and Hernia, 227, of 112,120 images; SPEC
section 8), the third overlays CAL for both (like the thesis' fig. 10);
columns are the loss of a negative label (y = 0) and of a positive label
(y = 1) as a function of the predicted probability p. The curves are
computed by the toolkit's own loss modules with their default parameters.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from cxrlt.io import save_figure  # noqa: E402
from cxrlt.losses import build  # noqa: E402

TOTAL = 112120
CLASSES = {"Infiltration (head)": 19894, "Hernia (tail)": 227}
# BCE is a wide light band under the others: ASL's positive side (g+ = 0) and
# CAL's for a rare class coincide with it and would hide it otherwise.
LOSSES = [
    ("BCE", "bce", {}, "#bdbdbd", "-"),
    ("focal (a=0.25, g=2)", "focal", {}, "#1f77b4", "-"),
    ("ASL (g+=0, g-=4, m=0.05)", "asl", {}, "#2ca02c", "-"),
    ("CAL (m=0.2)", "class_aware", {}, "#d62728", "-"),
    ("CAL without margin", "class_aware", {"margin": 0.0}, "#d62728", ":"),
]


def curves(p: torch.Tensor) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """{loss label: {class label: (negative loss, positive loss)}} over probabilities p."""
    counts = {"positives": list(CLASSES.values()), "negatives": [TOTAL - n for n in CLASSES.values()]}
    logits = torch.logit(p.double()).unsqueeze(1).repeat(1, len(CLASSES))
    out: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    for label, name, params, _, _ in LOSSES:
        loss = build(name, class_counts=counts, class_names=list(CLASSES), **params)
        negative = loss.per_element(logits, torch.zeros_like(logits))
        positive = loss.per_element(logits, torch.ones_like(logits))
        out[label] = {cls: (negative[:, k], positive[:, k]) for k, cls in enumerate(CLASSES)}
    return out


def draw(path: Path) -> Path:
    """Draw the 3 x 2 figure and save it atomically to `path`."""
    p = torch.linspace(0.001, 0.999, 999)
    values = curves(p)
    sides = ("negative label (y = 0)", "positive label (y = 1)")
    figure, axes = plt.subplots(3, 2, figsize=(11, 12), sharex=True)
    for row, cls in enumerate(CLASSES):
        for column, side in enumerate(sides):
            ax = axes[row, column]
            for label, _, _, color, style in LOSSES:
                width = 6 if label == "BCE" else 2
                ax.plot(p, values[label][cls][column], color=color, linestyle=style, linewidth=width, label=label)
            ax.set_title(f"{cls}, a = P/(P+N) = {CLASSES[cls] / TOTAL:.4f}: {side}", fontsize=10.5)
    for column, side in enumerate(sides):
        ax = axes[2, column]
        for (cls, color) in zip(CLASSES, ("#ff7f0e", "#9467bd")):
            for label, style in (("CAL (m=0.2)", "-"), ("CAL without margin", ":")):
                ax.plot(p, values[label][cls][column], color=color, linestyle=style, linewidth=2,
                        label=f"{label}, {cls.split()[0]}")
        ax.set_title(f"CAL, head vs tail class: {side}", fontsize=10.5)
    for row in range(3):
        for column in range(2):
            ax = axes[row, column]
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 3.0 if column == 0 else 4.0)
            ax.grid(alpha=0.3)
            ax.set_ylabel("loss")
    axes[2, 0].set_ylim(0, 0.6)
    axes[2, 1].set_ylim(0, 2.5)
    for column in range(2):
        axes[2, column].set_xlabel("predicted probability p")
    axes[0, 1].legend(loc="upper right", fontsize=9)
    axes[2, 0].legend(loc="upper left", fontsize=9)
    figure.suptitle(
        "Per-label losses vs predicted probability (NIH ChestX-ray14 class frequencies)\n"
        "BCE, focal and ASL do not depend on the class; "
        "CAL weighs a rare class' positives up and keeps negatives small",
        fontsize=11,
    )
    figure.tight_layout()
    return save_figure(path, figure, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/loss_curves.png"), help="PNG file to write")
    args = parser.parse_args()
    print(draw(args.out))


if __name__ == "__main__":
    main()
