"""A method plugin's code hooks (`fedsim.learn.plugins`): a client-update
``transform`` with per-client state (checkpointed, resume bit-exact), an
``aggregate`` replacing FedAvg + server step, and the ``upload_bits`` /
``download_bits`` encoding the system stage counts; a failing hook exits 1;
and `fedsim.learn.compression.topk_indices` selects exactly what
``torch.topk`` selects."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedsim import config, store
from fedsim.cli import main
from fedsim.errors import InputError
from fedsim.learn import methods, plugins
from fedsim.learn.aggregation import MethodState, train_participants_hooked
from fedsim.learn.compression import topk_indices
from fedsim.learn.federated import train
from fedsim.learn.masks import Mask
from fedsim.learn.model import Params, encoder, init_dae
from fedsim.learn.schedule import ClientData
from fedsim.learn.spec import FLConfig
from fedsim.learn.trace import TrainState
from fedsim.pipeline import stages
from fedsim.system.payload import payload_bytes
from fedsim.system.spec import PayloadSpec

TINY = Path(__file__).parent / "scenarios" / "tiny.yaml"

HOOKS = """
    import torch
    from fedsim.learn.masks import Mask
    from fedsim.learn.methods import Start

    SEEN = []  # the size of every update the transform sent (the bytes test reads it)

    class SignEF:
        '''1-bit signs with one float32 scale (mean |a|), error feedback.'''
        version = 1
        def start(self, source, cfg, seed):
            theta = source.theta0_encoder
            return Start(theta, Mask.dense_like(theta))
        def transform(self, delta, state, client_id):
            a = delta if state is None else delta + state
            sent = a.abs().mean() * torch.sign(a)
            SEEN.append(sent.numel())
            return sent, a - sent
        def upload_bits(self, sent_params):
            return sent_params + 32

    class Median(SignEF):
        def aggregate(self, params, deltas, weights, server_state):
            return params + deltas.median(dim=0).values, {"calls": server_state.get("calls", torch.zeros(1)) + 1}

    class RaisesInRound2(SignEF):
        def transform(self, delta, state, client_id, round_num):
            if round_num == 2:
                raise ZeroDivisionError("boom in round 2")
            return delta, None

    class BadOutput(SignEF):
        def transform(self, delta, state, client_id):
            return delta

    class NotCallable(SignEF):
        aggregate = 3

    SIGN = SignEF()
    MEDIAN = Median()
    RAISES = RaisesInRound2()
    BAD_OUTPUT = BadOutput()
    NOT_CALLABLE = NotCallable()
"""


@pytest.fixture(autouse=True)
def _fresh_plugins():
    before = set(sys.modules)
    plugins.forget()
    yield
    plugins.forget()
    for name in set(sys.modules) - before:
        if name.startswith("plug_"):
            del sys.modules[name]


def _plugin(tmp_path: Path, obj: str) -> str:
    """plug_hooks.py (``HOOKS``) in ``tmp_path``, imported; its kind ``plug_hooks:obj``."""
    (tmp_path / "plug_hooks.py").write_text(textwrap.dedent(HOOKS))
    kind = f"plug_hooks:{obj}"
    plugins.load(kind, tmp_path)
    return kind


def _scenario(tmp_path: Path, methods_yaml: str, extra: str = "") -> Path:
    """tiny.yaml with ``methods_yaml`` next to plug_hooks.py."""
    (tmp_path / "plug_hooks.py").write_text(textwrap.dedent(HOOKS))
    text = TINY.read_text().split("methods:")[0] + "methods:\n" + textwrap.indent(methods_yaml, "  ")
    text += "\n" + TINY.read_text().split("system:", 1)[1].join(["system:", ""]) + extra
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path


# -- the hooked round on fixed updates: hand computations ---------------------------------


class FixedUpdates:
    """A trainer whose client k returns ``θ + updates[k]`` (one 2x2 layer +
    2 biases: N = 6, flatten order w00 w01 w10 w11 b0 b1)."""

    def __init__(self, updates: dict[int, list[float]]) -> None:
        self.updates = {k: torch.tensor(v) for k, v in updates.items()}

    def train_round(self, params: Params, schedule) -> Params:
        theta = torch.cat([t.reshape(-1) for t in params.tensors()])
        rows = torch.stack([theta + self.updates[int(c)] for c in schedule.client_ids])
        return Params((rows[:, :4].reshape(-1, 2, 2),), (rows[:, 4:],))


def _clients(sizes: list[int]) -> ClientData:
    n = sum(sizes)
    bounds = np.cumsum([0, *sizes])
    return ClientData.from_arrays(np.zeros((n, 28, 28), dtype=np.uint8), np.zeros(n, dtype=np.int64),
                                  [np.arange(bounds[i], bounds[i + 1]) for i in range(len(sizes))])


def _round(kind: str, trainer: FixedUpdates, clients: ClientData, params: Params, mask: Mask,
           state: MethodState, round_num: int) -> tuple[Params, MethodState]:
    cfg = FLConfig(batch_size=1, local_epochs=1).model_copy(update={"hooks": kind})
    ids = np.arange(clients.num_clients)
    new, _, _, new_state = train_participants_hooked(trainer, params, clients, ids, cfg, mask, state, seed=0,
                                                     round_num=round_num, stack_clients=2)
    return new, new_state


def _flat(params: Params) -> list[float]:
    return torch.cat([t.reshape(-1) for t in params.tensors()]).tolist()


ZERO = Params((torch.zeros(2, 2),), (torch.zeros(2),))


def test_a_sign_transform_with_error_feedback_over_two_rounds_by_hand(tmp_path: Path) -> None:
    """Clients 0 and 1 hold 3 and 1 samples (p = 0.75, 0.25); each returns the
    same update in both rounds. Round 1: a = Δ; client 0: mean |a| = 1, sends
    sign(a), keeps a - sign(a); client 1: mean |a| = 2. θ1 = 0.75 s0 + 0.25 s1.
    Round 2: a = Δ + e: client 0 [1, -3, 0, 0, 3, 0], scale 7/6; client 1
    [0, 0, 0, 0, 6, 6], scale 2."""
    kind = _plugin(tmp_path, "SIGN")
    trainer = FixedUpdates({0: [1, -2, 0.5, 0, 2, -0.5], 1: [-1, 1, 1, 1, 4, 4]})
    clients, mask = _clients([3, 1]), Mask.dense_like(ZERO)
    theta1, state1 = _round(kind, trainer, clients, ZERO, mask, MethodState(), 1)
    assert _flat(theta1) == [0.25, -0.25, 1.25, 0.5, 1.25, -0.25]
    assert state1.memory[0].tolist() == [0, -1, -0.5, 0, 1, 0.5]
    assert state1.memory[1].tolist() == [1, -1, -1, -1, 2, 2]
    theta2, state2 = _round(kind, trainer, clients, theta1, mask, state1, 2)
    s = 7 / 6
    assert _flat(theta2) == pytest.approx([0.25 + 0.75 * s, -0.25 - 0.75 * s, 1.25, 0.5, 1.25 + 0.75 * s + 0.5,
                                           -0.25 + 0.5], abs=1e-6)
    assert state2.memory[0].tolist() == pytest.approx([1 - s, -3 + s, 0, 0, 3 - s, 0], abs=1e-6)
    assert state2.memory[1].tolist() == [0, 0, 0, 0, 4, 4]
    assert state1.memory[0].tolist() == [0, -1, -0.5, 0, 1, 0.5]  # the old state is not changed in place


def test_a_median_aggregate_by_hand_with_the_mask_reapplied(tmp_path: Path) -> None:
    """Coordinate-wise median of three updates (FedAvg's weights ignored):
    [1,2,3,4,5,6], [0,0,0,0,0,0], [-1,5,1,1,1,9] -> [0,2,1,1,1,6]; but its
    transform (signs x mean |a|) runs first: scales 3.5, 0, 3 -> sent
    [3.5]*6, [0]*6, [-3,3,3,3,3,3] -> median [0,3,3,3,3,3]; weight w01 is
    pruned, so it stays 0; the server state counts the calls."""
    kind = _plugin(tmp_path, "MEDIAN")
    trainer = FixedUpdates({0: [1, 2, 3, 4, 5, 6], 1: [0] * 6, 2: [-1, 5, 1, 1, 1, 9]})
    mask = Mask((torch.tensor([[True, False], [True, True]]),))
    theta1, state1 = _round(kind, trainer, _clients([1, 2, 3]), ZERO, mask, MethodState(), 1)
    assert _flat(theta1) == [0, 0, 3, 3, 3, 3]
    assert state1.server["calls"].tolist() == [1.0]
    _, state2 = _round(kind, trainer, _clients([1, 2, 3]), theta1, mask, state1, 2)
    assert state2.server["calls"].tolist() == [2.0] and state1.server["calls"].tolist() == [1.0]


@pytest.mark.parametrize(("obj", "message"), [
    ("RAISES", "method 'plug_hooks:RAISES' (module 'plug_hooks'): transform hook raised ZeroDivisionError: "
               "boom in round 2 (client 0)"),
    ("BAD_OUTPUT", "method 'plug_hooks:BAD_OUTPUT' (module 'plug_hooks'): transform hook returned a Tensor, "
                   "not (sent: Tensor[6], state: Tensor or None)"),
])
def test_a_failing_transform_is_a_method_hook_error(tmp_path: Path, obj: str, message: str) -> None:
    kind = _plugin(tmp_path, obj)
    trainer = FixedUpdates({0: [1] * 6})
    with pytest.raises(plugins.MethodHookError) as info:
        _round(kind, trainer, _clients([1]), ZERO, Mask.dense_like(ZERO), MethodState(), 2)
    assert message in str(info.value)


# -- training: resume is bit-exact ----------------------------------------------------------


def test_resume_after_round_1_equals_the_uninterrupted_run_bit_for_bit(tmp_path: Path) -> None:
    """LeNet-300-100 on two random clients, 3 rounds with the sign plugin:
    resumed from round 1's checkpoint arrays (model + error memory), rounds 2
    and 3 are bit-identical; without the memory they are not."""
    kind = _plugin(tmp_path, "SIGN")
    gen = np.random.default_rng(0)
    clients = ClientData.from_arrays(gen.integers(0, 256, (100, 28, 28), dtype=np.uint8),
                                     gen.integers(0, 10, 100), [np.arange(70), np.arange(70, 100)])
    test = (torch.from_numpy(gen.random((20, 784), dtype=np.float32)), torch.from_numpy(gen.integers(0, 10, 20)))
    theta0 = encoder(init_dae("glorot_uniform", 3))
    mask = Mask.dense_like(theta0)
    cfg = FLConfig(batch_size=16, local_epochs=1).model_copy(update={"hooks": kind})

    def run(start: TrainState | None) -> tuple[dict[int, Params], dict[int, MethodState]]:
        models: dict[int, Params] = {}
        states: dict[int, MethodState] = {}
        train(theta0, mask, clients, test, cfg, seed=5, rounds=3, start=start,
              on_round=lambda r, p, rec: models.__setitem__(r, p), on_state=lambda r, s: states.__setitem__(r, s))
        return models, states

    whole, states = run(None)
    assert set(states[1].memory) == {0, 1}
    saved = {**whole[1].to_numpy(), **states[1].to_numpy()}  # as the checkpoint holds them
    resumed, _ = run(TrainState(1, Params.from_numpy(saved), MethodState.from_numpy(saved)))
    assert resumed[2].equal(whole[2]) and resumed[3].equal(whole[3])
    lost, _ = run(TrainState(1, whole[1]))
    assert not lost[3].equal(whole[3])  # the memory matters


# -- bytes: the encoding hooks -----------------------------------------------------------------


def test_payload_bytes_with_an_encoding_by_hand() -> None:
    """10 + 2 weights, 3 biases, 15 values: 32-bit download 60 bytes + 5 overhead;
    upload_bits 47 -> 6 bytes + 5; download_bits 100 -> 13 bytes + 5."""
    spec = PayloadSpec(overhead=5)
    plain = payload_bytes([10, 2], [10, 2], 3, spec)
    assert (plain.down_bytes, plain.up_bytes) == (65, 65)
    coded = payload_bytes([10, 2], [10, 2], 3, spec, upload_bits=47, download_bits=100)
    assert (coded.down_bytes, coded.up_bytes) == (18, 11)
    with pytest.raises(ValueError, match="upload_bits must be an integer >= 0, got -1"):
        payload_bytes([10, 2], [10, 2], 3, spec, upload_bits=-1)


def test_an_encoding_hook_that_returns_no_bit_count_is_a_method_hook_error(tmp_path: Path) -> None:
    kind = _plugin(tmp_path, "SIGN")
    assert stages.encoding_bits(kind, 100) == {"upload_bits": 132}
    entry = methods.get(kind)
    plugins._LOADED[kind] = entry.__class__(**{**entry.__dict__, "download_bits": lambda n: 1.5})
    with pytest.raises(plugins.MethodHookError, match=r"download_bits hook returned 1.5, not an integer"):
        stages.encoding_bits(kind, 100)


def test_a_run_counts_the_bits_its_transform_sent(tmp_path: Path, cache_root: Path) -> None:
    """Through the CLI, 2 rounds of the sign plugin on the tiny scenario (4
    clients, dense): every update the transform sent has 266,610 values, so
    an upload is ceil((266,610 + 32) / 8) = 33,331 bytes, and round_bytes in
    rounds.csv is 4 x (1,066,440 + 33,331)."""
    path = _scenario(tmp_path, "sign: {kind: 'plug_hooks:SIGN'}\n")
    out = tmp_path / "out"
    assert main(["scenario", str(path), "--out", str(out), "--rounds", "2", "--quiet"]) == 0
    seen = set(sys.modules["plug_hooks"].SEEN)
    assert seen == {266_610}  # the update the training used
    upload = math.ceil(methods.get("plug_hooks:SIGN").upload_bits(266_610) / 8)
    assert upload == 33_331
    rounds = pd.read_csv(out / "rounds.csv")
    assert rounds["round_bytes"].tolist() == [4 * (1_066_440 + upload)] * 2


def test_a_hook_that_raises_mid_run_exits_1_and_keeps_the_checkpoint(tmp_path: Path, cache_root: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = _scenario(tmp_path, "bad: {kind: 'plug_hooks:RAISES'}\n")
    assert main(["scenario", str(path), "--out", str(tmp_path / "out"), "--rounds", "3", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert ("methods.bad: method 'plug_hooks:RAISES' (module 'plug_hooks'): transform hook raised "
            "ZeroDivisionError: boom in round 2") in err
    entries = [store.CacheEntry("train", e.name) for e in (cache_root / "train").iterdir()]
    assert [e.manifest()["info"]["rounds"] for e in entries if e.valid()] == [1]  # round 1 kept


# -- bad plugins: exit 2 before any stage ------------------------------------------------------


@pytest.mark.parametrize(("methods_yaml", "message"), [
    ("x: {kind: 'plug_hooks:NOT_CALLABLE'}", "methods.x.kind: 'plug_hooks:NOT_CALLABLE' in module 'plug_hooks': "
                                             "aggregate=3 is not callable"),
    ("x: {kind: 'plug_hooks:SIGN', compression: {kind: qsgd, bits: 8}}",
     "methods.x: method 'plug_hooks:SIGN' has its own transform hook and cannot also take compression 'qsgd'"),
    ("x: {kind: 'plug_hooks:MEDIAN', server: {optimizer: fedadam}}",
     "methods.x: method 'plug_hooks:MEDIAN' has its own aggregate hook and cannot also take a server "
     "optimiser 'fedadam'"),
])
def test_a_bad_or_clashing_hook_exits_2(tmp_path: Path, cache_root: Path, capsys: pytest.CaptureFixture[str],
                                        methods_yaml: str, message: str) -> None:
    path = _scenario(tmp_path, methods_yaml + "\n")
    assert main(["scenario", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (cache_root / "train").exists() or not any((cache_root / "train").iterdir())


def test_fl_hooks_is_not_a_scenario_setting(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"fl.*hooks='x:Y' is set by a method plugin's code hooks"):
        config.load(_scenario(tmp_path, "original: {}\n"), ["fl.hooks=x:Y"])


def test_code_hooks_route_training_and_key_the_bytes(tmp_path: Path) -> None:
    from fedsim.pipeline import keys

    path = _scenario(tmp_path, "original: {}\nsign: {kind: 'plug_hooks:SIGN'}\n")
    scenario = config.load(path)
    plugins.check_methods(scenario, tmp_path)
    fl = methods.effective_fl(scenario.fl, scenario.methods["sign"])
    assert fl.hooks == "plug_hooks:SIGN" and not fl.plain_fedavg
    assert methods.effective_fl(scenario.fl, scenario.methods["original"]) is scenario.fl
    facts = keys.system_facts(scenario, tmp_path, scenario.methods["sign"])
    assert facts["hooks"] == {"kind": "plug_hooks:SIGN", "version": 1}
    assert "hooks" not in keys.system_facts(scenario, tmp_path, scenario.methods["original"])


# -- top-k's selection -------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2_667, 26_661, 70_000])
def test_topk_indices_select_what_torch_topk_selects_ties_included(k: int) -> None:
    """Random magnitudes (no ties), values on a coarse grid (ties at the k-th
    value everywhere), zeros beyond a few nonzeros (k beyond them), blocked
    positions at -1, and a NaN: the same set as ``torch.topk``."""
    n = 266_610
    gen = torch.Generator().manual_seed(k)
    rows = [
        torch.randn(n, generator=gen).abs(),
        torch.randint(0, 40, (n,), generator=gen).float(),
        torch.zeros(n).index_fill_(0, torch.arange(0, n, 1000), 1.0),
        torch.randn(n, generator=gen).abs().masked_fill_(torch.rand(n, generator=gen) < 0.7, -1.0),
        torch.randn(n, generator=gen).abs().index_fill_(0, torch.tensor([5]), float("nan")),
    ]
    for row in rows:
        got = topk_indices(row, k)
        want = torch.topk(row, k, sorted=False).indices
        assert got.numel() == k and set(got.tolist()) == set(want.tolist())


def test_the_examples_sign_hook_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/custom_method/my_method.py:SIGNED: a = Δ + e over the nonzero
    values: [2, -1, 0, 3] -> scale 6 / 3 = 2, sent [2, -2, 0, 2], memory
    [0, 1, 0, 1]; 100 sent values weigh 132 bits."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "examples" / "custom_method"))
    entry = plugins.as_method("my_method:SIGNED", __import__("my_method").SIGNED, "my_method")
    sent, memory = entry.transform(torch.tensor([1.0, -1, 0, 2]), torch.tensor([1.0, 0, 0, 1]), 7)
    assert sent.tolist() == [2, -2, 0, 2] and memory.tolist() == [0, 1, 0, 1]
    assert entry.upload_bits(100) == 132 and entry.has_hooks and entry.proximal_mu == 0.01
    sys.modules.pop("my_method", None)
