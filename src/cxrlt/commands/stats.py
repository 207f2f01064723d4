"""`cxrlt stats`: label statistics of a dataset, printed and written as JSON/plots."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cxrlt.data.table import LabelTable

HELP = "Label statistics: positives per class, labels per image, co-occurrence, splits."
DESCRIPTION = """
Reads one label file (--source and --labels, with the source's options) or
the data section of a run config (--config), prints a table of positives,
negatives, prevalence and head/medium/tail group per class, and optionally
writes the statistics as JSON and the figures (label distribution, labels
per image, co-occurrence) as PNGs. When the data has splits, the JSON also
gives images per split and the number of patients found in more than one.
"""
EXAMPLE = """
cxrlt stats --source nih --labels Data_Entry_2017_v2020.csv.gz \\
    --train-list train_val_list.txt --test-list test_list.txt \\
    --json nih_stats.json --plots figures/
cxrlt stats --source chexpert --labels CheXpert-v1.0-small/train.csv --uncertain zeros --views frontal
cxrlt stats --config run.yaml --split train --json train_stats.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `cxrlt stats`."""
    data = parser.add_argument_group("data: a label file, or --config")
    data.add_argument("--config", metavar="RUN.yaml", help="take the data section (sources, classes, split) of a run config")
    data.add_argument("--override", metavar="KEY=VALUE", action="append", default=[],
                      help="with --config: change a config value, e.g. data.split.method=kfold (repeatable)")
    data.add_argument("--source", metavar="NAME", help="label file format: nih, chexpert, mimic or csv")
    data.add_argument("--labels", metavar="FILE", help="the label file (CSV, plain or .gz)")
    data.add_argument("--images", metavar="DIR", help="image folder the paths are relative to")
    data.add_argument("--train-list", metavar="FILE", help="nih: official train_val_list.txt")
    data.add_argument("--test-list", metavar="FILE", help="nih: official test_list.txt")
    data.add_argument("--no-finding", action="store_true", default=None, help="nih: add a 'No Finding' class")
    data.add_argument("--uncertain", choices=("ones", "zeros", "ignore"), help="chexpert/mimic: -1 becomes 1, 0 or missing (default ones)")
    data.add_argument("--blank", choices=("zeros", "ignore"), help="chexpert/mimic: blank becomes 0 or missing (default zeros)")
    data.add_argument("--views", metavar="V,V", help="chexpert: keep these views (frontal, lateral, ap, pa)")
    data.add_argument("--classes", metavar="A,B", help="mimic/csv: class columns (default: inferred)")
    data.add_argument("--option", metavar="KEY=VALUE", action="append", default=[],
                      help="any other parameter of the source, e.g. path_column=file (repeatable)")
    data.add_argument("--split", choices=("train", "val", "test"), help="statistics of this split only")
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="OUT", help="write the statistics as JSON")
    out.add_argument("--plots", metavar="DIR", help="write label_distribution, labels_per_image and co-occurrence PNGs")
    out.add_argument("--log-scale", action="store_true", help="log axis in the label distribution plot")
    out.add_argument("--label-model", metavar="OUT.json",
                     help="write the label-set model the synthetic generator samples from (fit on these rows)")
    sampling = parser.add_argument_group("sampling: label frequencies a sampler produces")
    sampling.add_argument("--sampler", metavar="NAME",
                          help="instance, cycle, least_sampled, sqrt or repeat_factor: print natural, expected "
                               "and drawn label frequency per class")
    sampling.add_argument("--sampler-option", metavar="KEY=VALUE", action="append", default=[],
                          help="sampler parameter, e.g. threshold=0.05 for repeat_factor (repeatable)")
    sampling.add_argument("--draws", type=int, default=500_000, help="indices drawn (default 500,000)")
    sampling.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")


def run(args: argparse.Namespace) -> int:
    """Compute, print and write the statistics."""
    from cxrlt.data.stats import dataset_summary, format_summary, format_table, save_plots
    from cxrlt.io import check_output, write_json

    inputs = [args.config, args.labels, args.train_list, args.test_list]
    for option, path in (("--json", args.json), ("--label-model", args.label_model)):
        if path:
            check_output(path, option, inputs=inputs)
    if args.plots:
        check_output(args.plots, "--plots", folder=True)
    table, groups_options = load_for_stats(args)
    stats, payload = dataset_summary(table, split=args.split, groups_options=groups_options)
    groups = [payload["classes"][name]["group"] for name in stats.classes]
    print(format_table(stats, groups))
    print(format_summary(payload))
    if args.json:
        write_json(args.json, payload)
        print(f"wrote {args.json}")
    if args.plots:
        for path in save_plots(stats, args.plots, groups, log=args.log_scale):
            print(f"wrote {path}")
    if args.label_model:
        from cxrlt.data.synthetic.label_model import fit_label_model_from_table

        write_json(args.label_model, fit_label_model_from_table(_rows(table, args.split)))
        print(f"wrote {args.label_model}")
    if args.sampler:
        print(_sampler_table(_rows(table, args.split), args))
    return 0


def _rows(table: "LabelTable", split: str | None) -> "LabelTable":
    return table.split(split) if split else table


def _sampler_table(table: "LabelTable", args: argparse.Namespace) -> str:
    """Natural, expected and drawn label frequencies under `args.sampler`, as text."""
    from cxrlt.config import parse_value
    from cxrlt.data.samplers import sampler_frequency_table
    from cxrlt.registry import SAMPLERS
    from cxrlt.errors import ConfigError, clip, echo

    params = {}
    for item in args.sampler_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--sampler-option {echo(item)} must look like key=value")
        params[key] = parse_value(value, f"--sampler-option {clip(key)}")
    params = SAMPLERS.validate(args.sampler, params, where=f"--sampler {args.sampler}")
    frame = sampler_frequency_table(table.labels, table.classes, args.sampler, draws=args.draws, seed=args.seed,
                                    **params)
    return (f"\nlabel frequency under the {args.sampler!r} sampler ({args.draws:,} draws, seed {args.seed}):\n"
            + frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def load_for_stats(args: argparse.Namespace) -> tuple["LabelTable", dict[str, Any]]:
    """The table the options describe and the head/medium/tail grouping options."""
    from cxrlt.config import load_data_and_groups
    from cxrlt.data.sources import load_table
    from cxrlt.registry import SOURCES
    from cxrlt.errors import ConfigError

    source_flags = [
        "source", "labels", "images", "train_list", "test_list", "no_finding", "uncertain", "blank", "views", "classes",
    ]
    if args.config:
        given = [f"--{name.replace('_', '-')}" for name in source_flags if getattr(args, name) is not None] + (
            ["--option"] if args.option else []
        )
        if given:
            raise ConfigError(f"--config takes the data from the config; leave out {', '.join(given)}")
        data, groups = load_data_and_groups(args.config, args.override,
                                            "`cxrlt stats --config` reads its labels from it")
        return load_table(data), groups.model_dump()
    if args.override:
        raise ConfigError("--override applies to --config only; pass source parameters with --option KEY=VALUE")
    if not args.source or not args.labels:
        raise ConfigError("give --source and --labels (or --config RUN.yaml); see `cxrlt stats --help`")
    params = _source_params(args)
    accepted = SOURCES.entry(args.source).params.model_fields
    unknown = [key for key in params if key not in accepted]
    if unknown:
        from_options = {item.split("=", 1)[0].strip().replace("-", "_") for item in args.option}
        flags = ", ".join(f"--option {key}" if key in from_options else f"--{key.replace('_', '-')}" for key in unknown)
        raise ConfigError(
            f"--source {args.source} does not take {flags}; its parameters are: {', '.join(accepted)}"
        )
    return SOURCES.build(args.source, **params), {}


def _source_params(args: argparse.Namespace) -> dict[str, Any]:
    """Source parameters from the flags that were given, plus --option KEY=VALUE."""
    from cxrlt.config import parse_value
    from cxrlt.errors import ConfigError, clip, echo

    params: dict[str, Any] = {}
    for name in ("labels", "images", "train_list", "test_list", "no_finding", "uncertain", "blank"):
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    for name in ("views", "classes"):
        value = getattr(args, name)
        if value is not None:
            params[name] = [item.strip() for item in value.split(",") if item.strip()]
    for item in args.option:
        if "=" not in item:
            raise ConfigError(f"--option {echo(item)} must look like KEY=VALUE")
        key, text = item.split("=", 1)
        params[key.strip().replace("-", "_")] = parse_value(text, f"--option {clip(key)}") if text else None
    return params
