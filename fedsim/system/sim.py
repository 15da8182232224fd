"""Synchronous FL rounds on a SimPy clock: who is aggregated, when, at what cost.

Actors: a ``Server`` owns its two ``SharedLink``s (egress for downloads,
ingress for uploads) and aggregates; ``synchronous_round`` is the generator
process of one round; ``federated_training`` runs the rounds back to back.

One round r (details and a worked example: docs/network-model.md):

1. availability: client k is available with probability ``availability[k]``
   (stream ``rng(seed, "round", r, "availability")``, one draw per client)
   and, with sessions (``system.clients.sessions``), only while online at the
   round's start; a selected client whose session ends before it has sent its
   update quits then (reason ``offline``; `fedsim.system.availability`);
2. selection: m = the wanted participants; the server selects
   ceil(m (1 + overcommit)) available clients uniformly (stream ``"selection"``;
   all available ones if fewer);
3. download: every selected client's download starts at the round start on
   the server's egress (max-min fair, capped by the client's downlink); the
   client holds the model rtt/2 after its last byte left the link;
4. compute: ``compute_s[k] = t_comp_full * work_fraction * work_k / speed_k``
   with ``work_k = local_epochs * samples_k / (5 * reference_samples)``
   (`fedsim.system.payload.work_units`: t_comp_full times the paper's 5 epochs
   over ``reference_samples``), or with a device trace
   ``samples_k * local_epochs * s_per_sample_k * work_fraction``
   (`fedsim.system.devices`); a client that drops out (probability
   ``dropout``, stream ``"dropout"``) quits at a uniformly drawn moment of its
   computation (same stream) and the server notices at once;
5. upload: the client starts sending when the computation ends; its bytes
   reach the server's ingress, the last hop, rtt/2 later, so the flow holds the
   ingress from then on, and the update is at the server when its last byte
   has crossed the ingress;
6. collection ends at the earliest of: the deadline; the moment the m-th update
   arrives (over-commit: the first m are kept); the moment every selected
   client has delivered or quit. Whatever is still running then is cut: its
   bytes and compute seconds up to that moment count as spent;
7. aggregation: ``server.aggregation`` seconds; the next round starts.

The timeline has one row per client and round (K rows per round): selected
clients with their phase times, and unselected ones with ``selected=False``
(``drop_reason="unavailable"`` if they were not available, else "").
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

from fedsim.progress import Progress
from fedsim.store import atomic_write
from fedsim.store.artifacts import SYSTEM_FILES
from fedsim.system.availability import load_sessions, stop_flows
from fedsim.system.cells import PathLinks
from fedsim.system.devices import apply_device_trace
from fedsim.system.frames import SIM_ROUND_COLUMNS, TIMELINE_COLUMNS
from fedsim.system.links import SharedLink, fluid_schedule
from fedsim.system.payload import REFERENCE_EPOCHS, Payload
from fedsim.system.profiles import ClientProfiles, draw_profiles
from fedsim.system.round_plan import DROP_REASONS, Recorder, RoundPlan
from fedsim.system.spec import ServerSpec, SystemConfig
from fedsim.system.timeline_io import CHUNK_ROWS, TimelineWriter, read_timeline

__all__ = [
    "DROP_REASONS",
    "SIM_ROUND_COLUMNS",
    "TIMELINE_COLUMNS",
    "Server",
    "SystemResult",
    "federated_training",
    "load_result",
    "save_result",
    "simulate",
    "synchronous_round",
]

_KEPT, _UNAVAILABLE, _DROPOUT, _DEADLINE, _OVERCOMMIT, _OFFLINE = range(6)


@dataclass(frozen=True)
class SystemResult:
    """What the system stage hands on.

    Attributes:
        timeline: one row per (round, client), columns ``TIMELINE_COLUMNS``:
            round (1-based), client_id, selected, kept (its update is
            aggregated), drop_reason ("" | "unavailable" | "dropout" |
            "deadline" | "overcommit"), the phase times in simulated seconds
            (NaN where a phase was not reached; a phase cut short ends at the
            cut), down_bytes / up_bytes actually transferred, compute_s
            actually spent.
        rounds: one row per round, columns ``SIM_ROUND_COLUMNS``: start_s, end_s,
            duration_s; available, selected and participants (kept) counts;
            down_bytes, up_bytes and round_bytes (= down + up through the
            server's link, dropped clients' partial traffic included);
            mean/max_compute_s over the participants; mean_download_s,
            mean_upload_s, mean_wait_s over the participants, where a
            participant's wait is from its update's arrival to the round's end
            (others + aggregation), so download + compute + upload + wait is
            the round's duration for every participant, and for their means.
            A round without participants has 0 for these means and
            mean_wait_s = duration_s.
        participation: per round, the sorted client ids whose updates are
            aggregated (what the training stage consumes).
        profiles: the clients' profiles used.
        timeline_file: where the timeline was written in chunks
            (``simulate(..., timeline_path=...)``); then ``timeline`` reads
            it on each access and `read_timeline` reads some rounds only.
    """

    timeline_frame: pd.DataFrame | None
    rounds: pd.DataFrame
    participation: list[np.ndarray]
    profiles: ClientProfiles
    timeline_file: Path | None = None

    @property
    def timeline(self) -> pd.DataFrame:
        """The whole timeline (read from ``timeline_file`` when it is on disk)."""
        if self.timeline_frame is not None:
            return self.timeline_frame
        return read_timeline(self.timeline_file)

    def read_timeline(self, rounds: Sequence[int] | None = None,
                      columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The timeline's rows of ``rounds`` (all: None) and ``columns``."""
        if self.timeline_frame is None:
            return read_timeline(self.timeline_file, rounds, columns)
        frame = self.timeline_frame
        if rounds is not None:
            frame = frame[frame["round"].isin(list(rounds))]
        return frame if columns is None else frame[list(columns)]

    def round_costs(self) -> pd.DataFrame:
        """The system's columns of rounds.csv, one row per round: round,
        participants, round_bytes, round_compute_s (= mean_compute_s, the
        participants' mean) and round_wallclock_s (= duration_s); join them
        with a method's accuracy per round for ``fedsim.metrics.rounds_table``."""
        return pd.DataFrame({
            "round": self.rounds["round"],
            "participants": self.rounds["participants"],
            "round_bytes": self.rounds["round_bytes"],
            "round_compute_s": self.rounds["mean_compute_s"],
            "round_wallclock_s": self.rounds["duration_s"],
        })


class Server:
    """The FL server: owns its shared links and aggregates the kept updates.

    Attributes:
        egress: the server -> clients direction (``system.server.downlink``),
            shared by every client's download.
        ingress: the clients -> server direction (``system.server.uplink``),
            shared by every client's upload.
        aggregation_s: seconds to aggregate a round's updates.
        rounds_done: rounds aggregated so far.
    """

    def __init__(self, env: simpy.Environment, spec: ServerSpec) -> None:
        self.env = env
        self.egress = SharedLink(env, spec.downlink, "egress")
        self.ingress = SharedLink(env, spec.uplink, "ingress")
        self.aggregation_s = float(spec.aggregation)
        self.rounds_done = 0

    def aggregate(self) -> Iterator[simpy.Event]:
        """Process: the server averages the round's updates."""
        yield self.env.timeout(self.aggregation_s)
        self.rounds_done += 1


def synchronous_round(
    env: simpy.Environment, server: Server, plan: RoundPlan, round_num: int, record: Recorder
) -> Iterator[simpy.Event]:
    """Process: one synchronous round (module docstring, steps 1-7).

    All flows' start times follow from the round's start and the download
    schedule, so each link computes its whole max-min schedule once
    (``SharedLink.transfer_all``); the process then sleeps until the
    collection ends and lets the server aggregate. Times inside the round are
    offsets from its start (so a round's duration carries no rounding from the
    absolute clock); the timeline stores absolute times.
    """
    t0 = env.now
    available = plan.available(round_num, t0)
    selected = plan.select(round_num, available)
    n = selected.size
    base = record.base(round_num)
    cols = record.cols
    if not plan.all_available or plan.sessions is not None:
        cols["drop_reason"][base + np.flatnonzero(~available)] = _UNAVAILABLE
    deadline = plan.deadline_s if plan.deadline_s is not None else math.inf

    if n == 0:
        collect_end = 0.0
        kept = np.zeros(0, dtype=bool)
        down_sent = up_sent = compute_spent = np.zeros(0)
        download_s = upload_s = upload_end = np.zeros(0)
    else:
        half_rtt = plan.half_rtt_s[selected]
        compute_s = plan.compute_s[selected]

        # download: every flow starts now on the server's egress
        down_size = float(plan.payload.down_bytes_in_round(round_num))
        down = (server.egress.transfer_all if plan.paths is None else plan.paths.bind("downlink", t0, selected))(
            np.zeros(n), np.full(n, down_size), plan.profiles.downlink_bps[selected], until_s=deadline
        )
        off = plan.offline_at(t0, selected)  # a client going offline stops its flows there
        stopped = np.zeros(n, dtype=bool)
        if plan.sessions is not None:
            again = (plan.paths.bind("downlink", t0, selected) if plan.paths is not None else
                     lambda s, z, c, until_s: fluid_schedule(s, z, c, server.egress.capacity_bps, until_s=until_s))
            down, stopped = stop_flows(down, off, lambda size: again(
                np.zeros(n), size, plan.profiles.downlink_bps[selected], until_s=deadline))
        has_model = down.end_s + half_rtt  # inf if the download did not finish
        has_model[stopped | (off < has_model)] = math.inf  # offline before holding the model

        # compute, and who quits during it
        quits, moment = plan.dropouts(round_num, selected)
        compute_end = has_model + compute_s
        drop_at = np.where(quits, has_model + moment * compute_s, math.inf)
        offline = off < np.minimum(compute_end, drop_at)  # gone before computing ended: quits
        quits = quits | offline
        drop_at = np.where(offline, off, drop_at)

        # upload: the client sends from the end of its computation; the ingress is
        # the flow's last hop, which its bytes reach rtt/2 later (the mirror of a
        # download, whose first hop is the egress)
        uploads = ~quits & (compute_end < deadline)
        up_size = float(plan.payload.up_bytes_in_round(round_num))
        up = (server.ingress.transfer_all if plan.paths is None
              else plan.paths.bind("uplink", t0, selected[uploads]))(
            compute_end[uploads] + half_rtt[uploads], np.full(int(uploads.sum()), up_size),
            plan.profiles.uplink_bps[selected][uploads], until_s=deadline,
        )
        offline_up = np.zeros(n, dtype=bool)  # offline while sending: stops at the ingress rtt/2 later
        if plan.sessions is not None and uploads.any():
            again = (plan.paths.bind("uplink", t0, selected[uploads]) if plan.paths is not None else
                     lambda s, z, c, until_s: fluid_schedule(s, z, c, server.ingress.capacity_bps, until_s=until_s))
            up, offline_up[uploads] = stop_flows(up, off[uploads] + half_rtt[uploads], lambda size: again(
                compute_end[uploads] + half_rtt[uploads], size, plan.profiles.uplink_bps[selected][uploads],
                until_s=deadline))
        arrival_raw = np.full(n, math.inf)  # the update is at the server (cut: the flow's end)
        arrival_raw[uploads] = up.end_s
        arrival = np.where((arrival_raw <= deadline) & ~offline_up, arrival_raw, math.inf)  # in time

        # collection ends: deadline, the m-th arrival, or nobody left to wait for
        m_keep = min(plan.kept_target, n)
        order = np.argsort(arrival, kind="stable")  # ties: lower client id first
        mth_arrival = arrival[order[m_keep - 1]]
        everyone_done = np.where(quits, drop_at, np.where(offline_up, arrival_raw, arrival)).max()
        collect_end = float(min(deadline, mth_arrival, everyone_done))
        cut_code = _OVERCOMMIT if (n > m_keep and mth_arrival == collect_end) else _DEADLINE

        kept = np.zeros(n, dtype=bool)
        first = order[:m_keep]
        kept[first[arrival[first] <= collect_end]] = True
        reason = np.where(kept, _KEPT, np.where(quits & (drop_at <= collect_end), _DROPOUT, cut_code))
        reason[(offline & (drop_at <= collect_end)) | (offline_up & (arrival_raw <= collect_end))] = _OFFLINE

        # what each client did up to the cut (kept clients finished everything)
        download_s = np.minimum(np.minimum(has_model, off), collect_end)
        computing = has_model <= collect_end
        compute_stop = np.minimum(np.where(quits, drop_at, compute_end), collect_end)
        uploading = uploads & (compute_end <= collect_end)
        upload_end = np.where(uploading, np.minimum(arrival_raw, collect_end), np.nan)
        upload_s = upload_end - compute_end
        down_sent = down.sent_bytes_at(collect_end)
        up_sent = np.zeros(n)
        up_sent[uploads] = up.sent_bytes_at(collect_end)
        compute_spent = np.where(computing, compute_stop - has_model, 0.0)

        rows = base + selected
        cols["selected"][rows] = True
        cols["kept"][rows] = kept
        cols["drop_reason"][rows] = reason
        cols["download_start_s"][rows] = t0
        cols["download_end_s"][rows] = t0 + download_s
        cols["compute_start_s"][rows] = np.where(computing, t0 + has_model, np.nan)
        cols["compute_end_s"][rows] = np.where(computing, t0 + compute_stop, np.nan)
        cols["upload_start_s"][rows] = np.where(uploading, t0 + compute_end, np.nan)
        cols["upload_end_s"][rows] = t0 + upload_end
        cols["down_bytes"][rows] = down_sent
        cols["up_bytes"][rows] = up_sent
        cols["compute_s"][rows] = compute_spent

        server.egress.release(min(collect_end, down.end_s.max()), down_sent.sum())
        server.ingress.release(min(collect_end, up.end_s.max(initial=0.0)), up_sent.sum())

    yield env.timeout(collect_end)
    yield env.process(server.aggregate())

    duration = collect_end + server.aggregation_s
    participants = int(kept.sum())
    if participants:
        spent = compute_spent[kept]
        breakdown = (
            float(spent.mean()),
            float(spent.max()),
            float(download_s[kept].mean()),
            float(upload_s[kept].mean()),
            float((duration - upload_end[kept]).mean()),
        )
    else:
        breakdown = (0.0, 0.0, 0.0, 0.0, duration)
    down_total = float(down_sent.sum())
    up_total = float(up_sent.sum())
    record.round_rows.append(
        (round_num, t0, env.now, duration, int(available.sum()), n, participants,
         down_total, up_total, down_total + up_total, *breakdown)
    )
    record.participation.append(selected[kept].astype(np.int64))
    record.round_done(round_num)


def federated_training(
    env: simpy.Environment, server: Server, plan: RoundPlan, rounds: int, record: Recorder,
    progress: bool = False,
) -> Iterator[simpy.Event]:
    """Process: ``rounds`` synchronous rounds back to back."""
    with Progress("simulation", {"rounds": rounds}, enabled=progress) as bar:
        for round_num in range(1, rounds + 1):
            yield env.process(synchronous_round(env, server, plan, round_num, record))
            bar.advance("rounds", 1, f"system round {round_num}/{rounds}")


def simulate(
    system: SystemConfig,
    *,
    client_samples: np.ndarray,
    payload: Payload,
    work_fraction: float,
    rounds: int,
    seed: int,
    local_epochs: int = REFERENCE_EPOCHS,
    base_dir: Path | None = None,
    progress: bool = False,
    given_participants: Sequence[np.ndarray] | None = None,
    timeline_path: str | Path | None = None,
) -> SystemResult:
    """Simulate ``rounds`` synchronous FL rounds of K = len(client_samples) clients.

    A pure function of its arguments (the trace file, if any, is read; nothing
    is written unless ``timeline_path`` is given).

    Args:
        system: the scenario's ``system`` section.
        client_samples: training samples per client (client k = element k).
        payload: bytes per message (``payload_bytes``).
        work_fraction: the share of the full model's training work
            (``work_fraction``; P_R in the paper).
        rounds: number of rounds (>= 1).
        seed: the scenario seed (streams "profile", "round").
        local_epochs: local epochs per round (``fl.local_epochs``); compute
            time scales with it against the reference's 5
            (`fedsim.system.payload.work_units`).
        base_dir: where relative trace paths are resolved (the scenario's
            directory).
        progress: show a progress bar.
        given_participants: round r selects exactly ``given_participants[r - 1]``
            (client ids): every client available, none dropping out, all kept
            unless the deadline or a session ending cuts them (`fedsim replay`).
        timeline_path: write the timeline there as it is simulated, in row
            groups of about `fedsim.system.timeline_io.CHUNK_ROWS` rows (whole
            rounds), instead of holding it whole (large populations); the
            result's ``timeline_file`` names it.

    Raises:
        ValueError: bad arguments (no clients, negative samples or work, rounds < 1,
            local_epochs < 1).
        fedsim.errors.InputError: a missing or malformed trace file.
    """
    samples = np.asarray(client_samples, dtype=float).reshape(-1)
    if samples.size < 1 or not (samples >= 0).all():
        raise ValueError("client_samples must hold at least one count, all >= 0")
    if not work_fraction >= 0 or math.isinf(work_fraction):
        raise ValueError(f"work_fraction must be finite and >= 0, got {work_fraction!r}")
    if int(rounds) != rounds or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if given_participants is not None and len(given_participants) != rounds:
        raise ValueError(f"given_participants holds {len(given_participants)} rounds, not {rounds}")
    profiles = apply_device_trace(draw_profiles(system.clients, samples.size, seed, base_dir), system, base_dir)
    sessions = load_sessions(system.clients.sessions, samples.size, seed, base_dir)
    plan = RoundPlan(system, profiles, samples, payload, float(work_fraction), seed,
                     int(local_epochs), sessions, given_participants)
    if system.clients.dynamics is not None or system.cells:
        plan.paths = PathLinks(system, profiles, seed, base_dir)
    if timeline_path is None:
        record = Recorder(samples.size, int(rounds))
    else:
        sink = TimelineWriter(timeline_path)
        record = Recorder(samples.size, int(rounds), sink, max(1, CHUNK_ROWS // samples.size))
    env = simpy.Environment()
    server = Server(env, system.server)
    env.process(federated_training(env, server, plan, int(rounds), record, progress))
    if timeline_path is None:
        env.run()
        return SystemResult(record.timeline(), record.rounds(), record.participation, profiles)
    try:
        env.run()
        record.close()
    except BaseException:
        sink.abort()
        raise
    return SystemResult(None, record.rounds(), record.participation, profiles, sink.path)


def save_result(result: SystemResult, directory: str | Path) -> None:
    """Write timeline.parquet, rounds.parquet and profiles.parquet
    (`SYSTEM_FILES`) into ``directory`` (each atomically)."""
    directory = Path(directory)
    target = directory / SYSTEM_FILES["timeline"]
    if result.timeline_file is not None:  # written in chunks already: copy the file, not the frame
        if Path(result.timeline_file).resolve() != target.resolve():
            with atomic_write(target) as handle, open(result.timeline_file, "rb") as source:
                shutil.copyfileobj(source, handle)
    else:
        with atomic_write(target) as handle:
            result.timeline.to_parquet(handle, index=False)
    for name, frame in (
        ("rounds", result.rounds),
        ("profiles", result.profiles.to_frame()),
    ):
        with atomic_write(directory / SYSTEM_FILES[name]) as handle:
            frame.to_parquet(handle, index=False)


def load_result(directory: str | Path) -> SystemResult:
    """Read what ``save_result`` wrote; participation is rebuilt from the
    timeline's ``kept`` column."""
    directory = Path(directory)
    timeline = pd.read_parquet(directory / SYSTEM_FILES["timeline"])
    rounds = pd.read_parquet(directory / SYSTEM_FILES["rounds"])
    profiles = ClientProfiles.from_frame(pd.read_parquet(directory / SYSTEM_FILES["profiles"]))
    kept = timeline[timeline["kept"]]
    by_round = dict(iter(kept.groupby("round")["client_id"]))
    participation = [
        np.sort(by_round[r].to_numpy(dtype=np.int64)) if r in by_round else np.zeros(0, np.int64)
        for r in rounds["round"]
    ]
    return SystemResult(timeline, rounds, participation, profiles)
