"""Time the bootstrap of per-class AUC / AP on 75,000 images x 40 classes, 1,000 resamples.

Data as in `bench_metrics.py`: long-tailed prevalences from 30% down to 0.1%,
5% of labels missing. Two score kinds are timed: scores rounded to 3
decimals (many ties, few distinct scores per class) and full-precision
float32 scores (nearly all distinct, the harder case for cxrlt, whose cost
grows with the number of distinct scores holding a positive).

The naive reference (a loop over resamples calling scikit-learn's
`roc_auc_score` and `average_precision_score` per class on the drawn images)
is far too slow to run in full: it is timed on `--naive-resamples`
resamples and extrapolated linearly to the full count; the output says so.

cxrlt's bootstrap runs on one thread, so on an idle machine its wall time
is its CPU time; both are printed because a shared machine inflates wall
time.

    python benchmarks/bench_bootstrap.py [--images 75000] [--classes 40] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrlt.evaluation.bootstrap import bootstrap_metrics, paired_bootstrap


def make_data(n: int, c: int, seed: int, rounded: bool) -> tuple[np.ndarray, np.ndarray]:
    """Long-tailed labels with 5% missing, and scores that rank positives higher."""
    rng = np.random.default_rng(seed)
    prevalence = np.geomspace(0.3, 0.001, c)
    y = (rng.random((n, c)) < prevalence).astype(np.float32)
    scores = (1 / (1 + np.exp(-rng.normal(-2 + 2 * y, 1.2)))).astype(np.float32)
    y[rng.random((n, c)) < 0.05] = np.nan
    return y, (np.round(scores, 3).astype(np.float32) if rounded else scores)


def naive(y: np.ndarray, p: np.ndarray, resamples: int, seed: int) -> None:
    """The textbook loop: draw images, recompute every class with scikit-learn."""
    rng = np.random.default_rng(seed)
    n = len(y)
    for _ in range(resamples):
        rows = rng.integers(0, n, n)
        for k in range(y.shape[1]):
            yk, pk = y[rows, k], p[rows, k]
            known = ~np.isnan(yk)
            yk, pk = yk[known], pk[known]
            if 0 < yk.sum() < len(yk):
                roc_auc_score(yk, pk)
                average_precision_score(yk, pk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=75_000)
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--naive-resamples", type=int, default=3)
    args = parser.parse_args()
    n, c, r = args.images, args.classes, args.resamples
    print(f"{n} images x {c} classes, {r} resamples (image bootstrap; 5% labels missing); "
          "CPU time is shown too because wall time suffers on a shared machine")
    for rounded in (True, False):
        y, p = make_data(n, c, 0, rounded)
        kind = "scores rounded to 3 decimals" if rounded else "full-precision float32 scores"
        start, cpu = time.perf_counter(), time.process_time()
        result = bootstrap_metrics(y, p, resamples=r, seed=0)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        start = time.perf_counter()
        naive(y, p, args.naive_resamples, 0)
        naive_seconds = (time.perf_counter() - start) / args.naive_resamples * r
        lo, hi = result.to_dict()["mean"]["auc"]
        print(f"{kind}:")
        print(f"  cxrlt bootstrap_metrics: {seconds:.1f} s wall, {cpu:.1f} s CPU "
              f"(mean AUC {np.nanmean(result.auc):.4f}, "
              f"95% interval [{lo:.4f}, {hi:.4f}])")
        print(f"  naive sklearn loop: {naive_seconds:.0f} s EXTRAPOLATED from {args.naive_resamples} "
              f"resamples -> cxrlt is {naive_seconds / seconds:.0f}x faster")
    y, p = make_data(n, c, 0, False)
    patients = np.random.default_rng(2).integers(0, n // 2.5, n)  # ~2.5 images per patient, like NIH
    start, cpu = time.perf_counter(), time.process_time()
    bootstrap_metrics(y, p, resamples=r, seed=0, patients=patients)
    print(f"patient (cluster) bootstrap, full-precision scores, {len(np.unique(patients))} patients: "
          f"{time.perf_counter() - start:.1f} s wall, {time.process_time() - cpu:.1f} s CPU")
    q = np.clip(p + np.random.default_rng(1).normal(0, 0.05, p.shape).astype(np.float32), 0, 1)
    start, cpu = time.perf_counter(), time.process_time()
    paired_bootstrap(y, p, q, resamples=r, seed=0)
    print(f"paired bootstrap of two full-precision tables: {time.perf_counter() - start:.1f} s wall, "
          f"{time.process_time() - cpu:.1f} s CPU")


if __name__ == "__main__":
    main()
