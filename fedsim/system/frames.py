"""Column contracts of the system stage's frames (`fedsim.system.sim.simulate`).

``TIMELINE_COLUMNS``: one row per (round, client): the keys, the phase times
in simulated seconds, then what was spent. ``SIM_ROUND_COLUMNS``: one row per
simulated round. Not to be confused with ``fedsim.metrics.ROUNDS_COLUMNS``,
the columns of rounds.csv (one row per method x round, training joined with
the simulation). Meanings: `fedsim.system.sim.SystemResult`.

This module imports nothing, so the report can name the columns without
importing simpy.
"""

from __future__ import annotations

#: Who, in which round, and what became of the client.
TIMELINE_KEY_COLUMNS: tuple[str, ...] = (
    "round",
    "client_id",
    "selected",
    "kept",
    "drop_reason",
)
#: When each phase started and ended (simulated seconds; NaN: not reached).
PHASE_TIME_COLUMNS: tuple[str, ...] = (
    "download_start_s",
    "download_end_s",
    "compute_start_s",
    "compute_end_s",
    "upload_start_s",
    "upload_end_s",
)
#: What the client spent: bytes transferred, compute seconds.
TIMELINE_COST_COLUMNS: tuple[str, ...] = ("down_bytes", "up_bytes", "compute_s")
TIMELINE_COLUMNS: tuple[str, ...] = (
    *TIMELINE_KEY_COLUMNS,
    *PHASE_TIME_COLUMNS,
    *TIMELINE_COST_COLUMNS,
)
SIM_ROUND_COLUMNS: tuple[str, ...] = (
    "round",
    "start_s",
    "end_s",
    "duration_s",
    "available",
    "selected",
    "participants",
    "down_bytes",
    "up_bytes",
    "round_bytes",
    "mean_compute_s",
    "max_compute_s",
    "mean_download_s",
    "mean_upload_s",
    "mean_wait_s",
)

__all__ = [
    "PHASE_TIME_COLUMNS",
    "SIM_ROUND_COLUMNS",
    "TIMELINE_COLUMNS",
    "TIMELINE_COST_COLUMNS",
    "TIMELINE_KEY_COLUMNS",
]
