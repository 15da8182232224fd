"""The stages of an asynchronous (FedBuff) method: its schedule, then its training.

A method with an ``asynchronous`` section (`fedsim.system.async_spec.AsyncConfig`)
runs as buffered asynchronous FL instead of synchronous rounds. Its timing does
not depend on the model's values, so:

1. the system stage simulates the whole FedBuff schedule
   (`fedsim.system.asynchronous.simulate_async`) on the scenario's network,
   cached under the synchronous system key plus the ``asynchronous`` section
   (`async_system_key`), and hands it on in the synchronous frames with a
   round = a server step (`fedsim.system.async_result.as_system_result`);
2. the training stage replays the schedule's step plan with real training
   (`fedsim.learn.asynchronous.train_async`), cached under the method's
   training facts plus a hash of the plan (`async_train_key`: who trained from
   which version with which weight, in every step), checkpointed and resumed
   like a synchronous run.

Everything after (rounds.csv, NRA/CCA/CTA/TTA/ETA, the report) reads the
result as it reads a synchronous method's, with server steps for rounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fedsim import config, store
from fedsim.config import Scenario
from fedsim.learn.spec import MethodConfig
from fedsim.pipeline.keys import system_key, train_facts
from fedsim.pipeline.policy import DEFAULT_POLICY, RunPolicy
from fedsim.store.artifacts import ASYNC_SYSTEM_FILES

if TYPE_CHECKING:
    import torch

    from fedsim.learn.asynchronous import AsyncUpdate
    from fedsim.learn.masks import Mask
    from fedsim.pipeline.runner import ScenarioResult
    from fedsim.report.scenario.asynchronous import AsyncSummary
    from fedsim.system.asynchronous import AsyncSchedule
    from fedsim.system.payload import Payload
    from fedsim.system.sim import SystemResult

__all__ = ["async_summaries", "async_system_key", "async_system_stage", "async_train_entry", "load_schedule",
           "step_plan"]


def async_system_key(scenario: Scenario, payload: Payload, work_fraction: float, client_samples: np.ndarray,
                     base_dir: Path | None, method: MethodConfig) -> str:
    """The synchronous `system_key` of the same method plus its
    ``asynchronous`` section."""
    return store.stable_hash({
        "stage": "system-async",
        "system": system_key(scenario, payload, work_fraction, client_samples, base_dir, method),
        "asynchronous": config.section_key(method.asynchronous),
    })


def _save(schedule: AsyncSchedule, directory: Path) -> None:
    for name, frame in (("updates", schedule.updates), ("steps", schedule.steps),
                        ("profiles", schedule.profiles.to_frame())):
        with store.atomic_write(directory / ASYNC_SYSTEM_FILES[name]) as handle:
            frame.to_parquet(handle, index=False)


def load_schedule(directory: Path, method: MethodConfig) -> AsyncSchedule:
    """The schedule saved in the system cache entry ``directory``."""
    from fedsim.system.asynchronous import AsyncSchedule
    from fedsim.system.profiles import ClientProfiles

    return AsyncSchedule(pd.read_parquet(directory / ASYNC_SYSTEM_FILES["updates"]),
                         pd.read_parquet(directory / ASYNC_SYSTEM_FILES["steps"]), method.asynchronous,
                         ClientProfiles.from_frame(pd.read_parquet(directory / ASYNC_SYSTEM_FILES["profiles"])))


def async_system_stage(scenario: Scenario, mask: Mask, client_samples: np.ndarray, base_dir: Path | None,
                       method: MethodConfig, *, policy: RunPolicy = DEFAULT_POLICY, compute_scale: float = 1.0,
                       ) -> tuple[AsyncSchedule, SystemResult, Payload, float]:
    """The FedBuff schedule of ``method`` (``rounds.max`` server steps) from
    the cache or simulated, and the same as a `SystemResult` whose rounds are
    the steps; with the payload and work fraction (as `system_stage`)."""
    from fedsim.pipeline.stages import not_cached, payload_and_work, read_entry
    from fedsim.system.async_result import as_system_result
    from fedsim.system.asynchronous import simulate_async

    payload, work = payload_and_work(scenario, mask, method)
    entry = store.CacheEntry("system", async_system_key(scenario, payload, work, client_samples, base_dir, method))
    schedule = None
    if not policy.force and entry.valid():
        schedule = read_entry(entry, "asynchronous schedule", lambda: load_schedule(entry.path, method))
    if schedule is None:
        if policy.cached_only:
            raise not_cached("the asynchronous schedule")
        schedule = simulate_async(scenario.system, method.asynchronous, client_samples=client_samples,
                                  payload=payload, work_fraction=work * compute_scale,
                                  steps=scenario.rounds.max, seed=scenario.seed,
                                  local_epochs=scenario.fl.local_epochs, base_dir=base_dir)
        with entry.staged() as staging:
            _save(schedule, staging.path)
            staging.seal(list(ASYNC_SYSTEM_FILES.values()))
    return schedule, as_system_result(schedule), payload, work


def step_plan(schedule: AsyncSchedule) -> list[list[AsyncUpdate]]:
    """The schedule's step plan as the trainer's `AsyncUpdate` lists."""
    from fedsim.learn.asynchronous import AsyncUpdate

    return [[AsyncUpdate(int(c), int(v), float(w)) for c, v, w in step] for step in schedule.step_plan()]


def async_train_entry(scenario: Scenario, method: MethodConfig, plan: list[list[AsyncUpdate]],
                      device: torch.device) -> store.CacheEntry:
    """The training entry of an asynchronous method: its training facts (data,
    ``fl``, start, device), the plan it replays and how the trainer batches
    it (`fedsim.learn.asynchronous.BATCHING`: the float rounding of an
    update depends on its batch, so a change of policy is a new entry)."""
    from fedsim.learn.asynchronous import BATCHING

    key = {**train_facts(scenario, method, device), "asynchronous": config.section_key(method.asynchronous),
           "batching": BATCHING,
           "plan": store.stable_hash([[(u.client, u.start_version, repr(u.weight)) for u in step]
                                      for step in plan])}
    return store.CacheEntry("train", store.stable_hash(key))


def async_summaries(result: ScenarioResult) -> list[AsyncSummary]:
    """The report's record of every asynchronous method of ``result`` (its
    settings and the staleness of the updates used by the steps it trained),
    in the scenario's method order; [] for a synchronous scenario."""
    from fedsim.report.scenario.asynchronous import AsyncSummary

    return [AsyncSummary.from_updates(label, m.schedule.config, m.schedule.updates, m.trace.num_rounds)
            for label, m in result.methods.items() if m.schedule is not None]
