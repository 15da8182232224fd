"""Per-method training settings (``methods.<label>.compression / server /
proximal_mu``): one lookup (`effective_fl`) for training, keys and bytes;
existing keys unchanged; one scenario comparing FedAvg and 8-bit QSGD."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedsim import config, pipeline
from fedsim.cli import main
from fedsim.learn.masks import Mask
from fedsim.learn.methods import effective_fl
from fedsim.learn.model import LENET_SIZES, layer_shapes
from fedsim.learn.spec import CompressionConfig, FLConfig, MethodConfig, ServerConfig
from fedsim.pipeline import keys
from fedsim.system.payload import payload_bytes

QSGD8 = "{kind: qsgd, bits: 8}"
CPU = torch.device("cpu")


def _load(path: Path, *overrides: str) -> config.Scenario:
    return config.load(path, list(overrides))


def test_effective_fl_takes_the_method_then_the_scenario() -> None:
    fl = FLConfig(lr=0.05, compression=CompressionConfig(kind="topk", fraction=0.1), proximal_mu=0.2)
    assert effective_fl(fl, MethodConfig(kind="original")) is fl  # nothing of its own: the same section
    own = effective_fl(fl, MethodConfig(kind="original", compression=CompressionConfig(kind="qsgd", bits=8),
                                        server=ServerConfig(optimizer="fedavgm"), proximal_mu=0.0))
    assert own.compression == CompressionConfig(kind="qsgd", bits=8)
    assert own.server == ServerConfig(optimizer="fedavgm")
    assert own.proximal_mu == 0.0  # an explicit 0 overrides the scenario's 0.2
    assert own.lr == 0.05  # the rest is the scenario's


def test_a_method_without_settings_keeps_its_keys(tiny_path: Path) -> None:
    """Adding a compressed method to a scenario changes no key of the others
    (tests/test_keys.py pins those of the shipped scenarios)."""
    base = _load(tiny_path)
    more = _load(tiny_path, f"methods.q8={{kind: original, compression: {QSGD8}}}")
    for label in base.methods:
        assert keys.train_key(more, more.methods[label], None, CPU) == keys.train_key(base, base.methods[label], None, CPU)
        assert keys.system_group(more, label, tiny_path.parent) == keys.system_group(base, label, tiny_path.parent)
        assert keys.train_group(more, label, tiny_path.parent) == keys.train_group(base, label, tiny_path.parent)


def test_the_train_key_holds_the_effective_settings(tiny_path: Path) -> None:
    s = _load(tiny_path, f"methods.q8={{kind: original, compression: {QSGD8}}}",
              "methods.q4={kind: original, compression: {kind: qsgd, bits: 4}}",
              "methods.prox={kind: original, proximal_mu: 0.1}",
              "methods.adam={kind: original, server: {optimizer: fedadam}}")
    train = {label: keys.train_key(s, m, None, CPU) for label, m in s.methods.items()}
    assert len(set(train.values())) == len(train)  # every setting is its own cache entry
    # the same settings set scenario-wide train the same way: the same entry
    wide = _load(tiny_path, f"fl.compression={QSGD8}")
    assert keys.train_key(wide, wide.methods["original"], None, CPU) == train["q8"]
    wide_prox = _load(tiny_path, "fl.proximal_mu=0.1")
    assert keys.train_key(wide_prox, wide_prox.methods["original"], None, CPU) == train["prox"]
    # a server optimiser or μ changes neither the bytes nor the timing: one simulation
    groups = {label: keys.system_group(s, label, tiny_path.parent) for label in ("original", "prox", "adam")}
    assert len(set(groups.values())) == 1
    assert keys.system_group(s, "q8", tiny_path.parent) != groups["original"]


def test_the_system_stage_counts_the_methods_compression(tiny_path: Path) -> None:
    s = _load(tiny_path, f"methods.q8={{kind: original, compression: {QSGD8}}}")
    mask = Mask.dense(layer_shapes(LENET_SIZES))
    plain, _ = pipeline.payload_and_work(s, mask, s.methods["original"])
    q8, _ = pipeline.payload_and_work(s, mask, s.methods["q8"])
    n = 266_610
    assert plain.up_bytes == plain.down_bytes == 4 * n  # values only, no overhead in tiny.yaml
    assert q8.down_bytes == plain.down_bytes  # the download is the full-precision model
    assert q8.up_bytes == math.ceil((8 * n + 32) / 8)  # bits n + a float32 norm
    weights = [i * o for i, o in layer_shapes(LENET_SIZES)]
    assert q8 == payload_bytes(weights, weights, sum(LENET_SIZES[1:]), s.system.payload,
                               CompressionConfig(kind="qsgd", bits=8))
    samples = np.full(4, 100)
    assert (keys.system_key(s, q8, 1.0, samples, None, s.methods["q8"])
            != keys.system_key(s, q8, 1.0, samples, None, s.methods["original"]))


@pytest.mark.parametrize(("override", "path"), [
    ("methods.q={kind: original, compression: {kind: qsgd}}", "methods.q.compression"),
    ("methods.q={kind: original, proximal_mu: -1}", "methods.q.proximal_mu"),
    ("methods.q={kind: original, server: {optimizer: sgd}}", "methods.q.server.optimizer"),
])
def test_bad_method_settings_exit_2_naming_the_key(tiny_path: Path, capsys: pytest.CaptureFixture[str],
                                                   override: str, path: str) -> None:
    assert main(["validate", str(tiny_path), "--set", override]) == 2
    assert path in capsys.readouterr().err


def test_one_scenario_compares_fedavg_and_8bit_qsgd(tiny_path: Path, cache_root: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-method 8-bit method trains with quantised updates (its trace is
    that of a scenario-wide ``fl.compression``, computed in another cache) and
    is reported with the 8-bit upload's bytes."""
    rounds = ["rounds.max=2"]
    s = _load(tiny_path, *rounds, f"methods={{original: {{}}, q8: {{kind: original, compression: {QSGD8}}}}}")
    result = pipeline.compute(s, base_dir=tiny_path.parent)
    by = {label: r for label, r in result.methods.items()}
    assert not np.array_equal(by["q8"].trace.rounds["loss"], by["original"].trace.rounds["loss"])
    n, clients = 266_610, 4
    round_bytes = result.rounds.set_index(["method", "round"])["round_bytes"]
    assert round_bytes[("original", 2)] == clients * 2 * 4 * n
    assert round_bytes[("q8", 2)] == clients * (4 * n + math.ceil((8 * n + 32) / 8))

    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "other-cache"))
    wide = _load(tiny_path, *rounds, "methods={original: {}}", f"fl.compression={QSGD8}")
    alone = pipeline.compute(wide, base_dir=tiny_path.parent).methods["original"].trace.rounds
    pd.testing.assert_frame_equal(alone[["accuracy", "loss"]], by["q8"].trace.rounds[["accuracy", "loss"]])
