"""Client energy per round, computed from the simulated timeline.

Per (round, client) row of the timeline (`fedsim.system.frames.TIMELINE_COLUMNS`):

* **compute** ``compute_j = compute_w * compute_s``: the device's power while
  training times the seconds it actually trained (a client that dropped out
  or was cut by the deadline trained, and pays, only until it stopped);
* **radio, active** (Huang et al., MobiSys 2012, the linear data-transfer
  model; `fedsim.system.power`): a download from ``download_start_s`` to
  ``download_end_s`` that moved ``down_bytes`` costs
  ``base_w * duration + down_w_per_mbps * megabits``, an upload likewise with
  ``up_w_per_mbps`` (a transfer cut short costs its time and bytes until the
  cut);
* **tail**: after each transfer the radio stays in the tail state for
  ``tail_s`` at ``tail_w``, unless the client's next transfer (the upload of
  the same round, or its download in a later round) starts sooner: then the
  tail lasts only until that start, and is never paid twice;
* **promotion**: a transfer that does not start inside the tail of the
  client's previous one finds the radio idle and pays ``promotion_w *
  promotion_s`` (the first transfer of every client does).

Tail energy is booked on the row of the transfer it follows, promotion on the
row of the transfer it precedes, so a round's energy is the sum of its rows.
Idle power between rounds (outside tails) is not counted: it is not caused by
federated learning. The promotion delay itself is not simulated (the timeline
is the simulator's); only its energy is counted.

Energy enters no cache key: it is computed when the frames are joined
(`fedsim.pipeline.runner.join`) from the cached timeline and ``system.energy``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedsim.system.energy_spec import EnergySpec
from fedsim.system.power import RadioPower

__all__ = [
    "CLIENT_ENERGY_COLUMNS",
    "ROUND_ENERGY_COLUMNS",
    "energy_frame",
    "round_energy",
]

#: Per (round, client) energy in joules (`energy_frame`); the first two are keys.
CLIENT_ENERGY_COLUMNS: tuple[str, ...] = (
    "round",
    "client_id",
    "compute_j",
    "radio_down_j",
    "radio_up_j",
    "tail_j",
    "promotion_j",
    "energy_j",
)
#: Per round (`round_energy`): total over the round's selected clients, and
#: their mean (0 in a round that selected nobody).
ROUND_ENERGY_COLUMNS: tuple[str, ...] = ("round", "round_energy_j", "mean_client_energy_j")

_MEGABITS_PER_BYTE = 8e-6


def _transfers(timeline: pd.DataFrame, keys: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every transfer of the timeline as (client key, start, end, row, kind):
    kind 0 a download, 1 an upload; rows whose phase was never reached have a
    NaN start and are left out."""
    parts = []
    for kind, (start, end) in enumerate((("download_start_s", "download_end_s"),
                                         ("upload_start_s", "upload_end_s"))):
        start_s = timeline[start].to_numpy(dtype=float)
        end_s = timeline[end].to_numpy(dtype=float)
        rows = np.flatnonzero(~np.isnan(start_s) & ~np.isnan(end_s))
        parts.append((keys[rows], start_s[rows], end_s[rows], rows, np.full(rows.size, kind)))
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


def _tails(timeline: pd.DataFrame, radio: RadioPower) -> tuple[np.ndarray, np.ndarray]:
    """Tail and promotion joules per timeline row (see the module docstring).

    A client is identified by ``client_id`` (and ``method`` when the timeline
    holds several methods' runs, which are separate simulations)."""
    n = len(timeline)
    ids = timeline["client_id"].to_numpy()
    if "method" in timeline.columns:
        keys = pd.MultiIndex.from_arrays([timeline["method"].to_numpy(), ids]).codes
        key = keys[0].astype(np.int64) * (int(keys[1].max(initial=0)) + 1) + keys[1]
    else:
        key = ids.astype(np.int64)
    client, start, end, rows, kind = _transfers(timeline, key)
    # chronological per client: by client, then start, then download before upload
    order = np.lexsort((kind, start, client))
    client, start, end, rows = client[order], start[order], end[order], rows[order]
    same_next = np.zeros(client.size, dtype=bool)
    same_next[:-1] = client[1:] == client[:-1]
    gap = np.full(client.size, np.inf)
    gap[:-1] = start[1:] - end[:-1]
    gap = np.where(same_next, np.maximum(gap, 0.0), np.inf)
    tail_s = np.minimum(radio.tail_s, gap)
    # the radio is idle at a transfer's start if it is the client's first, or
    # the previous one's tail ran out (a gap of exactly tail_s: demoted just then)
    promoted = np.ones(client.size, dtype=bool)
    promoted[1:] = ~same_next[:-1] | (gap[:-1] >= radio.tail_s)
    tail_j = np.zeros(n)
    promotion_j = np.zeros(n)
    np.add.at(tail_j, rows, radio.tail_w * tail_s)
    np.add.at(promotion_j, rows, np.where(promoted, radio.promotion_w * radio.promotion_s, 0.0))
    return tail_j, promotion_j


def energy_frame(timeline: pd.DataFrame, spec: EnergySpec) -> pd.DataFrame:
    """Joules spent by each client in each round, one row per timeline row.

    Args:
        timeline: the system stage's timeline (`TIMELINE_COLUMNS`; a
            ``method`` column may be present: each method's clients are then
            separate devices), one row per (round, client). Times in
            simulated seconds, bytes, compute seconds.
        spec: the ``system.energy`` section.

    Returns:
        ``CLIENT_ENERGY_COLUMNS`` (plus ``method`` first when the timeline has
        it), in the timeline's row order; unselected rows spend 0 J.

    Raises:
        ValueError: a timeline without the columns named above, or whose
            times or bytes are negative, or a transfer that ends before it
            starts.
    """
    needed = ("round", "client_id", "download_start_s", "download_end_s", "upload_start_s",
              "upload_end_s", "down_bytes", "up_bytes", "compute_s")
    missing = [name for name in needed if name not in timeline.columns]
    if missing:
        raise ValueError(f"timeline lacks column(s) {', '.join(missing)}")
    radio = spec.radio()
    timeline = timeline.reset_index(drop=True)
    down_s = (timeline["download_end_s"] - timeline["download_start_s"]).fillna(0.0).to_numpy(dtype=float)
    up_s = (timeline["upload_end_s"] - timeline["upload_start_s"]).fillna(0.0).to_numpy(dtype=float)
    down_bytes = timeline["down_bytes"].to_numpy(dtype=float)
    up_bytes = timeline["up_bytes"].to_numpy(dtype=float)
    compute_s = timeline["compute_s"].to_numpy(dtype=float)
    for name, values in (("download duration", down_s), ("upload duration", up_s),
                         ("down_bytes", down_bytes), ("up_bytes", up_bytes), ("compute_s", compute_s)):
        if (values < 0).any() or np.isnan(values).any():
            raise ValueError(f"timeline: {name} must be >= 0 (a negative or NaN value at row "
                             f"{int(np.flatnonzero(~(values >= 0))[0])})")
    tail_j, promotion_j = _tails(timeline, radio)
    out = pd.DataFrame({
        "round": timeline["round"].to_numpy(),
        "client_id": timeline["client_id"].to_numpy(),
        "compute_j": spec.compute_w * compute_s,
        "radio_down_j": radio.base_w * down_s + radio.down_w_per_mbps * down_bytes * _MEGABITS_PER_BYTE,
        "radio_up_j": radio.base_w * up_s + radio.up_w_per_mbps * up_bytes * _MEGABITS_PER_BYTE,
        "tail_j": tail_j,
        "promotion_j": promotion_j,
    })
    out["energy_j"] = out[list(CLIENT_ENERGY_COLUMNS[2:-1])].sum(axis=1)
    if "method" in timeline.columns:
        out.insert(0, "method", timeline["method"].to_numpy())
    return out


def round_energy(energy: pd.DataFrame, selected: np.ndarray | pd.Series, rounds: int) -> pd.DataFrame:
    """Per round 1..``rounds``: ``round_energy_j`` (joules of all the round's
    clients, dropped ones' partial energy included) and
    ``mean_client_energy_j`` (over the round's selected clients; 0 where none
    was selected). ``energy``: one method's `energy_frame`; ``selected``: the
    timeline's ``selected`` column, row for row."""
    chosen = np.asarray(selected, dtype=bool)
    round_nums = energy["round"].to_numpy(dtype=np.int64)
    total = np.bincount(round_nums, weights=energy["energy_j"].to_numpy(dtype=float),
                        minlength=rounds + 1)[1:rounds + 1]
    count = np.bincount(round_nums[chosen], minlength=rounds + 1)[1:rounds + 1]
    mean = np.divide(total, count, out=np.zeros(rounds), where=count > 0)
    return pd.DataFrame({"round": np.arange(1, rounds + 1), "round_energy_j": total,
                         "mean_client_energy_j": mean})
