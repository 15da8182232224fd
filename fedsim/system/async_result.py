"""An asynchronous schedule in the synchronous system stage's frames.

Everything downstream of the system stage (rounds.csv, NRA/CCA/CTA/TTA/ETA,
the energy join, the report's figures) reads a `fedsim.system.sim.SystemResult`:
a per-round frame, a per-(round, client) timeline and who was aggregated in
each round. `as_system_result` writes a FedBuff schedule
(`fedsim.system.asynchronous.AsyncSchedule`) in those frames, with **a round
= a server step**:

* round j spans ``(time_{j-1}, time_j]``, the step times (``time_0`` = 0):
  ``start_s``, ``end_s``, ``duration_s``;
* the timeline holds one row per client update, in the round in whose span it
  ended (arrived, dropped, or was cut at the last step); ``kept`` = used by a
  step (any step: an update used by step j may have arrived in an earlier
  span); ``drop_reason`` is "" for a used update, else its reason
  (``dropout``, ``deadline``, ``offline``, ``stale``: discarded for
  ``max_staleness``, ``unused``: arrived but no step took it, ``end``: still
  running at the last step); its costs are what it spent;
* the per-round traffic and compute are those of the updates that ended in
  the round's span (so their cumulative sums over rounds are everything spent
  up to that step); ``selected`` counts those updates, ``available`` the
  updates started in the span, ``participants`` the updates the step used
  (the buffer size); the means over participants are over the step's used
  updates, and ``mean_wait_s`` is their mean time from arrival to the step;
* ``participation``: per step, the clients it aggregated (sorted; a client
  may appear twice).

So NRA@x counts server steps, CCA@x the bytes spent up to the step that
reached x, TTA@x its simulated time and CTA@x the sum over steps of the
used updates' mean compute time (the synchronous definition with a step for
a round).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fedsim.system.frames import SIM_ROUND_COLUMNS, TIMELINE_COLUMNS
from fedsim.system.sim import SystemResult

if TYPE_CHECKING:
    from fedsim.system.asynchronous import AsyncSchedule

__all__ = ["as_system_result"]


def as_system_result(schedule: AsyncSchedule) -> SystemResult:
    """The schedule as a `SystemResult` whose rounds are its server steps
    (module docstring)."""
    updates = schedule.updates
    times = schedule.steps["time_s"].to_numpy(dtype=float)
    n_steps = times.size
    bounds = np.concatenate(([0.0], times))
    end = updates["end_s"].to_numpy(dtype=float)
    # round j holds the updates that ended in (time_{j-1}, time_j]; later ones (cut) in the last
    span = np.clip(np.searchsorted(times, end, side="left") + 1, 1, n_steps)
    started = np.clip(np.searchsorted(times, updates["start_s"].to_numpy(dtype=float), side="left") + 1,
                      1, n_steps)
    used = updates["step"].to_numpy() >= 1
    timeline = pd.DataFrame({
        "round": span.astype(np.int64),
        "client_id": updates["client_id"].to_numpy(np.int64),
        "selected": np.ones(len(updates), dtype=bool),
        "kept": used,
        "drop_reason": np.where(used, "", updates["reason"].to_numpy(object)).astype(object),
        "download_start_s": updates["start_s"].to_numpy(float),
        "download_end_s": updates["download_end_s"].to_numpy(float),
        "compute_start_s": updates["compute_start_s"].to_numpy(float),
        "compute_end_s": updates["compute_end_s"].to_numpy(float),
        "upload_start_s": updates["upload_start_s"].to_numpy(float),
        "upload_end_s": updates["arrive_s"].to_numpy(float),
        "down_bytes": updates["down_bytes"].to_numpy(float),
        "up_bytes": updates["up_bytes"].to_numpy(float),
        "compute_s": updates["compute_s"].to_numpy(float),
    })[list(TIMELINE_COLUMNS)].sort_values(["round", "client_id"], kind="stable").reset_index(drop=True)

    def per_round(values: np.ndarray, where: np.ndarray) -> np.ndarray:
        return np.bincount(where, weights=values, minlength=n_steps + 1)[1:]

    step = updates["step"].to_numpy()
    u_step = step[used]
    count_used = np.bincount(u_step, minlength=n_steps + 1)[1:].astype(np.int64)

    def mean_used(values: np.ndarray) -> np.ndarray:
        total = per_round(values[used], u_step)
        return np.divide(total, count_used, out=np.zeros(n_steps), where=count_used > 0)

    compute = updates["compute_s"].to_numpy(float)
    download = updates["download_end_s"].to_numpy(float) - updates["start_s"].to_numpy(float)
    upload = updates["arrive_s"].to_numpy(float) - updates["upload_start_s"].to_numpy(float)
    wait = np.where(used, times[np.clip(step - 1, 0, n_steps - 1)] - updates["arrive_s"].to_numpy(float), 0.0)
    down = per_round(updates["down_bytes"].to_numpy(float), span)
    up = per_round(updates["up_bytes"].to_numpy(float), span)
    max_compute = np.zeros(n_steps)
    np.maximum.at(max_compute, u_step - 1, compute[used])
    rounds = pd.DataFrame({
        "round": np.arange(1, n_steps + 1, dtype=np.int64),
        "start_s": bounds[:-1],
        "end_s": bounds[1:],
        "duration_s": np.diff(bounds),
        "available": np.bincount(started, minlength=n_steps + 1)[1:].astype(np.int64),
        "selected": np.bincount(span, minlength=n_steps + 1)[1:].astype(np.int64),
        "participants": count_used,
        "down_bytes": down,
        "up_bytes": up,
        "round_bytes": down + up,
        "mean_compute_s": mean_used(compute),
        "max_compute_s": max_compute,
        "mean_download_s": mean_used(np.nan_to_num(download)),
        "mean_upload_s": mean_used(np.nan_to_num(upload)),
        "mean_wait_s": mean_used(np.nan_to_num(wait)),
    })[list(SIM_ROUND_COLUMNS)]
    clients = updates["client_id"].to_numpy(np.int64)
    participation = [np.sort(clients[used & (step == j)]) for j in range(1, n_steps + 1)]
    return SystemResult(timeline, rounds, participation, schedule.profiles)
