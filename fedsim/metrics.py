"""Cost-to-accuracy metrics: NRA, CCA, CTA, TTA (pure functions).

Definitions (HP-FL paper, Sec. IV-A "Evaluation metrics", generalised as in
docs/architecture.md "Metric definitions"); rounds are 1-based and
``values[r - 1]`` belongs to round r:

* NRA@x = min { r : accuracy_r >= x }, or None if no round reaches x
  (a NaN accuracy, e.g. a round that was not evaluated, never reaches it).
* CCA@x = sum_{r=1}^{NRA@x} round_bytes_r: bytes through the server's link
  (downloads + uploads of all selected clients, dropped ones' partial traffic
  included). With every client in every round, values-only payloads and no
  mask or overhead this is exactly the paper's formula
  ``n_sent * (value_bits / 8) * 2K * NRA`` with n_sent the parameters whose
  values travel: n_sent = |θ| = 266,610 for a dense LeNet-300-100, so
  |θ| * 4 B * 2K * NRA to the byte; for a sparse method n_sent = surviving
  weights + all biases (biases are never pruned), which the paper writes as
  |θ| P_R (P_R counts weights only, so at P_R = 0.107 the paper's count,
  266,610 x 0.107 = 28,527, is 1.6 % below the 28,992 values that travel:
  28,582 weights at P_R = 0.8^10 plus the 410 biases).
* CTA@x = sum_{r=1}^{NRA@x} round_compute_s_r, with round_compute_s_r the mean
  computation time of round r's participants. With identical devices on the
  reference data size this is the paper's ``t_comp * P_R * NRA``.
* TTA@x = sum_{r=1}^{NRA@x} round_wallclock_s_r: simulated seconds from the
  start of round 1 to the end of round NRA@x (rounds run back to back).

* ETA@x (``eta_j``) = sum_{r=1}^{NRA@x} round_energy_j_r: joules spent by all
  the clients of rounds 1..NRA@x (computation, radio transfers, tails and
  promotions; `fedsim.system.energy`), dropped clients' energy until they
  stopped included. NaN when x is not reached, like TTA.

Each is the running sum (``cum_*`` column of rounds.csv) at round NRA@x, and
the functions here compute them the same way (``numpy.cumsum``), so the two
agree to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "ENERGY_METRICS_COLUMNS",
    "ENERGY_ROUNDS_COLUMNS",
    "METRICS_COLUMNS",
    "ROUNDS_COLUMNS",
    "cca_bytes",
    "cta_s",
    "eta_j",
    "metrics_table",
    "nra",
    "rounds_table",
    "tta_s",
]

#: rounds.csv: one row per method x round (training joined with the simulation);
#: the simulator's own per-round frame is `fedsim.system.frames.SIM_ROUND_COLUMNS`.
ROUNDS_COLUMNS = (
    "method",
    "round",
    "accuracy",
    "loss",
    "participants",
    "round_bytes",
    "cum_bytes",
    "round_compute_s",
    "cum_compute_s",
    "round_wallclock_s",
    "cum_wallclock_s",
)
METRICS_COLUMNS = (
    "method",
    "remaining_rate",
    "params",
    "comm_bytes_per_round",
    "compute_s_per_round",
    "target_accuracy",
    "nra",
    "cca_bytes",
    "cta_s",
    "tta_s",
    "final_accuracy",
    "rounds_run",
)
#: rounds.csv's energy columns, after every other column, where the frame given
#: to `rounds_table` has ``round_energy_j`` (joules of all of a round's
#: clients) and ``mean_client_energy_j`` (their mean per selected client).
ENERGY_ROUNDS_COLUMNS = ("round_energy_j", "mean_client_energy_j", "cum_energy_j")
#: metrics.csv's energy column (ETA@x, joules), after ``METRICS_COLUMNS``
#: where the rounds carry ``round_energy_j``.
ENERGY_METRICS_COLUMNS = ("eta_j",)
_INPUT_COLUMNS = (
    "method",
    "round",
    "accuracy",
    "loss",
    "participants",
    "round_bytes",
    "round_compute_s",
    "round_wallclock_s",
)
_CUMULATIVE = {"round_bytes": "cum_bytes", "round_compute_s": "cum_compute_s",
               "round_wallclock_s": "cum_wallclock_s"}


def nra(accuracy: Sequence[float], target: float) -> int | None:
    """NRA@target: the first (1-based) round whose accuracy is >= ``target``,
    or None. ``accuracy[r - 1]`` is the accuracy after round r, in the same
    unit as ``target`` (fraction or percent)."""
    reached = np.flatnonzero(np.asarray(accuracy, dtype=float) >= target)
    return int(reached[0]) + 1 if reached.size else None


def _sum_to(values: Sequence[float], nra_round: int | None, name: str) -> float | None:
    """sum(values[:nra_round]) as numpy's cumsum computes it; None if not reached."""
    if nra_round is None:
        return None
    array = np.asarray(values, dtype=float)
    if not 1 <= nra_round <= array.size:
        raise ValueError(f"{name}: round {nra_round} is outside 1..{array.size}")
    return float(np.cumsum(array[:nra_round])[-1])


def cca_bytes(round_bytes: Sequence[float], nra_round: int | None) -> float | None:
    """CCA@x = sum of ``round_bytes`` over rounds 1..NRA@x (bytes through the
    server's link); None when the target was not reached.

    Raises:
        ValueError: ``nra_round`` beyond the rounds given.
    """
    return _sum_to(round_bytes, nra_round, "cca_bytes")


def cta_s(round_compute_s: Sequence[float], nra_round: int | None) -> float | None:
    """CTA@x = sum of the per-round mean participant compute time over rounds
    1..NRA@x (seconds); None when the target was not reached."""
    return _sum_to(round_compute_s, nra_round, "cta_s")


def tta_s(round_wallclock_s: Sequence[float], nra_round: int | None) -> float | None:
    """TTA@x = simulated wall-clock seconds from the start of round 1 to the end
    of round NRA@x; None when the target was not reached."""
    return _sum_to(round_wallclock_s, nra_round, "tta_s")


def eta_j(round_energy_j: Sequence[float], nra_round: int | None) -> float | None:
    """ETA@x = joules of all clients over rounds 1..NRA@x; None when the
    target was not reached."""
    return _sum_to(round_energy_j, nra_round, "eta_j")


def rounds_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of rounds.csv: ``frame`` (columns method, round, accuracy, loss,
    participants, round_bytes, round_compute_s, round_wallclock_s; one row per
    method and round) sorted by method and round, with the running sums
    cum_bytes, cum_compute_s and cum_wallclock_s added (``ROUNDS_COLUMNS``
    first, any other columns after); where ``frame`` has ``round_energy_j``,
    also cum_energy_j, and ``ENERGY_ROUNDS_COLUMNS`` come last.

    Raises:
        ValueError: a missing column, or a method whose rounds are not exactly
            1, 2, ..., R.
    """
    missing = [name for name in _INPUT_COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(f"rounds frame lacks column(s) {', '.join(missing)}")
    parts = []
    for method, part in frame.groupby("method", sort=False):
        part = part.sort_values("round")
        rounds = part["round"].to_numpy()
        if not np.array_equal(rounds, np.arange(1, len(part) + 1)):
            raise ValueError(f"method {method!r}: rounds must be 1..{len(part)} without gaps or repeats")
        part = part.copy()
        for source, target in _cumulative(frame).items():
            part[target] = np.cumsum(part[source].to_numpy(dtype=float))
        parts.append(part)
    out = pd.concat(parts, ignore_index=True) if parts else frame.assign(
        **{name: pd.Series(dtype=float) for name in _cumulative(frame).values()}
    )
    energy = [name for name in ENERGY_ROUNDS_COLUMNS if name in out.columns]
    extra = [name for name in out.columns if name not in ROUNDS_COLUMNS and name not in energy]
    return out[list(ROUNDS_COLUMNS) + extra + energy]


def _cumulative(frame: pd.DataFrame) -> dict[str, str]:
    """The running sums to add: ``_CUMULATIVE``, + energy where present."""
    if "round_energy_j" in frame.columns:
        return {**_CUMULATIVE, "round_energy_j": "cum_energy_j"}
    return _CUMULATIVE


def metrics_table(
    frame: pd.DataFrame,
    targets: Sequence[float],
    method_info: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """The rows of metrics.csv: one per (method, target), columns ``METRICS_COLUMNS``.

    Args:
        frame: per-round rows as for ``rounds_table`` (cum_* columns optional).
        targets: accuracy targets x, in the unit of the accuracy column.
        method_info: per method, ``remaining_rate`` and ``params`` (and any
            other constant columns to add); missing values are NaN.

    Columns: nra (nullable int), cca_bytes, cta_s, tta_s (NaN when the target
    was not reached), final_accuracy (the last evaluated round's), rounds_run,
    comm_bytes_per_round and compute_s_per_round (means over the rounds run);
    where ``frame`` has ``round_energy_j``, eta_j (ETA@x, NaN when not
    reached) after them (``ENERGY_METRICS_COLUMNS``).
    """
    cumulative = [*_CUMULATIVE.values(), "cum_energy_j"]
    table = rounds_table(frame.drop(columns=[c for c in cumulative if c in frame.columns]))
    energy = "cum_energy_j" in table.columns
    info = method_info or {}
    rows = []
    for method, part in table.groupby("method", sort=False):
        accuracy = part["accuracy"].to_numpy(dtype=float)
        evaluated = accuracy[~np.isnan(accuracy)]
        extra = dict(info.get(str(method), {}))
        base = {
            "method": method,
            "remaining_rate": extra.pop("remaining_rate", math.nan),
            "params": extra.pop("params", math.nan),
            "comm_bytes_per_round": float(part["round_bytes"].mean()),
            "compute_s_per_round": float(part["round_compute_s"].mean()),
        }
        for target in targets:
            reached = nra(accuracy, target)
            at_nra = (
                part[["cum_bytes", "cum_compute_s", "cum_wallclock_s"]].iloc[reached - 1].tolist()
                if reached is not None else [math.nan] * 3
            )
            rows.append({
                **base,
                "target_accuracy": float(target),
                "nra": reached,
                "cca_bytes": float(at_nra[0]),
                "cta_s": float(at_nra[1]),
                "tta_s": float(at_nra[2]),
                "final_accuracy": float(evaluated[-1]) if evaluated.size else math.nan,
                "rounds_run": len(part),
                **({"eta_j": float(part["cum_energy_j"].iloc[reached - 1]) if reached is not None
                    else math.nan} if energy else {}),
                **extra,
            })
    leading = list(METRICS_COLUMNS) + (list(ENERGY_METRICS_COLUMNS) if energy else [])
    out = pd.DataFrame(rows, columns=leading + sorted(
        {key for row in rows for key in row} - set(leading)))
    out["nra"] = out["nra"].astype("Int64")
    return out
