"""benchmarks/bench_throughput.py keeps running: its tiny CPU mode end to end, and its model list."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_tiny_cpu_mode_runs_the_whole_path(bench, one_thread, capsys):
    results = bench.main(["--device", "cpu", "--tiny", "--workers", "1"])
    assert [(r.model, r.size, r.batch) for r in results] == [("resnet10t", 32, 4)]
    result = results[0]
    assert result.model_only > 0 and result.pipeline > 0 and result.loader > 0
    assert result.ratio == pytest.approx(result.pipeline / result.model_only)
    out = capsys.readouterr().out
    assert "(b)/(a)" in out and f"{result.ratio:.0%}" in out and "resnet10t" in out


def test_gpu_models_exist_in_timm(bench):
    import timm

    parsed = [bench.parse_model(m) for m in bench.GPU_MODELS]
    assert [size for _, size in parsed] == [224, 224, 224, 224, 384]
    assert all(timm.is_model(name) for name, _ in parsed), [n for n, _ in parsed if not timm.is_model(n)]


def test_defaults_follow_the_device(bench):
    gpu = bench.parse_args(["--device", "cuda"])
    assert (gpu.precision, gpu.channels_last, gpu.models) == ("bf16", True, list(bench.GPU_MODELS))
    cpu = bench.parse_args(["--device", "cpu", "--tiny", "--no-channels-last", "--precision", "32"])
    assert (cpu.precision, cpu.channels_last, cpu.steps, cpu.workers) == ("32", False, 2, 1)


def test_ratio_and_table(bench):
    row = bench.Result("densenet121", 224, 256, model_only=3200.0, pipeline=3040.0, loader=9000.0)
    assert row.ratio == pytest.approx(0.95)
    line = bench.format_table([row]).splitlines()[1]
    assert line.split() == ["densenet121", "224", "256", "3200.0", "3040.0", "95%", "9000.0"]
