"""When each client is online: session traces and a diurnal generator.

A client's availability is a set of disjoint *online intervals* ``[start_s,
end_s)`` in simulated seconds. The system simulation (`fedsim.system.sim`)
asks two questions of them: who is online at a round's start (only those can
be selected), and when does each selected client's current session end (if it
ends before the client has sent its update, the client is dropped with reason
``offline``, its bytes and seconds until then counted as spent).

Sources (``system.clients.sessions``):

* a CSV file, header ``client_id,start_s,end_s`` (any column order), one row
  per interval; bare numbers are seconds, cells may carry units (``"2 h"``).
  Rows of a client must come in time order and must not overlap (touching
  intervals are joined); a client without rows is never online; times are
  >= 0 and finite, ``end_s > start_s``, ids in 0..K-1. Every problem raises
  ``InputError`` naming the file, the line and the column (`read_sessions`);
* the diurnal generator (`generate_diurnal`, model in
  `fedsim.system.availability_spec.DiurnalSpec`): a two-state Markov chain per
  client whose off->on rate follows a cosine of the time of day, simulated
  exactly, one day at a time, by thinning a Poisson process (Lewis & Shedler,
  *Naval Res. Logistics Q.* 26(3), 1979). Day d draws from the stream
  ``rng(seed, "sessions", "day", d)`` and the chain is memoryless, so the
  sessions do not depend on how far ahead they were generated.

References for the model's shape: Bonawitz et al., "Towards Federated Learning
at Scale: System Design", MLSys 2019 (device participation swings with the
time of day, highest at night); Yang et al., "Characterizing Impacts of
Heterogeneity in Federated Learning upon Large-Scale Smartphone Data", WWW
2021 (the 136k-device trace behind FedScale's ``client_behave_trace``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedsim import seeding
from fedsim.errors import InputError
from fedsim.system.availability_spec import DiurnalSpec
from fedsim.system.csvrows import data_rows
from fedsim.system.links import FluidSchedule
from fedsim.units import parse_duration

__all__ = ["SESSION_COLUMNS", "Sessions", "check_sessions", "generate_diurnal", "load_sessions", "read_sessions",
           "sessions_path", "stop_flows"]

SESSION_COLUMNS = ("client_id", "start_s", "end_s")


class Sessions:
    """Online intervals of K clients, known up to ``horizon_s``.

    Intervals are held sorted by (client, start), disjoint and with touching
    ones joined, in three flat arrays (``client``, ``start_s``, ``end_s``).
    ``extend(horizon_s) -> (client, start_s, end_s)``, where given, produces
    the intervals of [old horizon, new horizon) (a generator); without it the
    table is complete (a trace: offline after its last interval).
    """

    def __init__(self, n_clients: int, client: np.ndarray, start_s: np.ndarray, end_s: np.ndarray,
                 horizon_s: float = math.inf,
                 extend: Callable[[float], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None) -> None:
        self.n_clients = int(n_clients)
        self.horizon_s = float(horizon_s)
        self._extend = extend
        self.client = np.zeros(0, np.int64)
        self.start_s = np.zeros(0)
        self.end_s = np.zeros(0)
        self._add(client, start_s, end_s)

    def _add(self, client: np.ndarray, start_s: np.ndarray, end_s: np.ndarray) -> None:
        client = np.concatenate((self.client, np.asarray(client, np.int64)))
        start = np.concatenate((self.start_s, np.asarray(start_s, float)))
        end = np.concatenate((self.end_s, np.asarray(end_s, float)))
        order = np.lexsort((start, client))
        client, start, end = client[order], start[order], end[order]
        # join touching intervals of one client (a session across a day's end)
        joins = np.flatnonzero((client[1:] == client[:-1]) & (start[1:] <= end[:-1]))
        if joins.size:
            keep = np.ones(client.size, bool)
            keep[joins + 1] = False
            end = np.maximum.reduceat(end, np.flatnonzero(keep))
            client, start = client[keep], start[keep]
        self.client, self.start_s, self.end_s = client, start, end
        self._offsets = np.searchsorted(client, np.arange(self.n_clients + 1))

    def _cover(self, time_s: float) -> None:
        """Generate until the horizon passes ``time_s``."""
        while self._extend is not None and self.horizon_s <= time_s:
            horizon = self.horizon_s
            self._add(*self._extend(horizon))
            if not self.horizon_s > horizon:
                raise RuntimeError("the session generator did not advance its horizon")

    def _current(self, time_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(online at ``time_s``, index of each client's first interval ending after it)."""
        self._cover(time_s)
        passed = np.bincount(self.client[self.end_s <= time_s], minlength=self.n_clients)
        index = self._offsets[:-1] + passed
        has = index < self._offsets[1:]
        safe = np.where(has, index, 0)
        online = has & (self.start_s[safe] <= time_s) if self.client.size else has
        return online, safe

    def online(self, time_s: float) -> np.ndarray:
        """Boolean per client: online at ``time_s`` (s)."""
        return self._current(time_s)[0]

    def session_end(self, time_s: float, clients: np.ndarray) -> np.ndarray:
        """When the session of each of ``clients`` (online at ``time_s``) ends (s);
        ``time_s`` for a client that is offline then."""
        clients = np.asarray(clients, np.int64)
        while True:
            online, index = self._current(time_s)
            ends = np.where(online[clients], self.end_s[index[clients]] if self.client.size else 0.0,
                            time_s)
            if self._extend is None or not (ends >= self.horizon_s).any():
                return ends
            self._cover(self.horizon_s)  # a session runs past what is generated

    def frame_rows(self) -> list[tuple[int, float, float]]:
        """The intervals known so far as (client_id, start_s, end_s) rows."""
        return list(zip(self.client.tolist(), self.start_s.tolist(), self.end_s.tolist(), strict=True))


# --------------------------------------------------------------------------- trace files


def sessions_path(sessions: str, base_dir: Path | None) -> Path:
    """The session CSV's path, relative paths resolved against ``base_dir``."""
    path = Path(sessions)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def read_sessions(path: Path, n_clients: int) -> Sessions:
    """Read a session CSV (module docstring) for ``n_clients`` clients.

    Raises:
        InputError: missing file, bad header, a bad number or time, an unknown
            client id, ``end_s <= start_s``, or a client's rows out of time
            order or overlapping; naming the file, the line and the column.
    """
    where = f"system.clients.sessions {str(path)!r}"
    try:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise InputError(f"{where}: cannot read the file ({exc.strerror})") from None
    rows: list[tuple[int, float, float]] = []
    with handle:
        reader = csv.reader(handle)
        header = next((r for r in reader if any(c.strip() for c in r)), None)
        if header is None:
            raise InputError(f"{where}: the file is empty; expected a header {','.join(SESSION_COLUMNS)}")
        header = [c.strip() for c in header]
        if sorted(header) != sorted(SESSION_COLUMNS):
            raise InputError(f"{where} line {reader.line_num}: header {','.join(header)!r}; "
                             f"expected the columns {','.join(SESSION_COLUMNS)}")
        col = {name: header.index(name) for name in SESSION_COLUMNS}
        last: dict[int, tuple[float, int]] = {}
        for line, row in data_rows(reader, len(header), where):
            raw_id = row[col["client_id"]].strip()
            try:
                client = int(raw_id)
            except ValueError:
                raise InputError(f"{where} line {line}, column client_id: {raw_id!r} is not an integer") from None
            if not 0 <= client < n_clients:
                raise InputError(f"{where} line {line}, column client_id: unknown client {client}; "
                                 f"the scenario has clients 0..{n_clients - 1}")
            times = []
            for name in ("start_s", "end_s"):
                cell = row[col[name]].strip()
                try:
                    value = parse_duration(cell)
                except ValueError as exc:
                    raise InputError(f"{where} line {line}, column {name}: {exc}") from None
                if not (math.isfinite(value) and value >= 0):
                    raise InputError(f"{where} line {line}, column {name}: {cell!r} must be a finite "
                                     "time >= 0 s")
                times.append(value)
            start, end = times
            if not end > start:
                raise InputError(f"{where} line {line}, column end_s: {row[col['end_s']].strip()!r} "
                                 f"must be after start_s {row[col['start_s']].strip()!r}")
            if client in last and start < last[client][0]:
                prev_end, prev_line = last[client]
                raise InputError(f"{where} line {line}, column start_s: client {client}'s interval "
                                 f"starts at {start:g} s, before its interval of line {prev_line} ends "
                                 f"({prev_end:g} s): rows must be in time order, without overlap")
            last[client] = (end, line)
            rows.append((client, start, end))
    if not rows:
        return Sessions(n_clients, np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    client, start, end = (np.array(c) for c in zip(*rows, strict=True))
    return Sessions(n_clients, client, start, end)


# --------------------------------------------------------------------------- diurnal generator


def online_probability(spec: DiurnalSpec, time_s: np.ndarray, phase_s: np.ndarray) -> np.ndarray:
    """p_k(t) of `DiurnalSpec` at times ``time_s`` for clients with local-time
    offsets ``phase_s`` (broadcast)."""
    angle = 2.0 * math.pi * (np.asarray(time_s) + spec.start + phase_s - spec.peak) / spec.period
    return spec.mean + spec.amplitude * np.cos(angle)


def client_phases(spec: DiurnalSpec, n_clients: int, seed: int) -> np.ndarray:
    """Each client's local-time offset (s), uniform in [-spread/2, spread/2]."""
    if spec.spread == 0:
        return np.zeros(n_clients)
    return seeding.rng(seed, "sessions", "phase").uniform(-spec.spread / 2, spec.spread / 2, n_clients)


def generate_diurnal(spec: DiurnalSpec, n_clients: int, seed: int) -> Sessions:
    """Sessions of ``n_clients`` clients from the diurnal model, generated one
    ``period`` at a time as the simulation asks for later times.

    Exact simulation of the time-inhomogeneous on/off chain: an online client
    stays for Exp(mean ``session``); an offline one proposes to come online
    at the events of a Poisson process of rate lambda_max = mu p_max / (1 -
    p_max) and accepts a proposal at t with probability lambda(t) /
    lambda_max (thinning). The state at time 0 is online with probability
    p_k(0) (stream ``rng(seed, "sessions", "start")``).
    """
    mu = 1.0 / spec.session
    p_max = spec.mean + spec.amplitude
    lam_max = mu * p_max / (1.0 - p_max)
    phase = client_phases(spec, n_clients, seed)
    state = {"online": seeding.rng(seed, "sessions", "start").random(n_clients)
             < online_probability(spec, np.zeros(1), phase), "day": 0}

    def day(horizon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = state["day"]
        t0, t1 = d * spec.period, (d + 1) * spec.period
        stream = seeding.rng(seed, "sessions", "day", d)
        online = state["online"].copy()
        now = np.full(n_clients, t0)
        since = np.where(online, t0, np.nan)
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        active = np.ones(n_clients, bool)
        while active.any():
            # one draw per client and step, used or not, so the streams stay aligned
            wait_on = stream.exponential(spec.session, n_clients)
            wait_off = stream.exponential(1.0 / lam_max, n_clients) if lam_max > 0 else np.full(n_clients, np.inf)
            accept = stream.random(n_clients)
            leave = active & online
            arrive_at = now + wait_off
            propose = active & ~online
            nxt = np.where(leave, now + wait_on, arrive_at)
            ends = leave & (nxt >= t1)
            leaves = leave & ~ends
            if leaves.any():
                k = np.flatnonzero(leaves)
                out.append((k, since[k], nxt[k]))
            done = ends | (propose & (nxt >= t1))
            comes = propose & ~done
            comes &= accept * lam_max < mu * _odds(online_probability(spec, nxt, phase))
            online = np.where(leaves, False, np.where(comes, True, online))
            since = np.where(comes, nxt, since)
            now = np.where(active, nxt, now)
            active &= ~done
        k = np.flatnonzero(online)
        out.append((k, since[k], np.full(k.size, t1)))
        state["online"], state["day"] = online, d + 1
        sessions.horizon_s = t1
        return tuple(np.concatenate(parts) for parts in zip(*out, strict=True))  # type: ignore[return-value]

    sessions = Sessions(n_clients, np.zeros(0, np.int64), np.zeros(0), np.zeros(0), 0.0, day)
    return sessions


def _odds(p: np.ndarray) -> np.ndarray:
    """p / (1 - p): lambda / mu."""
    return p / (1.0 - p)


def load_sessions(sessions: str | DiurnalSpec | None, n_clients: int, seed: int,
                  base_dir: Path | None) -> Sessions | None:
    """The scenario's sessions (``system.clients.sessions``), or None without.

    Raises:
        InputError: a missing or malformed session CSV (`read_sessions`).
    """
    if sessions is None:
        return None
    if isinstance(sessions, DiurnalSpec):
        return generate_diurnal(sessions, n_clients, seed)
    return read_sessions(sessions_path(sessions, base_dir), n_clients)


# --------------------------------------------------------------------------- flows cut by a departure


def stop_flows(schedule: FluidSchedule, stop_s: np.ndarray,
               reschedule: Callable[[np.ndarray], FluidSchedule]) -> tuple[FluidSchedule, np.ndarray]:
    """Stop each flow of ``schedule`` still running at ``stop_s[i]`` (its
    client went offline) there, exactly: departures are taken in time order;
    flow i's size becomes what it had sent at ``stop_s[i]`` (the schedules
    agree up to then) and ``reschedule(sizes)`` recomputes the rest, so the
    capacity it frees goes to the others at once (max-min fairness). One
    reschedule per stopped flow.

    Returns:
        The schedule with the stopped flows ending at their stop times, and a
        boolean array: which flows were stopped.
    """
    stop_s = np.asarray(stop_s, dtype=float)
    stopped = np.zeros(stop_s.size, dtype=bool)
    size = schedule.size_bytes.copy()
    for i in np.argsort(stop_s, kind="stable"):
        t = float(stop_s[i])
        if not (t < schedule.end_s[i] and t <= schedule.until_s):
            continue  # done before, or the schedule's own cut (the deadline) comes first
        size[i] = schedule.sent_bytes_at(t)[i]
        stopped[i] = True
        schedule = reschedule(size.copy())
    return schedule, stopped


def check_sessions(sessions: str | DiurnalSpec | None, n_clients: int, base_dir: Path | None) -> None:
    """Read a session CSV once before any stage runs, so that a bad file ends
    the run at once (exit 2) rather than after pre-training.

    Raises:
        InputError: as `read_sessions`.
    """
    if isinstance(sessions, str):
        read_sessions(sessions_path(sessions, base_dir), n_clients)
