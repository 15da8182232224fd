"""The benchmark functions run and report consistent figures (tiny sizes)."""

from __future__ import annotations

import pytest
import torch

from fedsim.learn import bench
from fedsim.learn.spec import FLConfig, PretrainConfig


def test_matmul_rate_and_rss_are_positive():
    assert bench.matmul_flops_per_s(size=256, repeats=1) > 1e8
    assert bench.peak_rss_mb() > 10


def test_round_benchmark_reports_time_and_floor():
    out = bench.bench_batched_round(num_clients=3, samples_per_client=50, cfg=FLConfig(local_epochs=1), repeats=1, matmul_size=256)
    assert out["round_s"] > 0 and out["floor_round_s"] > 0
    assert out["round_gflop"] == pytest.approx(3 * 50 * 1_126_800 / 1e9)
    assert out["round_over_floor"] == pytest.approx(out["round_s"] / out["floor_round_s"], rel=1e-9)
    sparse = bench.bench_batched_round(num_clients=2, samples_per_client=20, cfg=FLConfig(local_epochs=1), repeats=1, sparse=True,
                               matmul_size=256)
    assert sparse["sparse_round_s"] > 0


def test_sequential_and_pretrain_benchmarks_run():
    seq = bench.bench_sequential_round(num_clients=2, samples_per_client=30, cfg=FLConfig(local_epochs=1), matmul_size=256)
    assert seq["sequential_round_s"] > 0
    pre = bench.bench_pretrain_epoch(num_samples=200, cfg=PretrainConfig(), repeats=1, matmul_size=256)
    assert pre["pretrain_epoch_s"] > 0 and pre["pretrain_epoch_gflop"] == pytest.approx(200 * 2_724_000 / 1e9)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_cuda_benchmark_is_skipped_without_a_gpu():
    assert bench.bench_cuda_round() == {"cuda_round_s": None, "cuda_skipped": "no CUDA device"}
