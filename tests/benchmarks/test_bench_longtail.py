"""benchmarks/bench_longtail.py: the methods it names become the variants of one valid `cxrlt sweep`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from cxrlt.config import load_yaml
from cxrlt.runs.folder import SweepFolder
from cxrlt.runs.sweep import SweepSpec, named_variant, plan_runs

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "benchmark").glob("longtail-*.yaml"))


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_longtail", REPO / "benchmarks" / "bench_longtail.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_methods_become_variants_and_every_other_argument_goes_to_the_sweep():
    bench = load_bench()
    arguments = bench.sweep_arguments(["configs/benchmark/longtail-nih.yaml", "--methods", "bce", "cal+crt",
                                       "--seeds", "0,1", "--out", "runs/b", "--jobs", "2"])
    assert arguments == ["sweep", "configs/benchmark/longtail-nih.yaml", "--variant", "bce:", "--variant",
                         f"cal+crt:loss.name=class_aware,{bench.CRT}", "--seeds", "0,1", "--out", "runs/b",
                         "--jobs", "2"]
    assert bench.DEFAULT[0] == "bce"  # the baseline of the published tables


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_method_is_a_valid_run_and_crt_reuses_its_plain_first_stage(path, tmp_path):
    bench = load_bench()
    arguments = bench.sweep_arguments([str(path), "--methods", *bench.METHODS])
    variants = [named_variant(arguments[i + 1]) for i, item in enumerate(arguments) if item == "--variant"]
    runs = plan_runs(load_yaml(path), SweepSpec.build(variants, (0, 1), None), SweepFolder(tmp_path))
    by_key = {run.key: run for run in runs}
    assert {run.key: run.donor.key for run in runs if run.donor} == {
        f"{name}/seed{seed}": f"{'cal' if name == 'cal+crt' else 'bce'}/seed{seed}"
        for seed in (0, 1) for name in ("bce+crt", "cal+crt", "bce+crt_cal", "bce+rt")}
    assert by_key["cal/seed0"].config.loss.name == "class_aware"
    assert by_key["en_focal/seed1"].config.loss.name == "effective_number_focal"
    assert by_key["bce+cycle/seed0"].config.train.sampler.name == "cycle"
    assert by_key["db/seed0"].config.loss.name == "distribution_balanced"
    assert by_key["la/seed1"].config.loss.name == "logit_adjusted"
    ldam = by_key["ldam_drw/seed0"].config.loss
    assert ldam.name == "ldam" and ldam.model_dump()["drw_after"] == 5
    crt = by_key["cal+crt/seed0"].config.stage_list()[1]
    assert crt.freeze_backbone and crt.epochs == 3 and by_key["cal+crt/seed0"].config.loss.name == "class_aware"
    assert by_key["bce+crt_cal/seed0"].config.stage_list()[1].loss.name == "class_aware"
    assert by_key["bce+rt/seed0"].config.stage_list()[1].sampler.name == "instance"
    assert set(bench.DEFAULT) | set(bench.CLASSIFIER) <= set(bench.METHODS)
    assert all(not run.config.evaluation.report for run in runs)  # a sweep reads metrics and predictions only
