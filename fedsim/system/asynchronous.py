"""Buffered asynchronous FL (FedBuff) on the system model: the deterministic schedule.

FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous
Aggregation", AISTATS 2022; FedAsync, Xie et al., "Asynchronous Federated
Optimization", 2019, is the buffer of one) as a discrete-event model on the
same links, cells, latencies, devices, sessions, deadlines and energy as the
synchronous rounds of `fedsim.system.sim` (docs/network-model.md,
"Asynchronous FL (FedBuff)"):

* the server keeps ``concurrency`` (C) clients training. A client update is
  the synchronous round's client part: download (the server's egress and the
  client's path, max-min fair; + rtt/2), compute (`RoundPlan.compute_s`, the
  same formula), upload (from the end of the computation; on the ingress
  rtt/2 later), or a drop: ``dropout`` (per update, stream
  ``rng(seed, "async", "dropout", chunk)``), ``offline`` (the session ends),
  ``deadline`` (``rounds.deadline`` seconds after the update's start);
* when an update arrives or drops, its slot is given to a new client, drawn
  uniformly (stream ``rng(seed, "async", "selection", chunk)``) among the
  clients not training that are reachable (online, and with
  ``availability < 1`` their coin, stream ``rng(seed, "async",
  "availability", n)``). If none is, the server tries again after
  ``IDLE_RETRY_S``;
* every arrived update joins the buffer (arrival order, ties by update id);
  when it holds ``buffer_size`` (M) updates and the server is idle, the
  server takes a step with the first M: version v -> v + 1, done
  ``server.aggregation`` seconds later (the step's ``time_s``). Updates whose
  staleness would exceed ``max_staleness`` are discarded then (``stale``);
* a client starts when its slot is free and the server is not in the middle of
  a step (one that would start during a step starts when it ends), and
  downloads the newest version then (``start_version``); all events at one
  instant are taken before steps and starts, so with M = C = K identical
  clients the schedule is synchronous FedAvg's, round for round;
* after ``steps`` server steps (``rounds.max``) the schedule ends at the last
  step's time; updates still running are cut there (``end``), arrived ones
  not aggregated are ``unused``.

Staleness of an update used in step j: ``j - 1 - start_version``, the server
versions made between its download and the version the step is applied to.

**Interface for the trainer** (it replays the schedule; the model's values
never change timing): ``schedule.step_plan()[j - 1]`` is step j's list of
``(client_id, start_version, weight)`` in buffer order, ``weight`` the
staleness weight (``fedbuff`` 1/sqrt(1 + s), ``constant`` 1). The trainer,
`fedsim.learn.asynchronous.train_async` (the authority on these rules), keeps
the server's versions ``x_0, x_1, ...`` (``x_0`` the method's start; a
version is dropped once no later step names it); client k's update is
``delta = local_train(x_start_version, k) - x_start_version`` (the
synchronous client training, its shuffles keyed by (client, start version +
1), the stream synchronous round ``start_version + 1`` uses; a client's j-th
further update from the same version adds ``j * REPEAT_STRIDE`` to that
round number), and step j is ``x_j = x_{j-1} + server_lr * sum_i p_i *
weight_i * delta_i`` with ``p_i = n_i / sum n`` the sample weights over the
step's buffer (FedBuff's 1/M mean for equal client sizes). The updates that
start from one version are trained in one batch, as soon as that version
exists. Per-step costs (traffic, compute, energy over the updates that ended
in the step's interval) come from ``updates`` grouped by ``end_s``
(`fedsim.system.async_result`).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fedsim.system.async_record import ASYNC_REASONS, OK, STALE, UNUSED, Record, Selector
from fedsim.system.async_spec import AsyncConfig, staleness_weight
from fedsim.system.availability import load_sessions
from fedsim.system.devices import apply_device_trace
from fedsim.system.energy import energy_frame
from fedsim.system.payload import REFERENCE_EPOCHS, Payload
from fedsim.system.profiles import ClientProfiles, draw_profiles
from fedsim.system.round_plan import RoundPlan
from fedsim.system.spec import SystemConfig

if TYPE_CHECKING:  # the drivers import this module
    from fedsim.system.async_drivers import ClosedForm, CompiledEvents, Events

    Driver = ClosedForm | CompiledEvents | Events

__all__ = ["ASYNC_REASONS", "IDLE_RETRY_S", "STEP_COLUMNS", "UPDATE_COLUMNS", "AsyncSchedule", "simulate_async"]

#: Seconds after which the server asks again when no client is reachable.
IDLE_RETRY_S = 60.0
UPDATE_COLUMNS = (
    "update_id", "client_id", "start_version", "start_s", "download_end_s", "compute_start_s",
    "compute_end_s", "upload_start_s", "arrive_s", "end_s", "reason", "step", "staleness",
    "down_bytes", "up_bytes", "compute_s", "energy_j",
)
STEP_COLUMNS = ("step", "time_s", "updates", "mean_staleness", "max_staleness")
STEP_DONE, RETRY = 100, 101  # protocol events (drivers use kinds < 100)


@dataclass(frozen=True)
class AsyncSchedule:
    """The asynchronous schedule (module docstring).

    Attributes:
        updates: one row per started client update, ``UPDATE_COLUMNS``:
            update_id (0-based, start order), client_id, start_version (the
            server version downloaded), start_s, download_end_s (holds the
            model), compute_start_s, compute_end_s, upload_start_s (the client
            sends), arrive_s (at the server; NaN if it never arrived), end_s
            (arrival, drop or cut), reason (``ASYNC_REASONS``), step (the
            server step that used it, -1: none), staleness (step - 1 -
            start_version; -1 if unused), down_bytes / up_bytes / compute_s
            actually spent, energy_j (`fedsim.system.energy`, the client's
            updates in time order). Times in simulated seconds; a phase not
            reached is NaN, one cut ends at the cut.
        steps: one row per server step, ``STEP_COLUMNS``: step (1-based),
            time_s (the new version exists), updates used, mean/max staleness.
        config: the asynchronous section.
        profiles: the clients' profiles used.
    """

    updates: pd.DataFrame
    steps: pd.DataFrame
    config: AsyncConfig
    profiles: ClientProfiles

    def step_plan(self) -> list[list[tuple[int, int, float]]]:
        """Per server step, ``(client_id, start_version, staleness_weight)`` of
        its updates in buffer order (what the trainer replays)."""
        used = self.updates[self.updates["step"] >= 1].sort_values(["step", "arrive_s", "update_id"])
        plan: list[list[tuple[int, int, float]]] = [[] for _ in range(len(self.steps))]
        kind = self.config.staleness
        for step, client, version, stale in zip(used["step"].tolist(), used["client_id"].tolist(),
                                               used["start_version"].tolist(), used["staleness"].tolist(),
                                               strict=True):
            plan[step - 1].append((client, version, staleness_weight(stale, kind)))
        return plan


class Protocol:
    """The FedBuff server: slots, buffer, steps; drives a client driver.

    Its per-update methods (`finish`, `settle`) run once per client update;
    they keep their state in Python lists and floats (`fedsim.system.
    async_record`) and their loops free of attribute look-ups they can hoist.
    With the compiled event driver, where the selection needs only the idle
    list, `fedsim.system.async_server` makes the same moves inside the
    compiled loop (this class then holds the configuration and the results).
    """

    def __init__(self, plan: RoundPlan, cfg: AsyncConfig, steps: int, aggregation_s: float, seed: int,
                 payload: Payload) -> None:
        self.plan, self.cfg, self.max_steps, self.aggregation_s = plan, cfg, steps, aggregation_s
        self.payload = payload
        self.selector = Selector(plan, seed)
        self.rec = Record()
        self.heap: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        self.free = list(range(cfg.concurrency - 1, -1, -1))  # pop() gives slot 0 first
        self.buffer: deque[int] = deque()
        self.version = 0
        self.busy = False
        self.done = False
        self.retry_pending = False
        self.step_rows: list[tuple[int, float, int, float, int]] = []
        self.pending_use: list[int] = []
        # the download of a client's first update carries the extra bytes (synchronous rounds' rule)
        self.got_model = [False] * plan.n_clients
        self.down_size = (float(payload.down_bytes + payload.first_round_extra_bytes), float(payload.down_bytes + 0))
        self.max_since_step = 1000 * max(cfg.concurrency, cfg.buffer_size)
        self.since_step = 0
        self.retries = 0
        self.end_s = 0.0
        self.changed = True  # a finish, step or retry since the last settle: try to start clients

    def push(self, t_s: float, kind: int, u: int, prio: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t_s, prio, self.seq, kind, u))

    def run(self, driver: Driver) -> None:
        if driver.owns_loop:  # the compiled event loop (`async_drivers.CompiledEvents`)
            self.end_s = driver.run_loop(self)
            self.rec.trim()
            driver.cut_all(self.end_s)
            return
        heap, inf, pop = self.heap, math.inf, heapq.heappop
        flows = driver.has_flows
        t = 0.0
        self.settle(t, driver)
        while not self.done:
            t = heap[0][0] if heap else inf
            if flows:
                t = min(t, driver.next_time())
            if t == inf:
                raise ValueError("asynchronous schedule: nothing left to happen before the last step")
            while not self.done:  # every event at t, then steps and starts (settle)
                if flows and driver.next_time() <= t:
                    driver.flow_step(t)
                elif heap and heap[0][0] <= t:
                    _, _, _, kind, u = pop(heap)
                    if kind == STEP_DONE:
                        self.step_done(t)
                    elif kind == RETRY:
                        self.retry_pending = False
                        self.changed = True
                    else:
                        driver.handle(kind, u, t)
                else:
                    break
            self.settle(t, driver)
        self.end_s = t
        self.rec.trim()
        driver.cut_all(t)

    def finish(self, u: int, t_s: float, reason: int) -> None:
        """Update ``u`` arrived (``OK``) or dropped at ``t_s``: its slot frees."""
        rec = self.rec
        rec.stop[u] = t_s
        rec.reason[u] = reason
        if reason == OK:
            rec.arrive[u] = t_s
            self.buffer.append(u)
        self.free.append(rec.slot[u])
        self.selector.idle.append(rec.client[u])
        self.changed = True

    def settle(self, t_s: float, driver: Driver) -> None:
        """After all events at ``t_s``: take a step if the buffer is full, then start clients."""
        if self.done:
            return
        if not self.busy and len(self.buffer) >= self.cfg.buffer_size:
            self.trigger(t_s)
        if self.busy or not self.changed:
            return  # flow events inside updates (engine) do not make the server select again
        self.changed = False
        free, take, add, launch = self.free, self.selector.take, self.rec.add, driver.launch
        got, down_size, version = self.got_model, self.down_size, self.version
        while free:
            k = take(t_s)
            if k is None:
                self.retries += 1
                if self.retries > 100_000:
                    raise ValueError("asynchronous schedule: no client reachable in 100,000 tries")
                if not self.retry_pending:
                    self.retry_pending = True
                    self.push(t_s + IDLE_RETRY_S, RETRY, -1, 1)
                return
            self.retries = 0
            self.since_step += 1
            if self.since_step > self.max_since_step:
                raise ValueError(f"asynchronous schedule: {self.since_step - 1} client updates without a "
                                 "server step (the deadline, dropout or sessions let too few arrive)")
            size = down_size[got[k]]
            got[k] = True
            launch(add(k, free.pop(), version, t_s, size), t_s)

    def trigger(self, t_s: float) -> None:
        limit = self.cfg.max_staleness
        use: list[int] = []
        kept: list[int] = []
        while self.buffer and len(use) < self.cfg.buffer_size:
            u = self.buffer.popleft()
            if limit is not None and self.version - self.rec.start_version[u] > limit:
                self.rec.reason[u] = STALE
            else:
                use.append(u)
                kept.append(u)
        if len(use) < self.cfg.buffer_size:
            self.buffer.extendleft(reversed(kept))
            return
        self.busy = True
        self.pending_use = use
        self.push(t_s + self.aggregation_s, STEP_DONE, -1, 1)

    def step_done(self, t_s: float) -> None:
        self.version += 1
        self.busy = False
        self.changed = True
        self.since_step = 0
        start_version, step, version = self.rec.start_version, self.rec.step, self.version
        stale = [version - 1 - start_version[u] for u in self.pending_use]
        for u in self.pending_use:
            step[u] = version
        self.step_rows.append((version, t_s, len(stale), sum(stale) / len(stale), max(stale)))
        if version >= self.max_steps:
            self.done = True


def simulate_async(
    system: SystemConfig,
    config: AsyncConfig,
    *,
    client_samples: np.ndarray,
    payload: Payload,
    work_fraction: float,
    steps: int,
    seed: int,
    local_epochs: int = REFERENCE_EPOCHS,
    base_dir: Path | None = None,
) -> AsyncSchedule:
    """The FedBuff schedule of ``steps`` server steps (module docstring); a
    pure function of its arguments (trace and session files are read).

    Arguments as `fedsim.system.sim.simulate` (``steps`` = ``rounds.max``).

    Raises:
        ValueError: bad arguments (no clients, concurrency above the number of
            clients, steps < 1), or a system in which no step can happen (no
            client ever reachable; the deadline, dropout or sessions let too
            few updates arrive).
        fedsim.errors.InputError: a missing or malformed trace file.
    """
    from fedsim.system.async_drivers import ClosedForm, CompiledEvents, needs_events

    samples = np.asarray(client_samples, dtype=float).reshape(-1)
    if samples.size < 1 or not (samples >= 0).all():
        raise ValueError("client_samples must hold at least one count, all >= 0")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if config.concurrency > samples.size:
        raise ValueError(f"asynchronous.concurrency: {config.concurrency} exceeds the {samples.size} clients")
    profiles = apply_device_trace(draw_profiles(system.clients, samples.size, seed, base_dir), system, base_dir)
    sessions = load_sessions(system.clients.sessions, samples.size, seed, base_dir)
    plan = RoundPlan(system, profiles, samples, payload, float(work_fraction), seed, int(local_epochs), sessions)
    protocol = Protocol(plan, config, int(steps), float(system.server.aggregation), seed, payload)
    events = needs_events(system, profiles, config.concurrency)
    driver = CompiledEvents(protocol, system, seed, base_dir) if events else ClosedForm(protocol)
    protocol.run(driver)
    return _schedule(protocol, system, config, profiles)


def _schedule(protocol: Protocol, system: SystemConfig, config: AsyncConfig,
              profiles: ClientProfiles) -> AsyncSchedule:
    """The frames from the record (phases clipped at each update's end),
    column by column from arrays (no per-row Python work)."""
    rec = protocol.rec
    # the dtype given: numpy then converts the lists without inferring one (about 3x faster)
    col = {name: np.asarray(getattr(rec, name), dtype=type(fill)) for name, fill in Record.FILL.items()}
    stop, has, cend, arr = col["stop"], col["has_model"], col["compute_end"], col["arrive"]
    reason, step = col["reason"].astype(np.int64), col["step"].astype(np.int64)
    start_version = col["start_version"].astype(np.int64)
    reason[(reason == OK) & (step < 0)] = UNUSED
    reached = has <= stop
    sending = cend <= stop
    compute_end = np.where(reached, np.minimum(cend, stop), np.nan)
    update_id = np.arange(stop.size, dtype=np.int64)
    client_id = col["client"].astype(np.int64)
    start_s = col["start"].astype(float)
    download_end_s = np.minimum(has, stop)
    upload_start_s = np.where(sending, cend, np.nan)
    down_bytes, up_bytes = col["down_bytes"].astype(float), col["up_bytes"].astype(float)
    compute_s = np.where(reached, compute_end - has, 0.0)
    timeline = pd.DataFrame({
        "round": update_id + 1, "client_id": client_id,
        "download_start_s": start_s, "download_end_s": download_end_s,
        "upload_start_s": upload_start_s,
        "upload_end_s": np.where(sending, np.minimum(arr, stop), np.nan),
        "down_bytes": down_bytes, "up_bytes": up_bytes, "compute_s": compute_s,
    }, copy=False)
    updates = pd.DataFrame({
        "update_id": update_id,
        "client_id": client_id,
        "start_version": start_version,
        "start_s": start_s,
        "download_end_s": download_end_s,
        "compute_start_s": np.where(reached, has, np.nan),
        "compute_end_s": compute_end,
        "upload_start_s": upload_start_s,
        "arrive_s": np.where(np.isfinite(arr), arr, np.nan),
        "end_s": stop,
        "reason": np.array(ASYNC_REASONS, dtype=object)[reason],
        "step": step,
        "staleness": np.where(step >= 1, step - 1 - start_version, -1).astype(np.int64),
        "down_bytes": down_bytes,
        "up_bytes": up_bytes,
        "compute_s": compute_s,
        "energy_j": energy_frame(timeline, system.energy)["energy_j"].to_numpy(),
    }, copy=True)  # its own columns: the timeline shares the arrays
    rows = protocol.step_rows
    number, time_s, used, mean, most = (list(c) for c in zip(*rows, strict=True)) if rows else ([],) * 5
    steps = pd.DataFrame({"step": np.array(number, dtype=np.int64), "time_s": np.array(time_s, dtype=float),
                          "updates": np.array(used, dtype=np.int64), "mean_staleness": np.array(mean, dtype=float),
                          "max_staleness": np.array(most, dtype=np.int64)})
    return AsyncSchedule(updates, steps, config, profiles)
