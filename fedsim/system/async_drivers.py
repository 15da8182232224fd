"""How a client update of the asynchronous schedule unfolds: two drivers of `asynchronous.Protocol`.

* `ClosedForm`: links that are never shared at a bottleneck (no cells, no
  dynamics, and the ``concurrency`` fastest client links together fit the
  server's link in each direction, e.g. an unlimited server link, the
  paper's setting). Every transfer then runs at its client's cap, so an
  update's whole life is known when it starts (download ``size / downlink +
  rtt/2``, compute, ``rtt/2 + size / uplink``, and the earliest drop) and it
  costs one heap event: this is the path that reaches 50,000+ updates/s.
* `Events`: otherwise. Downloads and uploads are flows of
  `fedsim.system.async_flows.PathFlows` (max-min fair over client link, cell
  and server link, the client links from the same series as synchronous
  rounds), and every phase is an event: the model arrives (flow end +
  rtt/2), the computation ends, the upload reaches the ingress (rtt/2
  later), a dropout, a session end, the deadline. A test holds the two to the
  same schedule where both apply.
* `CompiledEvents`: `Events` with its loop compiled
  (`fedsim.system.async_loop`): the phases, flows and drops run in one
  compiled call until the server must act (an update ended, a step or retry)
  or a trace's link series must be read (AR(1) links are read in the loop,
  `fedsim.system.async_links`); where the selection needs only the idle
  list (every client available, no sessions) and the links are constant or
  AR(1), the server's moves run in the loop too (`fedsim.system.
  async_server`), otherwise Python's `Protocol` makes them. The same
  schedule as `Events`, float for float (tests/test_async_flows_jit.py); it
  is what `simulate_async` uses, `Events` the readable reference.

Drop rules are the synchronous round's (docs/network-model.md): a dropout
quits at a drawn moment of the computation; a client whose session ends
before it has sent stops there (a download stops on the egress), one whose
session ends while sending stops on the ingress rtt/2 later; the deadline
(``rounds.deadline`` after the update's start) cuts what is running; an
update arriving exactly at the deadline counts.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fedsim.system import async_layout as lay
from fedsim.system import async_loop as loop
from fedsim.system import async_server as server
from fedsim.system.async_flows import PathFlows, ReferencePathFlows
from fedsim.system.async_jit import CAP, CHANGE, END
from fedsim.system.async_links import AR1Table
from fedsim.system.async_record import DEADLINE, DROPOUT, OFFLINE, OK, Uniforms
from fedsim.system.asynchronous import Protocol
from fedsim.system.cells import ConstantSeries, PathLinks
from fedsim.system.profiles import ClientProfiles
from fedsim.system.spec import SystemConfig

__all__ = ["ClosedForm", "CompiledEvents", "Events", "needs_events"]

_BITS = 8.0
FINISH, HAS_MODEL, COMPUTE_END, UP_FLOW, QUIT, GONE, GONE_UP, CUT = range(8)


def needs_events(system: SystemConfig, profiles: ClientProfiles, concurrency: int) -> bool:
    """True unless every transfer surely runs at its client's cap (module docstring)."""
    if system.cells or system.clients.dynamics is not None:
        return True
    for caps, capacity in ((profiles.downlink_bps, system.server.downlink),
                           (profiles.uplink_bps, system.server.uplink)):
        if math.isfinite(capacity) and np.sort(caps)[::-1][:concurrency].sum() > capacity:
            return True
    return False


def _shared_links(paths: PathLinks, n_clients: int) -> np.ndarray:
    """Per client, the shared links of its path: the server's (0), its cell's (1 + c; -1: none)."""
    return np.stack([np.zeros(n_clients, dtype=np.int64), np.where(paths.cell_of >= 0, paths.cell_of + 1, -1)],
                    axis=1)


class _Driver:
    has_flows = False  # True: flows whose ends the driver reports (next_time, flow_step)
    owns_loop = False  # True: the driver runs the event loop itself (run_loop)

    def __init__(self, protocol: Protocol) -> None:
        plan = protocol.plan
        self.protocol, self.rec = protocol, protocol.rec
        self.half_rtt = plan.half_rtt_s.tolist()
        self.compute = plan.compute_s.tolist()
        self.deadline = math.inf if plan.deadline_s is None else float(plan.deadline_s)
        self.dropout = float(plan.dropout)
        self.sessions = plan.sessions
        self.draws = Uniforms(plan.seed, "dropout")  # update u: 2u decides, 2u + 1 the moment
        self.up_size = float(protocol.payload.up_bytes)

    def quit_after(self, u: int, k: int) -> float:
        """Seconds into its computation at which update u's client quits (inf: never)."""
        if self.dropout > 0 and self.draws.at(2 * u) < self.dropout:
            return self.draws.at(2 * u + 1) * self.compute[k]
        return math.inf

    def offline_at(self, k: int, t_s: float) -> float:
        if self.sessions is None:
            return math.inf
        return float(self.sessions.session_end(t_s, np.array([k]))[0])

    def next_time(self) -> float:
        return math.inf

    def flow_step(self, t_s: float) -> None:
        raise AssertionError("no flows")


class ClosedForm(_Driver):
    """Uncontended static links: an update's phases in closed form, one event."""

    def __init__(self, protocol: Protocol) -> None:
        super().__init__(protocol)
        profiles = protocol.plan.profiles
        self.down_bps = profiles.downlink_bps.tolist()
        self.up_s = (self.up_size * _BITS / profiles.uplink_bps).tolist()
        self.reason: list[int] = []

    def launch(self, u: int, t_s: float) -> None:
        rec = self.rec
        k = rec.client[u]
        h = self.half_rtt[k]
        rec.flow_down_end[u] = flow_end = t_s + rec.down_size[u] * _BITS / self.down_bps[k]
        rec.has_model[u] = has = flow_end + h
        rec.compute_end[u] = cend = has + self.compute[k]
        rec.flow_up_start[u] = up_start = cend + h
        stop, reason = up_start + self.up_s[k], OK
        if self.dropout > 0:
            quit_s = self.quit_after(u, k)
            if quit_s < math.inf:
                stop, reason = has + quit_s, DROPOUT
        if self.sessions is not None:
            off = self.offline_at(k, t_s)
            gone = off if off < cend else off + h  # sending: the flow stops on the ingress rtt/2 later
            if gone < stop:
                stop, reason = gone, OFFLINE
        if t_s + self.deadline < stop:
            stop, reason = t_s + self.deadline, DEADLINE
        self.reason.append(reason)
        self.protocol.push(stop, FINISH, u)

    def handle(self, kind: int, u: int, t_s: float) -> None:
        self.protocol.finish(u, t_s, self.reason[u])

    def cut_all(self, t_s: float) -> None:
        """The end: running updates stop at ``t_s``; bytes carried by each (fluid, at the cap)."""
        rec = self.rec
        stop = np.array(rec.stop)
        stop[stop == math.inf] = t_s  # still running (reason END from Record.add)
        rec.stop = stop  # the record's columns may end as arrays (`asynchronous._schedule` takes both)
        k = np.array(rec.client, dtype=np.int64)
        profiles = self.protocol.plan.profiles
        start, size = np.array(rec.start), np.array(rec.down_size)
        with np.errstate(invalid="ignore"):
            down = np.clip(profiles.downlink_bps[k] / _BITS * (stop - start), 0.0, size)
            up_start = np.array(rec.flow_up_start)
            up = np.clip(profiles.uplink_bps[k] / _BITS * (stop - up_start), 0.0, self.up_size)
        rec.down_bytes = np.where(np.array(rec.flow_down_end) <= stop, size, np.nan_to_num(down))
        arrived = np.array(rec.arrive) <= stop
        rec.up_bytes = np.where(arrived, self.up_size, np.where(up_start < stop, np.nan_to_num(up), 0.0))


class Events(_Driver):
    """Shared or time-varying links: flows in `PathFlows`, every phase an event."""

    has_flows = True

    def __init__(self, protocol: Protocol, system: SystemConfig, seed: int, base_dir: Path | None,
                 flows: type[ReferencePathFlows] = PathFlows) -> None:
        super().__init__(protocol)
        plan = protocol.plan
        paths = PathLinks(system, plan.profiles, seed, base_dir)
        shared = _shared_links(paths, plan.n_clients)
        slots = protocol.cfg.concurrency
        self.down = flows(slots, paths.capacity_bps["downlink"], shared, paths.series["downlink"])
        self.up = flows(slots, paths.capacity_bps["uplink"], shared, paths.series["uplink"])
        self.slot_update = [-1] * slots
        self.finished: list[bool] = []
        self.quit_s: list[float] = []

    def next_time(self) -> float:
        return min(self.down.next_s, self.up.next_s)

    def flow_step(self, t_s: float) -> None:
        rec, push = self.rec, self.protocol.push
        if self.down.next_s <= t_s:
            for u in sorted(self.slot_update[slot] for slot in self.down.step(t_s)):  # ties: by update id
                rec.flow_down_end[u] = t_s
                rec.down_bytes[u] = rec.down_size[u]
                push(t_s + self.half_rtt[rec.client[u]], HAS_MODEL, u)
        if self.up.next_s <= t_s:
            for u in sorted(self.slot_update[slot] for slot in self.up.step(t_s)):
                rec.up_bytes[u] = self.up_size
                self._end(u, t_s, OK)

    def launch(self, u: int, t_s: float) -> None:
        rec, push = self.rec, self.protocol.push
        k, slot = rec.client[u], rec.slot[u]
        self.slot_update[slot] = u
        self.finished.append(False)
        self.quit_s.append(self.quit_after(u, k))
        if self.down.start(slot, k, rec.down_size[u], t_s):
            rec.flow_down_end[u] = t_s
            rec.down_bytes[u] = 0.0
            push(t_s + self.half_rtt[k], HAS_MODEL, u)
        off = self.offline_at(k, t_s)
        if off < math.inf:
            push(off, GONE, u)
        if self.deadline < math.inf:
            push(t_s + self.deadline, CUT, u)

    def handle(self, kind: int, u: int, t_s: float) -> None:
        if self.finished[u]:
            return
        rec, push = self.rec, self.protocol.push
        k = rec.client[u]
        if kind == HAS_MODEL:
            rec.has_model[u] = t_s
            if self.quit_s[u] < math.inf:
                push(t_s + self.quit_s[u], QUIT, u)
            push(t_s + self.compute[k], COMPUTE_END, u)
        elif kind == COMPUTE_END:
            rec.compute_end[u] = t_s
            push(t_s + self.half_rtt[k], UP_FLOW, u)
        elif kind == UP_FLOW:
            rec.flow_up_start[u] = t_s
            if self.up.start(rec.slot[u], k, self.up_size, t_s):
                rec.up_bytes[u] = 0.0
                self._end(u, t_s, OK)
        elif kind == QUIT:
            self._cut(u, t_s, DROPOUT)
        elif kind == GONE and rec.compute_end[u] == math.inf:
            self._cut(u, t_s, OFFLINE)
        elif kind == GONE:
            push(t_s + self.half_rtt[k], GONE_UP, u)
        elif kind == GONE_UP:
            self._cut(u, t_s, OFFLINE)
        elif kind == CUT:
            self._cut(u, t_s, DEADLINE)

    def _cut(self, u: int, t_s: float, reason: int) -> None:
        rec, slot = self.rec, self.rec.slot[u]
        if math.isnan(rec.down_bytes[u]):
            rec.down_bytes[u] = self.down.stop(slot, t_s)
        if math.isnan(rec.up_bytes[u]):
            rec.up_bytes[u] = self.up.stop(slot, t_s) if rec.flow_up_start[u] <= t_s else 0.0
        self._end(u, t_s, reason)

    def _end(self, u: int, t_s: float, reason: int) -> None:
        self.finished[u] = True
        self.protocol.finish(u, t_s, reason)

    def cut_all(self, t_s: float) -> None:
        """The end: running updates stop at ``t_s`` (reason ``end``, set by `Record.add`)."""
        rec = self.rec
        for u, done in enumerate(self.finished):
            if not done:
                slot = rec.slot[u]
                if math.isnan(rec.down_bytes[u]):
                    rec.down_bytes[u] = self.down.stop(slot, t_s)
                if math.isnan(rec.up_bytes[u]):
                    rec.up_bytes[u] = self.up.stop(slot, t_s) if rec.flow_up_start[u] <= t_s else 0.0
                rec.stop[u] = t_s


class CompiledEvents(_Driver):
    """`Events` with the loop in `fedsim.system.async_loop` (module docstring).

    The protocol's own events (steps, retries) go on the compiled heap too
    (``protocol.push`` is this driver's `push`), so ties keep one order.
    """

    owns_loop = True
    server_in_loop = True  # False: always the Python server (tests compare the two)

    def __init__(self, protocol: Protocol, system: SystemConfig, seed: int, base_dir: Path | None) -> None:
        super().__init__(protocol)
        plan = protocol.plan
        paths = PathLinks(system, plan.profiles, seed, base_dir)
        self.series = (paths.series["downlink"], paths.series["uplink"])
        self.dynamic = not all(isinstance(series, ConstantSeries) for series in self.series)
        slots = self.slots = protocol.cfg.concurrency
        self.shared_of_client = _shared_links(paths, plan.n_clients)
        self.clients = np.zeros((4, plan.n_clients))
        self.clients[lay.HALF_RTT] = plan.half_rtt_s
        self.clients[lay.COMPUTE] = plan.compute_s
        if not self.dynamic:  # ConstantSeries.segment: (bps[k], inf)
            self.clients[lay.CAP_DOWN] = self.series[0].bps
            self.clients[lay.CAP_UP] = self.series[1].bps
        table = self.dynamic and AR1Table.supports(self.series)
        if table:  # the loop reads base * exp(x_j) (`async_links.segment`)
            self.clients[lay.CAP_DOWN] = self.series[0].base_bps
            self.clients[lay.CAP_UP] = self.series[1].base_bps
        self.cap_down = self.clients[lay.CAP_DOWN].tolist()
        self.flt, self.ints = lay.layout(slots, self.shared_of_client.shape[1], paths.capacity_bps["downlink"].size,
                                          plan.n_clients)
        (self.sc_f, self.out_t, self.state, self.capacity, clients, self.sc_i, self.slot_update, self.fin, self.chg,
         self.out_i, self.active, self.shared, shared_of_client, row_of) = lay.views.py_func(self.flt, self.ints)
        self.table = AR1Table(self.series, row_of) if table else None  # type: ignore[arg-type]
        self.logs = self.table.logs if self.table else np.zeros((2, 1, 1))
        clients[:], shared_of_client[:] = self.clients, self.shared_of_client
        self.capacity[:] = np.stack([paths.capacity_bps["downlink"], paths.capacity_bps["uplink"]])
        self.sc_f[[lay.NEXT0, lay.NEXT1]] = math.inf
        self.sc_f[lay.UP_SIZE] = self.up_size
        self.sc_f[lay.DEADLINE_S] = self.deadline
        self.sc_i[lay.DYNAMIC] = lay.TABLE if table else lay.CALLER if self.dynamic else lay.STATIC
        if self.table:
            self.sc_f[[lay.INTERVAL0, lay.INTERVAL1]] = self.table.intervals_s
        self.state[:, [CHANGE, END]] = math.inf
        self.shared[:] = -1
        self.slot_update[:] = -1
        self.upd_f, self.upd_i = lay.new_updates(256)
        self.heap_t, self.heap_i = loop.new_heap(8 * slots + 64)
        self.n = 0
        self._views()
        protocol.push = self.push  # type: ignore[method-assign]
        # the server in the loop (`async_server`) where the selection needs only the idle list
        self.compiled_server = (self.server_in_loop and protocol.selector.simple
                                and self.sc_i[lay.DYNAMIC] != lay.CALLER)
        self.no_server = (np.zeros(1, dtype=np.int64), np.zeros(1), np.zeros(1), np.zeros(1), np.zeros((1, 5)))

    def room(self) -> None:
        """Room on the heap for what one call can push (`async_loop.GROW`)."""
        if self.sc_i[lay.HEAP_N] + 4 * self.slots + 8 > self.heap_t.size:
            heap_t, heap_i = loop.new_heap(2 * self.heap_t.size)
            heap_t[:self.heap_t.size], heap_i[:, :self.heap_t.size] = self.heap_t, self.heap_i
            self.heap_t, self.heap_i = heap_t, heap_i

    def grow_links(self) -> None:
        """More AR(1) columns for the loop (`async_loop.GROW_LINKS`): grow the
        table, and hand the loop its logs and new width."""
        self.table.grow(int(self.sc_i[lay.NEED_COLS]))  # type: ignore[union-attr]
        self.logs = self.table.logs  # type: ignore[union-attr]
        self.sc_i[lay.N_COLS] = self.table.cols  # type: ignore[union-attr]

    def push(self, t_s: float, kind: int, u: int, prio: int = 0) -> None:
        """`Protocol.push` on the compiled heap."""
        self.room()
        loop.push(self.heap_t, self.heap_i, self.sc_i, t_s, prio, kind, u)

    def _segment(self, direction: int, client: int, t_s: float) -> tuple[float, float]:
        """`PathFlows._segment`: the link's (cap, next change) at ``t_s``."""
        series = self.series[direction]
        cap_bps, next_s = series.segment(client, t_s)
        if next_s <= t_s:  # t_s rounded to just before this change
            cap_bps, next_s = series.segment(client, next_s)
        return cap_bps, next_s

    def launch(self, u: int, t_s: float) -> None:
        """Hand update ``u`` over to the compiled loop (it starts at the next
        `async_loop.run`, at this instant ``t_s``). Writes through memoryviews
        (`_views`): a Python float or int stored per element, about half the
        cost of a numpy row assignment from a tuple."""
        rec = self.rec
        k = rec.client[u]
        if u >= self.upd_f.shape[0]:
            upd_f, upd_i = lay.new_updates(2 * self.upd_f.shape[0])
            upd_f[:u], upd_i[:u] = self.upd_f, self.upd_i
            self.upd_f, self.upd_i = upd_f, upd_i
            self._views()
        size = rec.down_size[u]
        if self.table is not None:  # the loop reads the downlink from the table at the launch
            cap_bps, change_s = math.nan, math.inf
            if self.table.row_of[k] < 0:
                self.table.add_row(k)
                self.logs = self.table.logs
        elif not self.dynamic:
            cap_bps, change_s = self.cap_down[k], math.inf
        elif size > 0:
            cap_bps, change_s = self._segment(0, k, t_s)
        else:
            cap_bps, change_s = 0.0, math.inf
        f, i = self.mv_upd_f, self.mv_upd_i
        f[u, lay.DOWN_SIZE] = size
        f[u, lay.QUIT_S] = self.quit_after(u, k) if self.dropout > 0 else math.inf
        f[u, lay.START_S] = t_s
        f[u, lay.OFFLINE_S] = self.offline_at(k, t_s) if self.sessions is not None else math.inf
        f[u, lay.CAP0] = cap_bps
        f[u, lay.CHANGE0] = change_s
        i[u, lay.CLIENT] = k
        i[u, lay.SLOT] = rec.slot[u]
        self.n = u + 1
        self.mv_sc_i[lay.N_UPD] = u + 1

    def _views(self) -> None:
        """Memoryviews of the per-update columns (renewed when they grow) and
        of the scalars: element access gives and takes Python floats and ints
        (the same float64 values) without numpy's scalar boxing."""
        self.mv_upd_f, self.mv_upd_i = memoryview(self.upd_f), memoryview(self.upd_i)
        self.mv_sc_f, self.mv_sc_i = memoryview(self.sc_f), memoryview(self.sc_i)

    def run_loop(self, protocol: Protocol) -> float:
        """`Protocol.run` for this driver: compiled runs between the server's
        moves; returns the end time (the last step's)."""
        sc_i, mv_sc_f, mv_sc_i = self.sc_i, self.mv_sc_f, self.mv_sc_i
        out_t, out_i = memoryview(self.out_t), memoryview(self.out_i)
        if self.compiled_server:
            return server.run_compiled(self, protocol)
        run, finish, settle = loop.run, protocol.finish, protocol.settle
        t_cur, n_out, instant = lay.T_CUR, lay.N_OUT, lay.INSTANT
        settle(0.0, self)
        t_s = 0.0
        while not protocol.done:
            code = run(self.flt, self.ints, self.upd_f, self.upd_i, self.heap_t, self.heap_i, self.logs,
                       *self.no_server)
            t_s = mv_sc_f[t_cur]
            ended = mv_sc_i[n_out]
            if ended:
                mv_sc_i[n_out] = 0
                for j in range(ended):  # update, its end, its reason
                    finish(out_i[0, j], out_t[j], out_i[1, j])
            if code == instant:
                settle(t_s, self)
            elif code == lay.STEP:
                protocol.step_done(t_s)
            elif code == lay.RETRY:
                protocol.retry_pending = False
                protocol.changed = True
            elif code == lay.SEG_UP:
                u = int(sc_i[lay.ARG_U])
                cap_bps, change_s = self._segment(1, int(self.upd_i[u, lay.CLIENT]), t_s)
                loop.resume_up(cap_bps, change_s, self.flt, self.ints, self.upd_i)
            elif code == lay.CHANGES:
                d = int(sc_i[lay.ARG_D])
                for slot in self.chg[:sc_i[lay.N_CHANGED]].tolist():
                    k = int(self.upd_i[self.slot_update[slot], lay.CLIENT])
                    self.state[d, CAP, slot], self.state[d, CHANGE, slot] = self._segment(d, k, t_s)
                loop.resume_changes(self.flt, self.ints, self.upd_f, self.upd_i, self.heap_t, self.heap_i)
            elif code == lay.GROW:
                self.room()
            elif code == lay.GROW_LINKS:
                self.grow_links()
            else:
                raise ValueError("asynchronous schedule: nothing left to happen before the last step")
        return t_s

    def cut_all(self, t_s: float) -> None:
        """The end: running updates stop at ``t_s``; the compiled columns go to the record."""
        rec, n = self.rec, self.n
        loop.stop_rest(n, t_s, self.flt, self.ints, self.upd_f, self.upd_i)
        if self.compiled_server:  # the whole record is in the compiled columns
            server.to_record(rec, self.upd_f[:n], self.upd_i[:n], t_s)
        else:
            for u in np.flatnonzero(self.upd_i[:n, lay.FINISHED] == 0).tolist():
                rec.stop[u] = t_s
        for name, row in (("flow_down_end", lay.FLOW_DOWN_END), ("has_model", lay.HAS_MODEL_S),
                          ("compute_end", lay.COMPUTE_END_S), ("flow_up_start", lay.FLOW_UP_START),
                          ("down_bytes", lay.DOWN_BYTES), ("up_bytes", lay.UP_BYTES)):
            setattr(rec, name, self.upd_f[:n, row])  # an array: `asynchronous._schedule` takes it as is
