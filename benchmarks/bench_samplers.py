"""Time every sampler on the NIH training labels and compare drawn with expected frequencies.

    python benchmarks/bench_samplers.py [--data ../shared/data] [--draws 500000] [--repeats 3]

Prints, per sampler, the best-of-`repeats` time to draw the global stream of
`draws` indices (one process, epoch 0) and the largest relative deviation of
the drawn label frequencies from the sampler's expected ones; then that
deviation under `cycle` for five seeds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from cxrlt.data.samplers import build, sampler_frequency_table
from cxrlt.data.sources.nih import nih as read_nih_table

SAMPLERS = {"instance": {}, "cycle": {}, "least_sampled": {}, "sqrt": {}, "repeat_factor": {"threshold": 0.05}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--draws", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    nih = args.data / "nih"
    table = read_nih_table(labels=nih / "Data_Entry_2017_v2020.csv.gz", train_list=nih / "train_val_list.txt",
                     test_list=nih / "test_list.txt")
    labels = table.labels[(table.meta["split"] != "test").to_numpy(dtype=bool)]
    print(f"NIH training labels: {labels.shape[0]} images x {labels.shape[1]} classes; {args.draws} draws")
    print(f"{'sampler':<16}{'build s':>9}{'draw s':>9}{'us/draw':>9}{'max rel dev':>13}")
    for name, params in SAMPLERS.items():
        start = time.perf_counter()
        sampler = build(name, labels=labels, num_samples=args.draws, seed=0, rank=0, world_size=1, **params)
        built = time.perf_counter() - start
        timings = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            sampler.global_indices(epoch=0)
            timings.append(time.perf_counter() - start)
        frequencies = sampler_frequency_table(labels, table.classes, name, draws=args.draws, seed=0, **params)
        deviation = (frequencies["empirical"] / frequencies["expected"] - 1).abs().max()
        best = min(timings)
        print(f"{name:<16}{built:>9.3f}{best:>9.3f}{1e6 * best / args.draws:>9.2f}{deviation:>13.2%}")
    deviations = []
    for seed in range(5):
        frequencies = sampler_frequency_table(labels, table.classes, "cycle", draws=args.draws, seed=seed)
        deviations.append((frequencies["empirical"] / frequencies["expected"] - 1).abs().max())
    print("cycle, max relative deviation per seed 0-4:", " ".join(f"{d:.3%}" for d in deviations))


if __name__ == "__main__":
    main()
