"""The run policy and the training stage's small parts: resume, continue,
completeness and checkpoints (on a schedule, at the end, on an interrupt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedsim import config, pipeline, store
from fedsim.errors import InputError
from fedsim.learn import methods as learn_methods
from fedsim.learn.model import Params, init_params
from fedsim.learn.trace import RoundRecord, TrainingTrace
from fedsim.pipeline import training
from fedsim.pipeline.policy import DEFAULT_POLICY, RunPolicy
from fedsim.pipeline.training import Checkpointer, is_complete, load_checkpoint, load_or_resume

TINY = Path(__file__).parent / "scenarios" / "tiny.yaml"
CPU = torch.device("cpu")


def _params(seed: int) -> Params:
    return init_params([4, 3, 2], "glorot_uniform", torch.Generator().manual_seed(seed))


def _record(round_num: int, accuracy: float = 0.5) -> RoundRecord:
    ids = np.array([0, 1])
    return RoundRecord(round_num, accuracy, 1.0, 2, ids, np.array([10, 10]), np.array([5, 5]))


def _trace(accuracies: list[float]) -> TrainingTrace:
    return TrainingTrace.from_records([_record(r + 1, a) for r, a in enumerate(accuracies)], {"label": "x"})


def _files(entry: store.CacheEntry) -> list[str]:
    return sorted((entry.manifest() or {}).get("files", {}))


def _checkpointed(entry: store.CacheEntry, accuracies: list[float], params: Params) -> None:
    """Seal a checkpoint after ``len(accuracies)`` rounds into ``entry``."""
    saver = Checkpointer(entry, None, {"label": "x"}, every=1000, last_round=1000)
    for r, a in enumerate(accuracies, start=1):
        saver.on_round(r, params, _record(r, a))
    saver.finish()


# --------------------------------------------------------------------------- the policy


def test_the_policy_rejects_contradictions() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        RunPolicy(force=True, cached_only=True)
    with pytest.raises(ValueError, match="continue_from"):
        RunPolicy(continue_from="tpu")
    assert RunPolicy(continue_from="cuda").continue_from == "cuda"


def test_compute_takes_a_policy_or_the_flags_not_both() -> None:
    scenario = config.load(TINY)
    with pytest.raises(ValueError, match="either policy or the flags"):
        pipeline.compute(scenario, force=True, policy=RunPolicy())
    with pytest.raises(ValueError, match="exclude each other"):
        pipeline.compute(scenario, force=True, cached_only=True)
    with pytest.raises(InputError, match="runs on cpu already"):
        pipeline.compute(scenario, policy=RunPolicy(continue_from="cpu"))


# --------------------------------------------------------------------------- completeness


@pytest.mark.parametrize(("accuracies", "overrides", "complete"), [
    ([0.1, 0.2, 0.3], (), True),                                         # rounds.max (3) reached
    ([0.1, 0.2, 0.3, 0.4], (), True),                                    # more than asked
    ([0.1, 0.2], (), False),
    ([0.1, 0.95], ("rounds.stop_when_reached=true", "targets=[0.5, 0.9]"), True),
    ([0.1, 0.6], ("rounds.stop_when_reached=true", "targets=[0.5, 0.9]"), False),  # one target only
    ([0.1, 0.95], ("rounds.stop_when_reached=false", "targets=[0.5, 0.9]"), False),
])
def test_a_cached_trace_is_complete_at_rounds_max_or_at_the_targets_when_told_to_stop(
        accuracies: list[float], overrides: tuple[str, ...], complete: bool) -> None:
    scenario = config.load(TINY, overrides)
    assert is_complete(_trace(accuracies), scenario) is complete
    assert is_complete(None, scenario) is False


# --------------------------------------------------------------------------- checkpoints


def test_checkpoints_every_n_rounds_and_at_the_end_keep_only_the_last(tmp_path: Path) -> None:
    entry = store.CacheEntry("train", "k", root=tmp_path)
    saver = Checkpointer(entry, None, {"label": "x"}, every=2, last_round=5)
    params = {r: _params(r) for r in range(1, 6)}
    saver.on_round(1, params[1], _record(1))
    assert entry.manifest() is None and saver.saved_round == 0
    saver.on_round(2, params[2], _record(2))
    assert _files(entry) == ["params.r000002.npz", "trace.r000002.npz"]
    saver.on_round(3, params[3], _record(3))
    assert saver.saved_round == 2  # 3 is not a multiple of 2
    assert saver.finish() is True  # a stop after round 3 keeps round 3
    assert _files(entry) == ["params.r000003.npz", "trace.r000003.npz"]
    assert sorted(p.name for p in entry.path.iterdir()) == ["manifest.json", "params.r000003.npz",
                                                            "trace.r000003.npz"]
    assert saver.finish() is False  # nothing new
    trace, state = load_checkpoint(entry)
    assert trace.num_rounds == 3 and state.round_num == 3
    for got, want in zip(state.params.weights, params[3].weights, strict=True):
        torch.testing.assert_close(got, want)
    saver.on_round(4, params[4], _record(4))
    saver.on_round(5, params[5], _record(5))  # the last round: always checkpointed
    assert _files(entry) == ["params.r000005.npz", "trace.r000005.npz"]
    assert saver.interrupted() is False  # round 5 is saved already


def test_an_interrupt_checkpoints_the_last_finished_round_only_when_model_and_records_agree(
        tmp_path: Path) -> None:
    entry = store.CacheEntry("train", "k", root=tmp_path)
    saver = Checkpointer(entry, None, {"label": "x"}, every=10, last_round=100)
    saver.on_round(1, _params(1), _record(1))
    saver.on_round(2, _params(2), _record(2))
    # an interrupt after the trainer handed over round 3's model but before its record
    saver._last = (3, _params(3))
    assert saver.interrupted() is False and entry.manifest() is None
    saver._last = (2, _params(2))
    assert saver.interrupted() is True
    assert _files(entry) == ["params.r000002.npz", "trace.r000002.npz"]


def test_a_resumed_segment_is_checkpointed_with_the_rounds_before_it(tmp_path: Path) -> None:
    entry = store.CacheEntry("train", "k", root=tmp_path)
    before = _trace([0.1, 0.2])
    saver = Checkpointer(entry, before, {"label": "x"}, every=2, last_round=10)
    assert saver.saved_round == 2 and saver.finish() is False
    saver.on_round(3, _params(3), _record(3, 0.3))
    saver.on_round(4, _params(4), _record(4, 0.4))
    trace, state = load_checkpoint(entry)
    assert trace.rounds["round_num"].tolist() == [1, 2, 3, 4] and state.round_num == 4
    np.testing.assert_allclose(saver.accuracy, [0.1, 0.2, 0.3, 0.4])


# --------------------------------------------------------------------------- resume and continue


def test_resume_prefers_the_entrys_own_checkpoint_then_the_other_devices(tmp_path: Path) -> None:
    own = store.CacheEntry("train", "own", root=tmp_path)
    other = store.CacheEntry("train", "other", root=tmp_path)
    _checkpointed(other, [0.1, 0.2, 0.3], _params(3))
    assert load_or_resume(own, None, RunPolicy(), "x", CPU) is None
    trace, _ = load_or_resume(own, other, RunPolicy(), "x", CPU)
    assert trace.num_rounds == 3  # continued from the other device's run
    _checkpointed(own, [0.1], _params(1))
    trace, _ = load_or_resume(own, other, RunPolicy(), "x", CPU)
    assert trace.num_rounds == 1  # its own checkpoint wins


def test_force_clears_the_entry_before_resuming(tmp_path: Path) -> None:
    own = store.CacheEntry("train", "own", root=tmp_path)
    _checkpointed(own, [0.1, 0.2], _params(2))
    assert load_or_resume(own, None, RunPolicy(force=True), "x", CPU) is None
    assert not own.path.exists()


def test_train_entry_continues_only_where_the_other_device_has_a_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path))
    scenario = config.load(TINY)
    method = scenario.methods["original"]
    cuda = torch.device("cuda")
    entry, source = training.train_entry(scenario, method, None, CPU, cuda)
    assert source is None and entry.key == pipeline.train_key(scenario, method, None, CPU)
    _checkpointed(store.CacheEntry("train", pipeline.train_key(scenario, method, None, cuda)), [0.1], _params(1))
    entry, source = training.train_entry(scenario, method, None, CPU, cuda)
    assert source is not None and source.key == pipeline.train_key(scenario, method, None, cuda)
    assert entry.key == pipeline.train_key(scenario, method, None, CPU, continued_from=cuda)


# --------------------------------------------------------------------------- the stage, for real


def test_train_stage_resumes_after_an_interrupt_from_the_last_finished_round(
        tiny_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real training on the tiny scenario (4 rounds, checkpoints every 2):
    interrupted in round 3, the entry holds round 3; --cached-only reports
    those 3; the next run starts at round 3 and ends as one uninterrupted run."""
    scenario = config.load(tiny_path, ("rounds.max=4", "rounds.checkpoint_every=2",
                                       "methods={original: {}}"))
    data = pipeline.prepare_data(scenario)
    start = learn_methods.build(scenario.methods["original"],
                                pipeline.pretrain_stage(scenario, data, 0, CPU), seed=scenario.seed)

    def stage(entry: store.CacheEntry, policy: RunPolicy = DEFAULT_POLICY) -> TrainingTrace:
        return training.train_stage(scenario, "original", start.params, start.mask, data, None, CPU,
                                    entry, policy=policy)

    reference = stage(store.CacheEntry("train", "reference"))
    entry = store.CacheEntry("train", "interrupted")
    with pytest.raises(InputError, match="not in the cache"):
        stage(entry, RunPolicy(cached_only=True))
    real_train = training.train
    starts: list[int] = []

    def interrupted(*args, on_round, **kwargs):
        def hook(round_num, params, record):
            on_round(round_num, params, record)
            if round_num == 3:
                raise KeyboardInterrupt
        return real_train(*args, on_round=hook, **kwargs)

    monkeypatch.setattr(training, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stage(entry)
    assert _files(entry) == ["params.r000003.npz", "trace.r000003.npz"]
    assert stage(entry, RunPolicy(cached_only=True)).num_rounds == 3

    def resumed(*args, start, **kwargs):
        starts.append(start.round_num)
        return real_train(*args, start=start, **kwargs)

    monkeypatch.setattr(training, "train", resumed)
    again = stage(entry)
    assert starts == [3]
    pd.testing.assert_frame_equal(again.rounds, reference.rounds)
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("training ran"))
    pd.testing.assert_frame_equal(stage(entry).rounds, reference.rounds)  # complete: from the cache
