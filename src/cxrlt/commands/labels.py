"""`cxrlt labels graph`: the ML-GCN label graph and label embeddings of a training split, as one .npz."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cxrlt.models.label_graph import GraphFile

HELP = "label graph (ML-GCN correlation matrix) and label embeddings of a run's training split"
DESCRIPTION = """
graph: reads the data section of a run config, takes its training split, and
writes one .npz with the class names, the conditional probabilities
P(L_j | L_i), the normalised ML-GCN correlation matrix (threshold tau,
re-weighting p), the positives per class and the label embeddings (GloVe on
the label sentences by default, or a matrix file, or a local text encoder).
tau, p and the embeddings default to the run's head settings (model.head),
else tau 0.4, p 0.2, GloVe 300-d. Give the file to a head as
`model.head.graph: FILE.npz` (gcn and experts heads); it is also a valid
`embeddings:` file. Prints the classes with their neighbours in the graph.
"""
EXAMPLE = """
cxrlt labels graph --config run.yaml --out graph.npz
cxrlt labels graph --config run.yaml --out graph.npz --tau 0.3 --embeddings vectors.csv
cxrlt labels graph --config run.yaml --out graph.npz \\
    --text-encoder /models/BiomedBERT --prompt "chest x-ray showing {name}"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-actions of `cxrlt labels` and their options."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    graph = actions.add_parser(
        "graph", help="write the label graph and label embeddings of the training split (.npz)",
        description=DESCRIPTION, epilog="example:\n  " + EXAMPLE.strip().replace("\n", "\n  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    graph.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show full tracebacks for errors")
    graph.add_argument("--config", metavar="RUN.yaml", required=True, help="run config whose data section is read")
    graph.add_argument("--override", metavar="KEY=VALUE", action="append", default=[],
                       help="change a config value first, e.g. data.split.seed=1 (repeatable)")
    graph.add_argument("--out", metavar="FILE.npz", required=True, help="where to write the graph")
    graph.add_argument("--tau", type=float, help="edge threshold on P(L_j | L_i) (default: the head's, else 0.4)")
    graph.add_argument("--p", type=float, help="weight of the neighbours in each row (default: the head's, else 0.2)")
    source = graph.add_mutually_exclusive_group()
    source.add_argument("--embeddings", metavar="glove|FILE",
                        help="glove (trained on the label sentences) or a .npz/.csv/.npy matrix")
    source.add_argument("--text-encoder", metavar="MODEL", help="local folder (or cached hub name) of a text encoder")
    graph.add_argument("--prompt", default="{name}", help="text encoder: template with {name} (default: the name)")
    graph.add_argument("--dim", type=int, default=300, help="glove: vector size (default 300)")
    graph.add_argument("--seed", type=int, default=0, help="glove: seed (default 0)")


def run(args: argparse.Namespace) -> int:
    """Dispatch the sub-action."""
    if args.action == "graph":
        return _graph(args)
    raise AssertionError(f"unhandled action {args.action!r}")  # argparse only lets known actions through


def _graph(args: argparse.Namespace) -> int:
    from cxrlt.config import load_config
    from cxrlt.data.sources import load_table
    from cxrlt.errors import InputError
    from cxrlt.io import check_output
    from cxrlt.models.embeddings import LabelEmbeddingSpec
    from cxrlt.models.graph import DEFAULT_P, DEFAULT_TAU
    from cxrlt.models.label_graph import GraphFile

    check_output(args.out, "--out", inputs=[args.config, args.embeddings])
    config = load_config(args.config, args.override)
    head = config.model.head.params
    train = load_table(config.data).split("train")
    if len(train) == 0:
        raise InputError(f"the training split of the data in {args.config} is empty; check data.split")
    if args.text_encoder:
        spec = LabelEmbeddingSpec.coerce({"method": "text", "model": args.text_encoder, "prompt": args.prompt})
    elif args.embeddings and args.embeddings != "glove":
        spec = LabelEmbeddingSpec.coerce(args.embeddings)
    elif args.embeddings == "glove" or head.get("embeddings") is None:
        spec = LabelEmbeddingSpec.coerce({"method": "glove", "dim": args.dim, "seed": args.seed})
    else:
        spec = LabelEmbeddingSpec.coerce(head["embeddings"])
    tau = args.tau if args.tau is not None else head.get("tau", DEFAULT_TAU)
    p = args.p if args.p is not None else head.get("p", DEFAULT_P)
    graph = GraphFile.from_labels(train.labels, train.classes, spec, tau=_checked(tau, "tau"), p=_checked(p, "p"))
    graph.save(args.out)
    print(format_graph(graph))
    print(f"wrote {args.out}")
    return 0


def _checked(value: Any, name: str) -> float:
    from cxrlt.errors import ConfigError

    value = float(value)
    if (name == "tau" and not 0.0 < value <= 1.0) or (name == "p" and not 0.0 <= value < 1.0):
        raise ConfigError(f"--{name} {value}: tau must lie in (0, 1] and p in [0, 1)")
    return value


def format_graph(graph: "GraphFile") -> str:
    """A readable summary: sizes, settings, and each class's neighbours with P(L_j | L_i)."""
    import numpy as np

    k = len(graph.classes)
    edges = (graph.conditional >= graph.tau) & ~np.eye(k, dtype=bool)
    lines = [
        f"label graph of {graph.images:,} training images, {k} classes (tau {graph.tau:g}, p {graph.p:g}): "
        f"{int(edges.sum())} edges, {int((~edges.any(axis=1)).sum())} classes without neighbours",
        f"embeddings: {graph.method}, {graph.embeddings.shape[0]} x {graph.embeddings.shape[1]}",
        "",
        f"{'class':<28}{'positives':>10}  neighbours: P(L_j | L_i)",
    ]
    for i, name in enumerate(graph.classes):
        order = [j for j in np.argsort(-graph.conditional[i], kind="stable") if edges[i, j]]
        neighbours = ", ".join(f"{graph.classes[j]} {graph.conditional[i, j]:.2f}" for j in order) or "-"
        lines.append(f"{name[:27]:<28}{int(graph.positives[i]):>10,}  {neighbours}")
    return "\n".join(lines)
