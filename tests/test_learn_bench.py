"""The benchmark functions report figures that agree with each other and with
FLOP counts recomputed here by hand (tiny sizes; no speed is asserted: speed
targets belong to `fedsim bench`)."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fedsim.bench import learn as bench
from fedsim.learn.spec import FLConfig, PretrainConfig


def dense_flops_per_sample(sizes: tuple[int, ...]) -> int:
    """Forward 2·Σ in·out, weight gradients the same, input gradients of every
    layer but the first (the trainers never compute the input's gradient)."""
    macs = [a * b for a, b in itertools.pairwise(sizes)]
    return 2 * sum(macs) + 2 * sum(macs) + 2 * sum(macs[1:])


LENET = (784, 300, 100, 10)  # LeNet-300-100 (the paper, Sec. IV-A2)
DAE = (784, 300, 100, 10, 100, 300, 784)  # its encoder + a mirrored decoder


def test_flop_counts_by_hand() -> None:
    assert dense_flops_per_sample(LENET) == 6 * 266_200 - 2 * 784 * 300 == 1_126_800
    assert dense_flops_per_sample(DAE) == 2_724_000


def test_matmul_rate_is_2n3_over_the_best_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a scripted clock (repeats of 3 s and 2 s after the warm-up), the
    rate is 2·n³ / the best time."""
    ticks = iter([0.0, 3.0, 10.0, 12.0])  # start/stop of each timed repeat
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    assert bench.matmul_flops_per_s(size=8, repeats=2) == 2 * 8**3 / 2.0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM")
def test_peak_rss_is_the_kernels_high_water_mark() -> None:
    peak_mb = bench.peak_rss_mb()
    status = Path("/proc/self/status").read_text()
    hwm_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    assert peak_mb == pytest.approx(hwm_kb / 1024.0, abs=1.0)  # the same counter, read twice


def _floor_relations(out: dict, key: str, flops: float) -> None:
    """floor = FLOPs / the probed matmul rate; over_floor = time / floor (one repeat)."""
    rate = out[f"{key}_matmul_gflops"] * 1e9
    assert out[f"floor_{key}_s"] == pytest.approx(flops / rate, rel=1e-12)
    assert out[f"{key}_over_floor"] == pytest.approx(out[f"{key}_s"] / out[f"floor_{key}_s"], rel=1e-12)
    assert out[f"{key}_over_floor_best"] == pytest.approx(out[f"{key}_over_floor"], rel=1e-12)


def test_round_benchmark_floor_is_the_hand_counted_flops() -> None:
    cfg = FLConfig(local_epochs=2)
    out = bench.bench_batched_round(num_clients=3, samples_per_client=50, cfg=cfg, repeats=1, matmul_size=256)
    flops = 3 * 50 * 2 * dense_flops_per_sample(LENET)
    assert out["round_gflop"] == pytest.approx(flops / 1e9, rel=1e-12)
    _floor_relations(out, "round", flops)
    assert out["round_clients"] == 3 and out["round_block_clients"] <= 3
    # a sparse mask keeps the dense floor: the masking passes are extra work
    sparse = bench.bench_batched_round(num_clients=2, samples_per_client=20, cfg=cfg, repeats=1,
                                       sparse=True, matmul_size=256)
    assert sparse["round_gflop"] == pytest.approx(2 * 20 * 2 * dense_flops_per_sample(LENET) / 1e9)
    _floor_relations(sparse, "sparse_round", sparse["round_gflop"] * 1e9)


def test_medians_over_repeats_bound_the_best() -> None:
    out = bench.bench_batched_round(num_clients=2, samples_per_client=20, cfg=FLConfig(local_epochs=1),
                                    repeats=3, matmul_size=128)
    assert 0 < out["round_over_floor_best"] <= out["round_over_floor"]
    rate = out["round_matmul_gflops"] * 1e9
    assert out["floor_round_s"] == pytest.approx(out["round_gflop"] * 1e9 / rate, rel=1e-12)


def test_sequential_and_pretrain_floors() -> None:
    seq = bench.bench_sequential_round(num_clients=2, samples_per_client=30, cfg=FLConfig(local_epochs=1),
                                       matmul_size=256)
    floor_s = 2 * 30 * dense_flops_per_sample(LENET) / (seq["sequential_matmul_gflops"] * 1e9)
    assert seq["sequential_over_floor"] == pytest.approx(seq["sequential_round_s"] / floor_s, rel=1e-12)
    pre = bench.bench_pretrain_epoch(num_samples=200, cfg=PretrainConfig(), repeats=1, matmul_size=256)
    flops = 200 * dense_flops_per_sample(DAE)
    assert pre["pretrain_epoch_gflop"] == pytest.approx(flops / 1e9, rel=1e-12)
    assert pre["pretrain_epoch_over_floor"] == pytest.approx(
        pre["pretrain_epoch_s"] / pre["floor_pretrain_epoch_s"], rel=1e-12)
    assert pre["pretrain_epoch_over_floor_best"] == pytest.approx(pre["pretrain_epoch_over_floor"], rel=1e-12)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_cuda_benchmark_is_skipped_without_a_gpu() -> None:
    assert bench.bench_cuda_round() == {"cuda_round_s": None, "cuda_skipped": "no CUDA device"}
