"""Long-tail benchmark: cxrlt's long-tail methods over three seeds, as one `cxrlt sweep`.

    cxrlt prepare configs/benchmark/longtail-synthetic.yaml --out runs/benchmark/data/synthetic-cache64
    python benchmarks/bench_longtail.py configs/benchmark/longtail-synthetic.yaml --out runs/benchmark/synthetic

This file only names the methods. It runs

    cxrlt sweep BASE.yaml --variant bce: --variant focal:loss.name=focal ... --seeds 0,1,2 --out OUT

(printed first), one variant per method of `--methods`; every other argument
(`--out`, `--seeds`, `--folds`, `--jobs`, `--baseline`, `--collect`,
`--print-commands`, `--no-progress`, `--resamples`) goes to `cxrlt sweep` as it is. Running the
same command again continues a stopped benchmark. docs/benchmark.md has
the settings (configs/benchmark/), the commands and the results.

Methods: the losses with instance sampling and the SPEC defaults, BCE with
class-balanced cycle sampling, and decoupled classifier re-training (cRT:
a second stage that freezes the backbone, re-initialises the classifier
and re-trains it with cycle sampling for 3 epochs) after BCE and after the
class-aware loss (the default list, `DEFAULT`); `db`, `la` and `ldam_drw`
(distribution-balanced, logit-adjusted, LDAM with deferred re-weighting)
are named too, for `--methods`. `CLASSIFIER` lists methods
that change only the classifier of a BCE backbone: re-training it with
instance sampling (the control), cRT, and cRT with the class-aware loss.
The first stage of these variants trains exactly as a plain variant's, so
the sweep trains it once per seed and reuses it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Sequence

CRT = "stages=[{name: main}, {name: crt, freeze_backbone: true, epochs: 3}]"
CRT_CAL = "stages=[{name: main}, {name: crt, freeze_backbone: true, epochs: 3, loss: class_aware}]"
# The control of cRT: the same re-training of the classifier without re-balancing (instance sampling).
RT = "stages=[{name: main}, {name: rt, freeze_backbone: true, epochs: 3, sampler: instance}]"
METHODS: dict[str, tuple[str, ...]] = {
    "bce": (),
    "weighted_bce": ("loss.name=weighted_bce",),
    "focal": ("loss.name=focal",),
    "asl": ("loss.name=asl",),
    "cal": ("loss.name=class_aware",),
    "en_focal": ("loss.name=effective_number_focal",),
    "cb": ("loss.name=class_balanced",),
    "bce+cycle": ("train.sampler.name=cycle",),
    "bce+crt": (CRT,),
    "cal+crt": ("loss.name=class_aware", CRT),
    "bce+crt_cal": (CRT_CAL,),
    "bce+rt": (RT,),
    # The baselines of configs/baselines/ (docs/methods.md), with their authors' defaults. LDAM's deferred
    # re-weighting starts after 5 epochs: the last sixth of the 6-epoch synthetic schedule, as the authors'
    # 160 of 200 (pass a different `loss.drw_after` in a variant of your own for other schedules).
    "db": ("loss.name=distribution_balanced",),
    "la": ("loss.name=logit_adjusted",),
    "ldam_drw": ("loss.name=ldam", "loss.drw_after=5"),
}
# The methods of the synthetic benchmark; the NIH one compares the classifier-side methods on one BCE backbone.
DEFAULT = ["bce", "focal", "asl", "cal", "en_focal", "cb", "bce+cycle", "bce+crt", "cal+crt"]
CLASSIFIER = ["bce", "bce+rt", "bce+crt", "bce+crt_cal"]


def sweep_arguments(argv: Sequence[str]) -> list[str]:
    """The `cxrlt` arguments of the benchmark's sweep."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", metavar="BASE.yaml", help="base configuration (configs/benchmark/)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT,
                        help=f"methods to compare, the first is the baseline (default: {' '.join(DEFAULT)})")
    args, rest = parser.parse_known_args(argv)
    variants = [f"{name}:{','.join(METHODS[name])}" for name in args.methods]
    return ["sweep", args.config, *(item for v in variants for item in ("--variant", v)), *rest]


def main(argv: Sequence[str] | None = None) -> int:
    from cxrlt.cli import main as cxrlt

    arguments = sweep_arguments(sys.argv[1:] if argv is None else argv)
    print("$ cxrlt " + shlex.join(arguments), flush=True)
    return cxrlt(arguments)


if __name__ == "__main__":
    sys.exit(main())
