"""What a simulated round needs besides the clock: the round plan and the recorder.

``RoundPlan`` holds everything a round needs that does not change between
rounds (the clients' profiles, compute seconds, the selection policy, the
sessions and time-varying paths) and decides who is available, selected and
drops out (module docstring of `fedsim.system.sim`, steps 1, 2 and 4). With
``given`` (`fedsim replay`), round r selects exactly ``given[r - 1]``: every
client available, none dropping out, all kept unless the deadline or a session
ending cuts them. ``Recorder`` fills the timeline's column arrays and the
per-round rows; a DataFrame is built once at the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedsim import seeding
from fedsim.system.availability import Sessions
from fedsim.system.cells import PathLinks
from fedsim.system.devices import trace_compute_s
from fedsim.system.frames import PHASE_TIME_COLUMNS, SIM_ROUND_COLUMNS, TIMELINE_COLUMNS
from fedsim.system.payload import Payload, work_units
from fedsim.system.profiles import ClientProfiles
from fedsim.system.spec import SystemConfig

#: Why a client of a round was not aggregated ("" = kept or not selected).
DROP_REASONS = ("", "unavailable", "dropout", "deadline", "overcommit", "offline")

__all__ = ["DROP_REASONS", "Recorder", "RoundPlan"]


class RoundPlan:
    """Everything a round needs that does not change between rounds."""

    def __init__(
        self,
        system: SystemConfig,
        profiles: ClientProfiles,
        client_samples: np.ndarray,
        payload: Payload,
        work_fraction: float,
        seed: int,
        local_epochs: int,
        sessions: Sessions | None = None,
        given: Sequence[np.ndarray] | None = None,
    ) -> None:
        compute = system.compute
        self.given = None if given is None else [np.asarray(p, dtype=np.int64) for p in given]
        self.sessions = sessions
        self.paths: PathLinks | None = None  # time-varying links or cells (simulate sets them)
        self.n_clients = len(profiles)
        self.profiles = profiles
        self.payload = payload
        self.seed = seed
        self.half_rtt_s = profiles.rtt_s / 2.0
        if profiles.s_per_sample is not None:  # a device trace times each device directly
            self.compute_s = trace_compute_s(profiles.s_per_sample, client_samples, local_epochs, work_fraction)
        else:
            self.compute_s = (
                compute.t_comp_full * work_fraction
                * work_units(client_samples, local_epochs, compute.reference_samples) / profiles.speed
            )
        self.kept_target = system.rounds.kept_count(self.n_clients)
        self.select_target = system.rounds.selected_count(self.n_clients)
        self.deadline_s = system.rounds.deadline
        self.dropout = system.rounds.dropout
        self.all_available = bool((profiles.availability >= 1.0).all())
        self._everyone = np.ones(self.n_clients, dtype=bool)
        self._everyone.setflags(write=False)
        if self.given is not None:  # replay: the run decided who took part, not this plan
            self.all_available = True
            self.kept_target = self.n_clients
            self.dropout = 0.0

    def available(self, round_num: int, time_s: float = 0.0) -> np.ndarray:
        if self.given is not None:
            return self._everyone
        online = None if self.sessions is None else self.sessions.online(time_s)
        if self.all_available:
            return self._everyone if online is None else online
        draws = seeding.rng(self.seed, "round", round_num, "availability").random(self.n_clients)
        return draws < self.profiles.availability if online is None else online & (draws < self.profiles.availability)

    def offline_at(self, time_s: float, selected: np.ndarray) -> np.ndarray:
        """When each selected client goes offline, relative to ``time_s`` (inf: never)."""
        if self.sessions is None:
            return np.full(selected.size, math.inf)
        return self.sessions.session_end(time_s, selected) - time_s

    def select(self, round_num: int, available: np.ndarray) -> np.ndarray:
        if self.given is not None:
            return self.given[round_num - 1]
        candidates = np.flatnonzero(available)
        if candidates.size <= self.select_target:
            return candidates
        chosen = seeding.rng(self.seed, "round", round_num, "selection").choice(
            candidates, size=self.select_target, replace=False
        )
        return np.sort(chosen)

    def dropouts(self, round_num: int, selected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(quits, moment in [0, 1) of the computation) for the selected clients;
        drawn for all K clients so a client's fate does not depend on who else
        was selected."""
        if self.dropout <= 0:
            return np.zeros(selected.size, dtype=bool), np.zeros(selected.size)
        stream = seeding.rng(self.seed, "round", round_num, "dropout")
        quits = stream.random(self.n_clients) < self.dropout
        moment = stream.random(self.n_clients)
        return quits[selected], moment[selected]


class Recorder:
    """Column arrays of the timeline (preallocated, K rows per round) and the
    per-round records; a DataFrame is built once at the end.

    With a ``sink`` (`fedsim.system.timeline_io.TimelineWriter`) the arrays
    hold only ``chunk_rounds`` rounds: `round_done` hands each full chunk to
    the sink and starts the next, and `close` writes the last one, so the
    timeline is never held whole. ``base(r)`` is round r's first row.
    """

    def __init__(self, n_clients: int, rounds: int, sink: Any = None, chunk_rounds: int | None = None) -> None:
        self.n_clients = n_clients
        self.rounds_total = rounds
        self.sink = sink
        self.chunk_rounds = rounds if sink is None else max(1, min(rounds, chunk_rounds or rounds))
        self.first_round = 1  # the round the arrays' first rows belong to
        self._allocate(self.chunk_rounds)
        self.round_rows: list[tuple[Any, ...]] = []
        self.participation: list[np.ndarray] = []

    def _allocate(self, rounds: int) -> None:
        n_clients = self.n_clients
        rows = n_clients * rounds
        first = self.first_round
        self.cols: dict[str, np.ndarray] = {
            "round": np.repeat(np.arange(first, first + rounds, dtype=np.int64), n_clients),
            "client_id": np.tile(np.arange(n_clients, dtype=np.int64), rounds),
            "selected": np.zeros(rows, dtype=bool),
            "kept": np.zeros(rows, dtype=bool),
            "drop_reason": np.zeros(rows, dtype=np.int8),
            **{name: np.full(rows, np.nan) for name in PHASE_TIME_COLUMNS},
            "down_bytes": np.zeros(rows),
            "up_bytes": np.zeros(rows),
            "compute_s": np.zeros(rows),
        }

    def base(self, round_num: int) -> int:
        """The row of client 0 in round ``round_num`` within the arrays."""
        return (round_num - self.first_round) * self.n_clients

    def round_done(self, round_num: int) -> None:
        """Round ``round_num`` is recorded: with a sink, write a full chunk."""
        if self.sink is None or round_num - self.first_round + 1 < self.chunk_rounds:
            return
        self.sink.write(self.arrow())
        self.first_round = round_num + 1
        left = self.rounds_total - round_num
        if left > 0:
            self._allocate(min(self.chunk_rounds, left))

    def close(self) -> None:
        """With a sink: write the rounds not yet written and finish the file."""
        if self.sink is None:
            return
        done = len(self.round_rows)
        if done >= self.first_round:  # a partial chunk (a run cut short by an error has none)
            rows = (done - self.first_round + 1) * self.n_clients
            self.cols = {name: values[:rows] for name, values in self.cols.items()}
            self.sink.write(self.arrow())
        self.sink.close()

    def arrow(self) -> Any:
        """The arrays as a ``pyarrow.Table`` (what the sink writes; the reason
        codes become strings in arrow, without a Python object per row)."""
        import pyarrow as pa

        reasons = pa.array(DROP_REASONS, type=pa.string()).take(pa.array(self.cols["drop_reason"]))
        return pa.table({name: reasons if name == "drop_reason" else pa.array(self.cols[name])
                         for name in TIMELINE_COLUMNS})

    def timeline(self) -> pd.DataFrame:
        cols = dict(self.cols)
        cols["drop_reason"] = np.array(DROP_REASONS, dtype=object)[cols["drop_reason"]]
        # copy=False: the frame takes over the recorder's arrays instead of copying
        # them (the timeline is K x rounds rows: 0.9 GB at 100,000 clients x 100 rounds)
        return pd.DataFrame(cols, columns=list(TIMELINE_COLUMNS), copy=False)

    def rounds(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.round_rows, columns=list(SIM_ROUND_COLUMNS))
        for name in ("round", "available", "selected", "participants"):
            frame[name] = frame[name].astype(np.int64)
        return frame
