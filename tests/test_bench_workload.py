"""`fedsim bench --only workload` (`fedsim.bench.workload`): every row runs at a
tiny size and produces its fields, sizes and verdicts (no timing assertions)."""

from __future__ import annotations

import math

import pytest

from fedsim import bench
from fedsim.bench import workload
from fedsim.learn.spec import FLConfig

TINY = FLConfig(batch_size=16, local_epochs=1)


def _check(out: dict, ratios: list[str]) -> None:
    for name in ratios:
        value = out[name]
        assert isinstance(value, float) and math.isfinite(value)
        limit, kind = workload.TARGETS[name]
        assert out[f"{name}_target"] == (f"<= {limit:g}" if kind == "max" else f">= {limit:g}")
        assert out[f"{name}_met"] is (value <= limit if kind == "max" else value >= limit)
    for key, value in out.items():
        if key.endswith("_s"):
            assert value > 0, key


def test_interleaved_calls_each_run_warm_up_plus_repeats() -> None:
    calls: list[str] = []
    best = workload.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2)
    assert calls == ["a", "b", "a", "b", "a", "b"]  # warm-up, then interleaved
    assert set(best) == {"a", "b"} and all(len(v) == 2 and v[0] >= 0 and v[1] >= 0 for v in best.values())


def test_generic_mlp_row() -> None:
    out = workload.bench_generic_mlp(3, 40, TINY, repeats=1, loop_clients=2)
    assert (out["mlp_clients"], out["mlp_samples_per_client"], out["mlp_loop_clients"]) == (3, 40, 2)
    assert out["generic_engine"] == "vmap"
    _check(out, ["generic_over_kernel", "mlp_loop_over_generic"])
    assert out["generic_over_kernel"] == pytest.approx(out["generic_round_cpu_s"] / out["kernel_round_cpu_s"])


def test_lenet5_row_reports_its_flop_floor() -> None:
    out = workload.bench_lenet5(3, 40, TINY, repeats=1, loop_clients=1, matmul_size=256)
    assert out["lenet5_engine"] == "stacked" and out["lenet5_block_clients"] == 3
    _check(out, ["lenet5_loop_over_batched"])
    # 2,263,920 FLOP per sample x 120 samples x 1 epoch
    assert out["lenet5_round_gflop"] == pytest.approx(2_263_920 * 120 / 1e9)
    assert out["lenet5_over_floor"] == pytest.approx(out["lenet5_round_s"] / out["lenet5_floor_s"])


def test_compression_row() -> None:
    out = workload.bench_compression(3, 40, TINY, repeats=1)
    _check(out, ["qsgd_overhead", "topk_overhead"])
    assert out["compression_clients"] == 3


def test_workload_is_a_bench_part() -> None:
    assert "workload" in bench.PARTS


def test_the_faster_compression_paths_give_the_same_bits() -> None:
    """qsgd one client at a time and in place, top-k unsorted: the same values
    as the plain formulas (module docstring of `fedsim.learn.compression`)."""
    import numpy as np
    import torch

    from fedsim.learn import compression
    from fedsim.learn.spec import CompressionConfig

    gen = torch.Generator().manual_seed(0)
    deltas = torch.randn(5, 3000, generator=gen)
    deltas[:, :50] = 0.0
    deltas[3] = 0.0  # a client whose update is zero
    ids = np.array([4, 0, 7, 2, 9])
    noise = compression.qsgd_noise(11, ids, 3, 3000, torch.device("cpu"))
    for norm, bits in (("max", 8), ("l2", 3)):
        cfg = CompressionConfig(kind="qsgd", bits=bits, norm=norm)
        got, _ = compression.transform(cfg, deltas, ids, torch.ones(3000, dtype=torch.bool), {}, seed=11,
                                       round_num=3)
        scale = deltas.abs().amax(1, keepdim=True) if norm == "max" else deltas.norm(dim=1, keepdim=True)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        u = deltas.abs() / safe * cfg.levels
        want = torch.sign(deltas) * (torch.floor(u) + (noise < u - torch.floor(u)).float()) * (scale / cfg.levels)
        assert torch.equal(got, want)
    allowed = torch.rand(3000, generator=gen) < 0.7
    sent, residual = compression.topk(deltas, 100, allowed)
    for row in range(5):
        score = deltas[row].abs().masked_fill(~allowed, -1.0)
        chosen = torch.zeros(3000, dtype=torch.bool)
        chosen[torch.topk(score, 100).indices] = True
        if row != 3:  # a zero row: any 100 zeros are the same values
            assert torch.equal(sent[row] != 0, chosen & (deltas[row] != 0))
        assert torch.equal(sent[row] + residual[row], deltas[row])
