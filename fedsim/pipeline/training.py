"""The training stage: FedAvg rounds with resume, continue and interrupt
checkpoints, each a small function.

* `train_entry`: the entry a training reads and writes, and the entry on
  another device it continues from (``--continue-from``);
* `load_or_resume`: the checkpoint to start from (``--force`` clears it);
* `is_complete`: whether a cached trace already answers the run;
* `Checkpointer`: records the rounds as they finish, writes a checkpoint
  every ``rounds.checkpoint_every`` rounds, at the last round, and on an
  interrupt (every finished round is kept);
* `train_stage`: the above, in order.

A checkpoint is the trace so far and the global model after its last round
(`fedsim.store.artifacts.checkpoint_files`), sealed into the entry; since every
random stream is keyed by (seed, client, round), a resumed run yields exactly
the trace an uninterrupted one would.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from fedsim import config, cost, store
from fedsim.config import Scenario
from fedsim.learn.asynchronous import STATE_PREFIX as ASYNC_STATE_PREFIX
from fedsim.learn.federated import train
from fedsim.learn.masks import Mask
from fedsim.learn.methods import effective_fl
from fedsim.learn.model import device_name
from fedsim.learn.plugins import MethodHookError
from fedsim.learn.spec import MethodConfig
from fedsim.learn.trace import RoundRecord, TrainingTrace, TrainState
from fedsim.pipeline.data import Data
from fedsim.pipeline.keys import train_key
from fedsim.pipeline.policy import DEFAULT_POLICY, RunPolicy
from fedsim.pipeline.stages import compute_device, not_cached, read_entry
from fedsim.progress import Progress
from fedsim.store.artifacts import checkpoint_files, find_checkpoint

log = logging.getLogger(__name__)

Checkpoint = tuple[TrainingTrace, TrainState]


def train_entry(scenario: Scenario, method: MethodConfig, participation: list[np.ndarray] | None,
                device: torch.device, continue_from: torch.device | None = None
                ) -> tuple[store.CacheEntry, store.CacheEntry | None]:
    """The cache entry a training reads and writes, and the entry it
    continues from: with ``continue_from`` (another device) and a cached run
    there, the run is continued from that run's last checkpoint into an entry
    of its own (`train_key`'s ``continued_from``); otherwise, (entry, None)."""
    if continue_from is not None and continue_from.type != device.type:
        source = store.CacheEntry("train", train_key(scenario, method, participation, continue_from))
        if source.valid():
            return (store.CacheEntry("train", train_key(scenario, method, participation, device,
                                                        continued_from=continue_from)), source)
    return store.CacheEntry("train", train_key(scenario, method, participation, device)), None


def load_checkpoint(entry: store.CacheEntry) -> Checkpoint | None:
    """The trace and parameters of a training entry's last checkpoint; None
    (with a warning, and the entry removed, where it is damaged) when there
    is none."""
    if not entry.valid():
        if entry.manifest() is not None:
            log.warning("training cache entry %s is corrupt; recomputing", entry.path)
            entry.clear()
        return None
    files = (entry.manifest() or {}).get("files", {})

    def read() -> Checkpoint:
        from fedsim.learn.aggregation import MethodState
        from fedsim.learn.model import Params

        trace_name, params_name = find_checkpoint(files)
        trace = TrainingTrace.load(entry.path / trace_name)
        with np.load(entry.path / params_name) as arrays:
            params = Params.from_numpy(arrays)
            method_state = MethodState.from_numpy(arrays)  # compression, server optimiser
            if any(name.startswith(ASYNC_STATE_PREFIX) for name in arrays.files):
                from fedsim.learn.asynchronous import AsyncState  # the versions in flight

                method_state = AsyncState.from_numpy(trace.num_rounds, dict(arrays))
        return trace, TrainState(trace.num_rounds, params, method_state)

    return read_entry(entry, "training", read)


def load_or_resume(entry: store.CacheEntry, source: store.CacheEntry | None, policy: RunPolicy,
                   label: str, device: torch.device) -> Checkpoint | None:
    """The checkpoint a training starts from: ``entry``'s own (after
    ``policy.force`` cleared it: none), else the last one of the run in
    ``source`` (another device's, continued here), else None (round 0)."""
    if policy.force:
        entry.clear()
    loaded = load_checkpoint(entry)
    if loaded is None and source is not None:
        loaded = load_checkpoint(source)
        if loaded is not None:
            log.info("%s: continuing the run in %s after its round %d, on %s", label,
                     source.path, loaded[0].num_rounds, device.type)
    return loaded


def targets_reached(accuracy: np.ndarray, targets: Sequence[float]) -> bool:
    """True when ``accuracy`` (per round) reached every target at some round."""
    return bool(len(accuracy)) and all(float(np.nanmax(accuracy)) >= t for t in targets)


def is_complete(trace: TrainingTrace | None, scenario: Scenario) -> bool:
    """True when ``trace`` needs no more rounds: it has ``rounds.max`` of them,
    or it reached every target under ``rounds.stop_when_reached``."""
    if trace is None:
        return False
    return trace.num_rounds >= scenario.rounds.max or (
        scenario.rounds.stop_when_reached and targets_reached(trace.accuracy, scenario.targets))


def head(trace: TrainingTrace, rounds: int) -> TrainingTrace:
    """The first ``rounds`` rounds of a trace."""
    keep = trace.rounds["round_num"] <= rounds
    keep_clients = trace.client_rounds["round_num"] <= rounds
    return TrainingTrace(trace.rounds[keep].reset_index(drop=True),
                         trace.client_rounds[keep_clients].reset_index(drop=True), trace.meta)


class Checkpointer:
    """The rounds of one training as they finish, and their checkpoints.

    ``on_round`` is the trainer's callback: it records the round and writes
    a checkpoint every ``every`` rounds and at round ``last_round``.
    `finish` and `interrupted` write one for the last finished round when
    that round has none yet (a stop on reaching the targets; Ctrl-C).

    Args:
        entry: the training's cache entry; each checkpoint replaces the last.
        previous: the trace of the rounds before this segment (a resumed or
            continued run), or None.
        meta: the trace's metadata (label, method, where it ran).
        every: ``rounds.checkpoint_every``.
        last_round: ``rounds.max``.
    """

    def __init__(self, entry: store.CacheEntry, previous: TrainingTrace | None, meta: dict[str, Any],
                 every: int, last_round: int) -> None:
        self.entry = entry
        self.previous = previous
        self.meta = meta
        self.every = every
        self.last_round = last_round
        self.records: list[RoundRecord] = []
        self.saved_round = previous.num_rounds if previous is not None else 0
        self._last: tuple[int, Any] | None = None  # (round, the global model after it)
        self._states: dict[int, Any] = {}  # round -> the MethodState after it (the last two)

    def on_state(self, round_num: int, state: Any) -> None:
        """Keep the method's state after round ``round_num`` (error memory,
        server moments; `fedsim.learn.aggregation.MethodState`) for the
        checkpoint of that round. The trainer replaces, never changes, it."""
        # the one before is kept too: an interrupt between this call and on_round
        # checkpoints the previous round, with the previous state
        self._states = {r: s for r, s in self._states.items() if r == round_num - 1}
        self._states[round_num] = state

    @property
    def accuracy(self) -> np.ndarray:
        """Accuracy of every round so far, the previous segment's included."""
        before = self.previous.accuracy if self.previous is not None else np.zeros(0)
        return np.concatenate([before, np.array([r.accuracy for r in self.records])])

    def on_round(self, round_num: int, params: Any, record: RoundRecord) -> None:
        """Record round ``round_num`` (``params``: the model after it)."""
        # the model first: an interrupt between the two lines leaves a model
        # newer than the records, which `finish` detects and does not save
        self._last = (round_num, params)
        self.records.append(record)
        if round_num % self.every == 0 or round_num == self.last_round:
            self.write()

    def write(self) -> None:
        """Seal a checkpoint after the last recorded round into the entry and
        remove the files of the one before."""
        round_num = self.records[-1].round_num
        assert self._last is not None and self._last[0] == round_num
        part = TrainingTrace.from_records(self.records, self.meta)
        full = part if self.previous is None else self.previous.concat(part)
        old = set((self.entry.manifest() or {}).get("files", {}))
        names = checkpoint_files(round_num)
        full.save(self.entry.file(names[0]))
        arrays = self._last[1].to("cpu").to_numpy()
        if self._states:  # compression / server optimiser: saved beside the model
            arrays.update(self._states[round_num].to_numpy())
        with store.atomic_write(self.entry.file(names[1])) as handle:
            np.savez(handle, **arrays)
        self.entry.seal(names, {"rounds": round_num, "label": self.meta["label"]})
        for name in old - set(names):
            (self.entry.path / name).unlink(missing_ok=True)
        self.saved_round = round_num

    def finish(self) -> bool:
        """Checkpoint the last finished round if it has none; True if written."""
        if (not self.records or self.records[-1].round_num == self.saved_round
                or self._last is None or self._last[0] != self.records[-1].round_num):
            return False
        self.write()
        return True

    interrupted = finish  # an interrupt keeps every finished round the same way


def train_stage(scenario: Scenario, label: str, start_params: Any, mask: Mask, data: Data,
                participation: list[np.ndarray] | None, device: torch.device,
                entry: store.CacheEntry, source: store.CacheEntry | None = None, *,
                policy: RunPolicy = DEFAULT_POLICY, bar: Progress | None = None,
                model: Any = None, plan: list[list[Any]] | None = None) -> TrainingTrace:
    """FedAvg for ``rounds.max`` rounds (or until every target is reached when
    ``rounds.stop_when_reached``) on ``device``, resuming from the checkpoint
    in ``entry`` or, where it has none, continuing the run in ``source`` (on
    another device; `train_entry` gives both). The trace's
    `TrainingTrace.segments` say which device computed which rounds.
    ``bar``: the run's progress, told of every round (``train`` units of
    `cost.round_s`); cached rounds, and rounds not run because the targets
    were reached, are skipped. ``model``: the classifier
    (`fedsim.learn.zoo.ModelSpec`; None: LeNet-300-100, the hand-written kernel).
    ``plan``: an asynchronous method's step plan (`fedsim.pipeline.asynchronous`):
    its server steps are trained as rounds by `fedsim.learn.asynchronous.train_async`.

    Raises:
        InputError: ``policy.cached_only`` and no round is cached; or the
            device is missing on this machine.
        KeyboardInterrupt: after checkpointing every finished round.
    """
    wanted = scenario.rounds.max
    round_s = cost.round_s(scenario, scenario.methods[label])  # an asynchronous method's: a server step's
    loaded = load_or_resume(entry, source, policy, label, device)
    trace, state = loaded if loaded is not None else (None, None)
    done = trace.num_rounds if trace is not None else 0
    if is_complete(trace, scenario):
        log.info("%s: %d cached rounds (%s)", label, done, entry.path)
        if bar is not None:
            bar.skip("train", wanted * round_s, f"training {label}: {done} rounds cached")
        return head(trace, wanted)
    if policy.cached_only:
        if trace is None:
            raise not_cached(f"training of {label}")
        log.info("%s: %d of %d rounds in the cache; reporting those (--cached-only)", label, done, wanted)
        if bar is not None:
            bar.skip("train", wanted * round_s, f"training {label}: {done} rounds cached")
        return trace

    if done:
        log.info("%s: resuming after round %d of %d", label, done, wanted)
    device = compute_device(device, f"training of {label} (rounds {done + 1}..{wanted})")
    meta = {"label": label, "method": config.section_key(scenario.methods[label]),
            "device": str(device), "device_name": device_name(device),
            "torch_threads": torch.get_num_threads()}  # threads change float rounding (docs/performance.md)
    saver = Checkpointer(entry, trace, meta, scenario.rounds.checkpoint_every, wanted)

    def on_round(round_num: int, params: Any, record: RoundRecord) -> None:
        saver.on_round(round_num, params, record)
        if bar is not None:
            bar.advance("train", round_s, f"training {label} round {round_num}/{wanted}")

    def stop(record: RoundRecord) -> bool:
        return scenario.rounds.stop_when_reached and targets_reached(saver.accuracy, scenario.targets)

    if bar is not None:  # the rounds before ``done`` are cached; the clock of computed work starts now
        bar.skip("train", done * round_s, f"training {label} round {done}/{wanted}")
    try:
        fl = effective_fl(scenario.fl, scenario.methods[label])  # the method's compression, server, mu
        if plan is not None:
            new = _train_async(scenario, label, start_params, mask, data, fl, plan, device, state,
                               saver, on_round, stop, model)
        else:
            new = train(start_params, mask, data.clients, (data.test_x, data.test_y), fl,
                        seed=scenario.seed, rounds=wanted, participation=participation, device=device,
                        start=state, on_round=on_round, stop=stop, model=model, on_state=saver.on_state)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (cli.main): keep every finished round
        if saver.interrupted():
            log.warning("%s: interrupted; checkpoint written at round %d", label, saver.saved_round)
        raise
    except MethodHookError:  # a plugin's hook failed mid-run: keep every finished round too
        saver.interrupted()
        raise
    saver.finish()
    if bar is not None:  # stopped early (targets reached): the rest is not needed
        bar.skip("train", (wanted - (saver.records[-1].round_num if saver.records else done)) * round_s)
    new = replace(new, meta={**new.meta, **meta})  # as the checkpoint holds it (threads, device)
    return new if trace is None else trace.concat(new)


def _train_async(scenario: Scenario, label: str, start_params: Any, mask: Mask, data: Data, fl: Any,
                 plan: list[list[Any]], device: torch.device, state: TrainState | None,
                 saver: Checkpointer, on_round: Any, stop: Any, model: Any) -> TrainingTrace:
    """`train_stage`'s asynchronous case: replay ``plan`` (up to ``rounds.max``
    steps) from ``state`` (its `AsyncState`: the versions in flight)."""
    from fedsim.learn.asynchronous import AsyncState, train_async

    start = None
    if state is not None:
        if not isinstance(state.method_state, AsyncState):
            raise ValueError(f"{label}: the checkpoint after step {state.round_num} holds no asynchronous state")
        start = state.method_state

    def on_step(step: int, async_state: AsyncState, record: RoundRecord) -> None:
        saver.on_state(step, async_state)
        on_round(step, async_state.params, record)

    return train_async(start_params, mask, data.clients, (data.test_x, data.test_y), fl,
                       plan[: scenario.rounds.max], seed=scenario.seed,
                       server_lr=scenario.methods[label].asynchronous.server_lr, device=device,
                       start=start, on_step=on_step, stop=stop, model=model)
