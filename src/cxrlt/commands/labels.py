"""`cxrlt labels graph`: the ML-GCN label graph and label embeddings of a training split, as one .npz."""

from __future__ import annotations

import argparse

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
    from cxrlt.io import check_output
    from cxrlt.models.embeddings import LabelEmbeddingSpec
    from cxrlt.models.label_graph import format_graph, graph_of_run

    check_output(args.out, "--out", inputs=[args.config, args.embeddings])
    for name in ("tau", "p"):
        _check_flag(getattr(args, name), name)
    config = load_config(args.config, args.override)
    glove = LabelEmbeddingSpec.coerce({"method": "glove", "dim": args.dim, "seed": args.seed})
    if args.text_encoder:
        spec = LabelEmbeddingSpec.coerce({"method": "text", "model": args.text_encoder, "prompt": args.prompt})
    elif args.embeddings and args.embeddings != "glove":
        spec = LabelEmbeddingSpec.coerce(args.embeddings)
    else:
        spec = glove if args.embeddings == "glove" else None  # None: the head's, else `glove`
    graph = graph_of_run(config, args.config, spec, tau=args.tau, p=args.p, default_embeddings=glove)
    graph.save(args.out)
    print(format_graph(graph))
    print(f"wrote {args.out}")
    return 0


def _check_flag(value: float | None, name: str) -> None:
    from cxrlt.errors import ConfigError
    from cxrlt.models.graph import RANGES, in_range

    if value is not None and not in_range(name, value):
        raise ConfigError(f"--{name} {value}: {name} must lie in {RANGES[name]}")
