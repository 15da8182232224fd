"""Which figures of a scenario report carry no information, and why.

In an idealised system (the HP-FL paper's: no network time, identical
devices, every client in every round) several figures of the scenario report
are fixed by construction and only look like findings:

* accuracy vs simulated wall-clock time (TTA) repeats accuracy vs cumulative
  computation (CTA) when a round lasts exactly its computation
  (`wallclock_repeats_compute`);
* the per-round time of the mean client by phase is one constant bar per
  method when no phase time changes from round to round
  (`breakdown_constant`); the metrics table already gives it;
* the client Gantt chart (identical bars) and the distribution of client
  round times (one vertical line per method) show nothing when every client
  of a method takes the same time in every round and none is dropped
  (`clients_uniform`).

`fedsim.report.scenario.writer.write_report` leaves those figures out, lists
them with the reason in summary.md, and deletes an earlier run's images of
them. A heterogeneous network or device population makes each of them vary,
and then they are drawn as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: values closer than this, relative to their magnitude, count as equal (sums
#: of the same floats in another order differ in the last bits); the study
#: report's test too (`fedsim.report.study.informative`)
REL_TOL = 1e-9


def spread(values: np.ndarray) -> float:
    """max - min of the finite ``values`` relative to their largest magnitude
    (0 for fewer than two values or all zero)."""
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return 0.0
    scale = float(np.abs(finite).max())
    return 0.0 if scale == 0.0 else float(finite.max() - finite.min()) / scale


def wallclock_repeats_compute(rounds: pd.DataFrame) -> bool:
    """True when every method's cumulative simulated wall-clock time equals
    its cumulative client computation in every round (within `REL_TOL`): the
    TTA curve is then the CTA curve."""
    if rounds.empty or not {"cum_wallclock_s", "cum_compute_s"} <= set(rounds.columns):
        return False
    wall = rounds["cum_wallclock_s"].to_numpy(dtype=float)
    compute = rounds["cum_compute_s"].to_numpy(dtype=float)
    scale = np.maximum(np.abs(wall), np.abs(compute))
    return bool(np.all(np.abs(wall - compute) <= REL_TOL * np.maximum(scale, 1e-300)))


def breakdown_constant(rounds: pd.DataFrame, columns: Sequence[str]) -> bool:
    """True when, for every method, each of the phase-time ``columns``
    (``mean_download_s`` ...) has one value over all its rounds."""
    if rounds.empty or not set(columns) <= set(rounds.columns):
        return False
    for _, group in rounds.groupby("method", sort=False):
        for column in columns:
            if spread(group[column].to_numpy(dtype=float)) > REL_TOL:
                return False
    return True


def clients_uniform(timeline: pd.DataFrame | None) -> bool:
    """True when every selected client is kept and, for every method, every
    client's round time (download start to upload end) is the same in every
    round (within `REL_TOL`). False for an empty or missing timeline."""
    if timeline is None or timeline.empty:
        return False
    if "kept" in timeline.columns and not timeline["kept"].astype(bool).all():
        return False
    duration = (timeline["upload_end_s"] - timeline["download_start_s"]).to_numpy(dtype=float)
    if not np.isfinite(duration).all():
        return False
    methods = timeline["method"].to_numpy()
    return all(spread(duration[methods == m]) <= REL_TOL for m in pd.unique(methods))


#: figure name -> (test, reason) of the figures `left_out` may drop
REASONS = {
    "accuracy_vs_wallclock": "a round lasts exactly its computation, so it repeats the computation (CTA) curve",
    "round_time_breakdown": "every phase time is one constant per method, given in the metrics table",
    "client_gantt": "every client of a method takes the same time in every round and none is dropped",
    "client_round_times": "every client of a method takes the same time in every round (one vertical line each)",
}


def left_out(rounds: pd.DataFrame, timeline: pd.DataFrame | None,
             breakdown_columns: Sequence[str]) -> dict[str, str]:
    """Figure name -> why it carries no information, for the scenario
    report's figures that the frames make uninformative (module docstring)."""
    out: dict[str, str] = {}
    if wallclock_repeats_compute(rounds):
        out["accuracy_vs_wallclock"] = REASONS["accuracy_vs_wallclock"]
    if breakdown_constant(rounds, breakdown_columns):
        out["round_time_breakdown"] = REASONS["round_time_breakdown"]
    if clients_uniform(timeline):
        out["client_gantt"] = REASONS["client_gantt"]
        out["client_round_times"] = REASONS["client_round_times"]
    return out


__all__ = ["REASONS", "REL_TOL", "breakdown_constant", "clients_uniform", "left_out", "spread",
           "wallclock_repeats_compute"]
