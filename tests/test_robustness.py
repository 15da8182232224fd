"""Robustness: cache entries whose checksums match but whose content cannot be
decoded, staging directories left by an interrupted report, memory bounded by
the trainer's chunk of clients, and rounds that aggregate nobody."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedsim import config, pipeline, store
from fedsim.learn.federated import ClientData, _BatchedMLP, train, train_participants
from fedsim.learn.masks import Mask
from fedsim.learn.model import LENET_SIZES, encoder, init_dae, layer_shapes
from fedsim.learn.spec import FLConfig
from fedsim.report.scenario.tables import empty_rounds, summary_markdown

# --------------------------------------------------------------------------- undecodable cache entries


def make_undecodable(entry: store.CacheEntry, name: str) -> None:
    """Overwrite one file of a sealed entry with bytes no reader decodes, and
    seal it again: the checksums match, the content is garbage. A zip header
    first, so that numpy raises zipfile.BadZipFile, not a ValueError."""
    (entry.path / name).write_bytes(b"PK\x03\x04" + b"written by a bug\x00" * 64)
    manifest = entry.manifest()
    assert manifest is not None
    entry.seal(list(manifest["files"]), manifest["info"])
    assert entry.valid()


def test_an_undecodable_system_entry_is_recomputed_with_a_warning(
        tiny_path: Path, cache_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    scenario = config.load(tiny_path)
    mask = Mask.dense(layer_shapes(LENET_SIZES))
    samples = np.full(4, 100)
    first, payload, work = pipeline.system_stage(scenario, mask, samples, tiny_path.parent)
    entry = store.CacheEntry("system", pipeline.system_key(scenario, payload, work, samples, tiny_path.parent))
    make_undecodable(entry, "timeline.parquet")

    with caplog.at_level(logging.WARNING, logger="fedsim.pipeline"):
        again, _, _ = pipeline.system_stage(scenario, mask, samples, tiny_path.parent)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(entry.path) in warnings[0] and "cannot be decoded" in warnings[0]
    pd.testing.assert_frame_equal(again.timeline, first.timeline)
    # the recomputed entry replaced the bad one: the next run reads it quietly
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fedsim.pipeline"):
        pipeline.system_stage(scenario, mask, samples, tiny_path.parent)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert pd.read_parquet(entry.path / "timeline.parquet").equals(first.timeline)


@pytest.mark.parametrize("bad", ["trace.r000002.npz", "params.r000002.npz"])
def test_an_undecodable_training_checkpoint_is_dropped_with_a_warning(
        cache_root: Path, caplog: pytest.LogCaptureFixture, bad: str) -> None:
    entry = store.CacheEntry("train", "0123456789abcdef")
    for name in ("trace.r000002.npz", "params.r000002.npz"):
        entry.file(name).write_bytes(b"not an npz file")
    entry.seal(["trace.r000002.npz", "params.r000002.npz"], {"rounds": 2})
    make_undecodable(entry, bad)
    with caplog.at_level(logging.WARNING, logger="fedsim.pipeline"):
        assert pipeline._load_checkpoint(entry) is None
    assert any(str(entry.path) in r.getMessage() for r in caplog.records)
    assert not entry.path.exists()  # removed, so the retrained run writes a fresh entry


def test_a_run_over_undecodable_entries_recomputes_them_and_cleans_stale_staging(
        tiny_path: Path, cache_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scenario = config.load(tiny_path)
    out = tmp_path / "out"
    first = pipeline.run(scenario, out_dir=out, base_dir=tiny_path.parent)
    # every stage's entry made undecodable (checksums matching)
    make_undecodable(store.CacheEntry("pretrain", first.cache_keys["pretrain"]), "ticket.npz")
    for label in scenario.methods:
        entry = store.CacheEntry("train", first.cache_keys[f"train/{label}"])
        make_undecodable(entry, next(n for n in entry.manifest()["files"] if n.startswith("trace")))
    # a report interrupted before it moved its files into place
    stale = out / ".partial-q1w2e3r4"
    (stale / "figures").mkdir(parents=True)
    (stale / "metrics.csv").write_text("half written")

    with caplog.at_level(logging.WARNING, logger="fedsim.pipeline"):
        second = pipeline.run(scenario, out_dir=out, base_dir=tiny_path.parent)
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "pre-training cache entry" in warned
    assert warned.count("cannot be decoded") == 1 + len(scenario.methods)  # pretrain + each training
    pd.testing.assert_frame_equal(second.metrics, first.metrics)
    assert not list(out.glob(".partial-*"))


def test_only_staging_of_dead_or_unknown_processes_is_removed(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(done.stdout)
    legacy = tmp_path / ".partial-abcd1234"
    dead = tmp_path / f".partial-{dead_pid}-x1y2"
    live = tmp_path / f".partial-{os.getppid()}-z9z9"  # another running process: maybe writing now
    keep = tmp_path / "figures"
    for path in (legacy, dead, live, keep):
        path.mkdir()
    removed = pipeline.remove_stale_staging(tmp_path)
    assert sorted(removed) == sorted([legacy, dead])
    assert live.is_dir() and keep.is_dir() and not legacy.exists() and not dead.exists()


# --------------------------------------------------------------------------- memory: chunks of clients

SIZES = (70, 60, 5, 165, 0, 33, 12)
CFG = FLConfig(batch_size=16, local_epochs=2)


@pytest.fixture(scope="module")
def clients() -> ClientData:
    gen = np.random.default_rng(0)
    images = gen.integers(0, 256, (sum(SIZES), 28, 28), dtype=np.uint8)
    bounds = np.cumsum((0, *SIZES))
    parts = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(SIZES))]
    return ClientData.from_arrays(images, gen.integers(0, 10, sum(SIZES)), parts)


def test_a_round_in_small_chunks_equals_one_in_a_single_chunk(clients: ClientData) -> None:
    theta0 = encoder(init_dae("glorot_uniform", 3))
    mask = Mask.dense(layer_shapes(LENET_SIZES))
    gen = np.random.default_rng(1)
    test = torch.from_numpy(gen.random((50, 784), dtype=np.float32)), torch.from_numpy(gen.integers(0, 10, 50))
    kept: dict[int, list] = {}
    traces = {}
    for stack in (2, 3, 1000):
        kept[stack] = []
        traces[stack] = train(theta0, mask, clients, test, CFG, seed=5, rounds=2, block_clients=2,
                              stack_clients=stack, on_round=lambda r, p, rec, s=stack: kept[s].append(p))
    for stack in (2, 3):
        for small, whole in zip(kept[stack], kept[1000], strict=True):
            for a, b in zip(small.tensors(), whole.tensors(), strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        pd.testing.assert_frame_equal(traces[stack].client_rounds, traces[1000].client_rounds)
        np.testing.assert_allclose(traces[stack].rounds["loss"], traces[1000].rounds["loss"], rtol=1e-5)
    # and training moved the model: the comparison is not between two copies of theta0
    assert (kept[1000][-1].weights[0] - theta0.weights[0]).abs().max() > 1e-3


def test_a_chunked_round_holds_only_one_chunk_of_models(clients: ClientData) -> None:
    theta0 = encoder(init_dae("glorot_uniform", 3))
    mask = Mask.dense(layer_shapes(LENET_SIZES))
    ids = np.arange(len(SIZES))
    sizes = {}
    for stack in (3, len(SIZES)):
        model = _BatchedMLP(clients, mask, CFG, torch.device("cpu"), block_clients=2)
        _, samples, steps = train_participants(model, theta0, clients, ids, CFG, seed=0, round_num=1,
                                               stack_clients=stack)
        sizes[stack] = int(model.w1.shape[0])  # trained models held at once
        assert samples.tolist() == list(SIZES)
        assert steps.tolist() == [-(-n // 16) * 2 for n in SIZES]  # ceil(n / 16) steps x 2 epochs
    assert sizes == {3: 3, len(SIZES): len(SIZES)}


# --------------------------------------------------------------------------- rounds without participants


def test_empty_rounds_are_counted_per_method_and_said_in_the_summary() -> None:
    rounds = pd.DataFrame({
        "method": ["a"] * 4 + ["b"] * 4,
        "round": [1, 2, 3, 4] * 2,
        "participants": [3, 0, 0, 2, 5, 5, 0, 5],
    })
    assert empty_rounds(rounds) == {"a": 2, "b": 1}
    assert empty_rounds(rounds.assign(participants=1)) == {}
    text = summary_markdown([], {"name": "x"}, rounds=rounds)
    assert "a: 2 of 4 rounds aggregated nobody." in text and "b: 1 of 4 rounds aggregated nobody." in text
    assert "aggregated nobody" not in summary_markdown([], {"name": "x"}, rounds=rounds.assign(participants=1))


def test_a_run_with_empty_rounds_warns_in_the_log_and_the_summary(
        tiny_path: Path, cache_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # dropout 0.9 of 4 clients: a round is empty with probability 0.9^4 = 0.66
    scenario = config.load(tiny_path, ("system.rounds.dropout=0.9", "methods={original: {}}"))
    with caplog.at_level(logging.WARNING, logger="fedsim.pipeline"):
        result = pipeline.run(scenario, out_dir=tmp_path / "out", base_dir=tiny_path.parent)
    n_empty = int((result.methods["original"].system.rounds["participants"] == 0).sum())
    assert n_empty > 0, "seed 0 draws no empty round; pick another dropout"
    expected = f"original: {n_empty} of 3 rounds aggregated nobody."
    assert any(expected in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert expected in (tmp_path / "out" / "summary.md").read_text()
