"""The asynchronous schedule's event loop compiled (numba): everything between two server decisions.

`fedsim.system.async_drivers.Events` runs the phases of every client update
(download flow, rtt/2, computation, rtt/2, upload flow, drops) as Python
events on a heap, with the flows in `fedsim.system.async_flows.PathFlows`.
Only a few moments need the server (`fedsim.system.asynchronous.Protocol`):
an update arrives or drops (its slot frees), a server step completes, the
idle retry fires; and with time-varying client links from a trace, the
series (`fedsim.system.dynamics.LinkSeries`) must be read when a flow starts
or its link changes. AR(1) links (``lte``, ``lognormal_ar1``) are read in the
loop from a table of their log factors (`fedsim.system.async_links`), which
the caller extends when the loop asks. `run` processes all other events
itself and returns at those moments with a code (``INSTANT``: the events of
instant ``T_CUR`` are done and an update ended or the server's state changed,
so the server settles; ``STEP`` and ``RETRY``: the protocol's events;
``SEG_UP`` and ``CHANGES``: segments to read; ``GROW``: the event heap needs
room; ``GROW_LINKS``: the AR(1) table needs columns; ``EMPTY``: nothing
left). `fedsim.system.async_drivers.CompiledEvents` is the Python side.

The rules are `Events`' rules, step for step (tests/test_async_flows_jit.py
holds the two to the same schedule, exactly, on random systems with cells,
dynamics, dropout, deadlines and sessions): the heap orders events by
(time, priority, sequence number), the sequence numbers shared with the
protocol's events; at one instant the flows are stepped (downloads, then
uploads) before heap events, a flow step's finished updates in update order.
The server's launches (in its settle) are handed over and started at the
next `run`'s entry, at the same instant and in the same order: only the
protocol's own events (priority 1) can be pushed in between, and they never
tie with the updates' events (priority 0) on the sequence number.

With the compiled server (`fedsim.system.async_server`; every client
available, no sessions, constant or AR(1) links) the moments that need the
server are handled inside `run` too, which then returns only to have an
array grown or refilled and when the last step is done (``DONE``).

State: `fedsim.system.async_layout` (the names of the codes, kinds, columns
and scalars, the packed fixed-size state); the event heap:
`fedsim.system.async_heap`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from fedsim.system import async_server as server
from fedsim.system.async_heap import HEAP_N, SEQ, new_heap, push
from fedsim.system.async_heap import pop as _pop
from fedsim.system.async_jit import CAP, CHANGE, SENT, SIZE, advance, reallocate, step_due
from fedsim.system.async_layout import (
    ARG_D,
    ARG_U,
    CALLER,
    CAP0,
    CAP_DOWN,
    CAP_UP,
    CHANGE0,
    CHANGES,
    CLIENT,
    COMPUTE,
    COMPUTE_END,
    COMPUTE_END_S,
    CUT,
    DEADLINE,
    DEADLINE_S,
    DONE,
    DOWN_BYTES,
    DOWN_SIZE,
    DROPOUT,
    DYNAMIC,
    EMPTY,
    FINISHED,
    FLOW_DOWN_END,
    FLOW_UP_START,
    GONE,
    GONE_UP,
    GROW,
    GROW_LINKS,
    HALF_RTT,
    HAS_MODEL,
    HAS_MODEL_S,
    INSTANT,
    INTERVAL0,
    INTERVAL1,
    LAUNCHED,
    N_CHANGED,
    N_COLS,
    N_DONE,
    N_OUT,
    N_UPD,
    NEED_COLS,
    NEED_ROW,
    NEXT0,
    NEXT1,
    NOW0,
    OFFLINE,
    OFFLINE_S,
    OK,
    PENDING,
    QUIT,
    QUIT_S,
    RETRY,
    RETRY_EVENT,
    SC_I,
    SEG_UP,
    SERVER,
    SLOT,
    START_S,
    STEP,
    STEP_DONE,
    T_CUR,
    TABLE,
    UP_BYTES,
    UP_FLOW,
    UP_SIZE,
    views,
)
from fedsim.system.async_links import columns_for, segment

__all__ = ["CHANGES", "GROW_LINKS", "HEAP_N", "SC_I", "SEG_UP", "SEQ", "new_heap", "push", "resume_changes",
           "resume_up", "run", "stop_rest"]

_DONE_RTOL = 1e-9  # `async_flows._DONE_RTOL`
_INF = math.inf


@njit(cache=True)
def _realloc(d: int, t_s: float, sc_f, state, active, shared, capacity) -> None:  # pragma: no cover
    sc_f[NOW0 + 2 * d], sc_f[NEXT0 + 2 * d] = reallocate(sc_f[NOW0 + 2 * d], t_s, state[d], active[d], shared,
                                                         capacity[d])


@njit(cache=True)
def _start_flow(d: int, slot: int, client: int, size_bytes: float, cap_bps: float, change_s: float, t_s: float,
                sc_f, state, active, shared, shared_of_client, capacity) -> None:  # pragma: no cover
    """`PathFlows.start` for a flow of > 0 bytes (the segment read by the caller)."""
    shared[slot] = shared_of_client[client]
    state[d, SIZE, slot] = size_bytes
    state[d, SENT, slot] = 0.0
    state[d, CAP, slot] = cap_bps
    state[d, CHANGE, slot] = change_s
    active[d, slot] = True
    _realloc(d, t_s, sc_f, state, active, shared, capacity)


@njit(cache=True)
def _stop_flow(d: int, slot: int, t_s: float, sc_f, state, active, shared, capacity) -> float:  # pragma: no cover
    """`PathFlows.stop`: the bytes the flow in ``slot`` had sent by ``t_s``."""
    if active[d, slot]:
        active[d, slot] = False
        _realloc(d, t_s, sc_f, state, active, shared, capacity)
    else:
        sc_f[NOW0 + 2 * d] = advance(sc_f[NOW0 + 2 * d], t_s, state[d])
    return min(state[d, SENT, slot], state[d, SIZE, slot])


@njit(cache=True)
def _end(u: int, t_s: float, reason: int, sc_i, upd_i, out_t, out_i) -> None:  # pragma: no cover
    upd_i[u, FINISHED] = 1
    n = sc_i[N_OUT]
    out_t[n] = t_s
    out_i[0, n], out_i[1, n] = u, reason
    sc_i[N_OUT] = n + 1
    sc_i[PENDING] = 1


@njit(cache=True)
def _cut(u: int, t_s: float, reason: int, sc_f, sc_i, state, active, shared, capacity, upd_f, upd_i,
         out_t, out_i) -> None:  # pragma: no cover
    _stop_flows_of(u, t_s, sc_f, state, active, shared, capacity, upd_f, upd_i)
    _end(u, t_s, reason, sc_i, upd_i, out_t, out_i)


@njit(cache=True)
def _stop_flows_of(u: int, t_s: float, sc_f, state, active, shared, capacity, upd_f, upd_i) -> None:  # pragma: no cover
    """Stop update ``u``'s flows at ``t_s``: the bytes each sent by then (an
    upload not started yet sent none)."""
    slot = upd_i[u, SLOT]
    if math.isnan(upd_f[u, DOWN_BYTES]):
        upd_f[u, DOWN_BYTES] = _stop_flow(0, slot, t_s, sc_f, state, active, shared, capacity)
    if math.isnan(upd_f[u, UP_BYTES]):
        if upd_f[u, FLOW_UP_START] <= t_s:
            upd_f[u, UP_BYTES] = _stop_flow(1, slot, t_s, sc_f, state, active, shared, capacity)
        else:
            upd_f[u, UP_BYTES] = 0.0


@njit(cache=True)
def _resume_changes(sc_f, sc_i, state, active, shared, capacity, clients, upd_f, upd_i, slot_update,
                   heap_t, heap_i, out_t, out_i, fin) -> None:  # pragma: no cover - compiled
    """The rest of a flow step of direction ``sc_i[ARG_D]`` at ``T_CUR`` once
    the changed links' CAP and CHANGE are set: reallocate, then the finished
    updates in update order (downloads: the model arrives rtt/2 later;
    uploads: the update arrives)."""
    d, t_s, n_done = sc_i[ARG_D], sc_f[T_CUR], sc_i[N_DONE]
    _realloc(d, t_s, sc_f, state, active, shared, capacity)
    ids = np.empty(n_done, dtype=np.int64)
    for j in range(n_done):
        ids[j] = slot_update[fin[j]]
    ids.sort()
    for u in ids:
        if d == 0:
            upd_f[u, FLOW_DOWN_END] = t_s
            upd_f[u, DOWN_BYTES] = upd_f[u, DOWN_SIZE]
            push(heap_t, heap_i, sc_i, t_s + clients[HALF_RTT, upd_i[u, CLIENT]], 0, HAS_MODEL, u)
        else:
            upd_f[u, UP_BYTES] = sc_f[UP_SIZE]
            _end(u, t_s, OK, sc_i, upd_i, out_t, out_i)


@njit(cache=True)
def _resume_up(cap_bps: float, change_s: float, sc_f, sc_i, state, active, shared, shared_of_client, capacity,
              upd_i) -> None:  # pragma: no cover - compiled
    """Start the upload of update ``sc_i[ARG_U]`` at ``T_CUR`` on its
    client link's segment (after a ``SEG_UP`` return)."""
    u = sc_i[ARG_U]
    _start_flow(1, upd_i[u, SLOT], upd_i[u, CLIENT], sc_f[UP_SIZE], cap_bps, change_s, sc_f[T_CUR], sc_f, state,
                active, shared, shared_of_client, capacity)


@njit(cache=True)
def _link(d: int, k: int, t_s: float, sc_f, clients, row_of, logs) -> tuple[float, float]:  # pragma: no cover
    """Client ``k``'s link of direction ``d`` at ``t_s`` from the AR(1) table
    (`fedsim.system.async_links.segment`; the caller made sure of its
    columns): (cap in bits/s, next change in s)."""
    return segment(logs[d, row_of[k]], clients[CAP_DOWN + d, k], sc_f[INTERVAL0 + d], t_s)


@njit(cache=True)
def _lacks_columns(t_s: float, sc_f, sc_i) -> bool:  # pragma: no cover - compiled
    """True (and ``sc_i[NEED_COLS]`` set) when the AR(1) table cannot answer at ``t_s``."""
    need = max(columns_for(t_s, sc_f[INTERVAL0]), columns_for(t_s, sc_f[INTERVAL1]))
    if need <= sc_i[N_COLS]:
        return False
    sc_i[NEED_COLS] = need
    return True


@njit(cache=True)
def _launch(u: int, sc_f, sc_i, state, active, shared, shared_of_client, capacity, clients, upd_f, upd_i,
            slot_update, heap_t, heap_i, row_of, logs) -> None:  # pragma: no cover - compiled
    """`Events.launch`: update ``u`` starts at its START_S (its CLIENT, SLOT
    and the caller's columns set; with AR(1) links, CAP0 and CHANGE0 read
    here from the table)."""
    k, slot, t_s = upd_i[u, CLIENT], upd_i[u, SLOT], upd_f[u, START_S]
    slot_update[slot] = u
    if sc_i[DYNAMIC] == TABLE and upd_f[u, DOWN_SIZE] > 0:
        upd_f[u, CAP0], upd_f[u, CHANGE0] = _link(0, k, t_s, sc_f, clients, row_of, logs)
    if upd_f[u, DOWN_SIZE] <= 0:
        upd_f[u, FLOW_DOWN_END] = t_s
        upd_f[u, DOWN_BYTES] = 0.0
        push(heap_t, heap_i, sc_i, t_s + clients[HALF_RTT, k], 0, HAS_MODEL, u)
    else:
        _start_flow(0, slot, k, upd_f[u, DOWN_SIZE], upd_f[u, CAP0], upd_f[u, CHANGE0], t_s, sc_f, state, active,
                    shared, shared_of_client, capacity)
    if upd_f[u, OFFLINE_S] < _INF:
        push(heap_t, heap_i, sc_i, upd_f[u, OFFLINE_S], 0, GONE, u)
    if sc_f[DEADLINE_S] < _INF:
        push(heap_t, heap_i, sc_i, t_s + sc_f[DEADLINE_S], 0, CUT, u)


@njit(cache=True)
def _run(sc_f, sc_i, state, active, shared, shared_of_client, capacity, clients, upd_f, upd_i, slot_update,
        heap_t, heap_i, out_t, out_i, fin, chg, row_of, logs, srv_i, srv_f, sel, drop,
        steps_out) -> int:  # pragma: no cover - compiled
    """Launch the updates handed over (``sc_i[LAUNCHED]`` to ``sc_i[N_UPD]``,
    in order: they started at ``T_CUR``), then process events in time order
    until the server (Python's) or the caller is needed; the return code
    (module docstring), the instant in ``sc_f[T_CUR]``. ``GROW`` (before
    anything is done) when the heap lacks room for ``4 * slots + 8`` more
    events; ``GROW_LINKS`` before an event whose link the AR(1) table cannot
    yet answer (``sc_i[NEED_COLS]`` columns needed; nothing of it done). With
    the compiled server (``sc_i[SERVER]``) the server's moves are made here
    (`fedsim.system.async_server`) and the launches follow its settle."""
    slots = active.shape[1]
    k_all = clients.shape[1]
    mode = sc_i[DYNAMIC]
    compiled = sc_i[SERVER] == 1
    while True:
        if sc_i[HEAP_N] + 4 * slots + 8 > heap_t.size:
            return GROW
        if sc_i[LAUNCHED] < sc_i[N_UPD]:
            if mode == TABLE and _lacks_columns(sc_f[T_CUR], sc_f, sc_i):
                return GROW_LINKS
            while sc_i[LAUNCHED] < sc_i[N_UPD]:
                u = sc_i[LAUNCHED]
                if mode == TABLE and row_of[upd_i[u, CLIENT]] < 0:  # the compiled server's new client
                    sc_i[ARG_U] = upd_i[u, CLIENT]
                    return NEED_ROW
                _launch(u, sc_f, sc_i, state, active, shared, shared_of_client, capacity, clients, upd_f, upd_i,
                        slot_update, heap_t, heap_i, row_of, logs)
                sc_i[LAUNCHED] = u + 1
        t_next = min(heap_t[0] if sc_i[HEAP_N] > 0 else _INF, min(sc_f[NEXT0], sc_f[NEXT1]))
        if t_next > sc_f[T_CUR]:
            if sc_i[PENDING]:
                if not compiled:
                    sc_i[PENDING] = 0
                    return INSTANT
                server.take_finished(sc_i, upd_f, upd_i, out_t, out_i, srv_i, k_all, slots)
                code = server.settle(sc_f[T_CUR], sc_i, clients, upd_f, upd_i, heap_t, heap_i, srv_i, srv_f, sel,
                                     drop, mode, slots)
                if code != server.CONTINUE:
                    return code
                sc_i[PENDING] = 0
                continue  # its launches, then the events they make at this instant
            if t_next == _INF:
                return EMPTY
            sc_f[T_CUR] = t_next
        t_s = sc_f[T_CUR]
        if sc_f[NEXT0] <= t_s or sc_f[NEXT1] <= t_s:
            if mode == TABLE and _lacks_columns(t_s, sc_f, sc_i):
                return GROW_LINKS
            d = 0 if sc_f[NEXT0] <= t_s else 1
            now, n_done, n_changed = step_due(sc_f[NOW0 + 2 * d], t_s, _DONE_RTOL, state[d], active[d], fin, chg)
            sc_f[NOW0 + 2 * d] = now
            sc_i[ARG_D], sc_i[N_DONE], sc_i[N_CHANGED] = d, n_done, n_changed
            if n_changed > 0 and mode == CALLER:
                return CHANGES
            for j in range(n_changed if mode == TABLE else 0):  # `PathFlows.step`'s changed links, in slot order
                slot = chg[j]
                state[d, CAP, slot], state[d, CHANGE, slot] = _link(d, upd_i[slot_update[slot], CLIENT], t_s, sc_f,
                                                                    clients, row_of, logs)
            _resume_changes(sc_f, sc_i, state, active, shared, capacity, clients, upd_f, upd_i, slot_update,
                           heap_t, heap_i, out_t, out_i, fin)
            continue
        if mode == TABLE and heap_i[2, 0] == UP_FLOW and _lacks_columns(t_s, sc_f, sc_i):
            return GROW_LINKS
        kind, u = _pop(heap_t, heap_i, sc_i)
        if kind == RETRY_EVENT:
            sc_i[PENDING] = 1
            if not compiled:
                return RETRY
            srv_i[server.V_RETRY_PENDING], srv_i[server.V_CHANGED] = 0, 1
            continue
        if kind == STEP_DONE:
            sc_i[PENDING] = 1
            if not compiled:
                return STEP
            server.take_finished(sc_i, upd_f, upd_i, out_t, out_i, srv_i, k_all, slots)
            server.step_done(t_s, upd_i, srv_i, k_all, slots, steps_out)
            if srv_i[server.V_DONE]:
                return DONE
            continue
        if upd_i[u, FINISHED]:
            continue
        k = upd_i[u, CLIENT]
        if kind == HAS_MODEL:
            upd_f[u, HAS_MODEL_S] = t_s
            if upd_f[u, QUIT_S] < _INF:
                push(heap_t, heap_i, sc_i, t_s + upd_f[u, QUIT_S], 0, QUIT, u)
            push(heap_t, heap_i, sc_i, t_s + clients[COMPUTE, k], 0, COMPUTE_END, u)
        elif kind == COMPUTE_END:
            upd_f[u, COMPUTE_END_S] = t_s
            push(heap_t, heap_i, sc_i, t_s + clients[HALF_RTT, k], 0, UP_FLOW, u)
        elif kind == UP_FLOW:
            upd_f[u, FLOW_UP_START] = t_s
            if sc_f[UP_SIZE] <= 0:
                upd_f[u, UP_BYTES] = 0.0
                _end(u, t_s, OK, sc_i, upd_i, out_t, out_i)
            elif mode == TABLE:
                cap_bps, change_s = _link(1, k, t_s, sc_f, clients, row_of, logs)
                _start_flow(1, upd_i[u, SLOT], k, sc_f[UP_SIZE], cap_bps, change_s, t_s, sc_f, state, active, shared,
                            shared_of_client, capacity)
            elif mode == CALLER:
                sc_i[ARG_U] = u
                return SEG_UP
            else:
                _start_flow(1, upd_i[u, SLOT], k, sc_f[UP_SIZE], clients[CAP_UP, k], _INF, t_s, sc_f, state,
                            active, shared, shared_of_client, capacity)
        elif kind == QUIT:
            _cut(u, t_s, DROPOUT, sc_f, sc_i, state, active, shared, capacity, upd_f, upd_i, out_t, out_i)
        elif kind == GONE and upd_f[u, COMPUTE_END_S] == _INF:
            _cut(u, t_s, OFFLINE, sc_f, sc_i, state, active, shared, capacity, upd_f, upd_i, out_t, out_i)
        elif kind == GONE:
            push(heap_t, heap_i, sc_i, t_s + clients[HALF_RTT, k], 0, GONE_UP, u)
        elif kind == GONE_UP:
            _cut(u, t_s, OFFLINE, sc_f, sc_i, state, active, shared, capacity, upd_f, upd_i, out_t, out_i)
        elif kind == CUT:
            _cut(u, t_s, DEADLINE, sc_f, sc_i, state, active, shared, capacity, upd_f, upd_i, out_t, out_i)


@njit(cache=True)
def _stop_rest(n: int, t_s: float, sc_f, state, active, shared, capacity, upd_f, upd_i) -> None:  # pragma: no cover
    """`Events.cut_all`'s flows: the bytes of the updates still running at ``t_s``."""
    for u in range(n):
        if not upd_i[u, FINISHED]:
            _stop_flows_of(u, t_s, sc_f, state, active, shared, capacity, upd_f, upd_i)


@njit(cache=True)
def run(flt, ints, upd_f, upd_i, heap_t, heap_i, logs, srv_i, srv_f, sel, drop,
        steps_out) -> int:  # pragma: no cover - compiled
    """`_run` on the packed state (`fedsim.system.async_layout.layout`), the
    AR(1) table ``logs`` (`fedsim.system.async_links.AR1Table.logs`; any float
    (2, 1, 1) array when the links are not read from it) and the compiled
    server's state (`fedsim.system.async_server`; any arrays of its types
    with the Python server): launch the handed-over updates, process events
    until the server or the caller is needed; the code."""
    (sc_f, out_t, state, capacity, clients, sc_i, slot_update, fin, chg, out_i, active, shared, soc,
     row_of) = views(flt, ints)
    return _run(sc_f, sc_i, state, active, shared, soc, capacity, clients, upd_f, upd_i, slot_update, heap_t,
                heap_i, out_t, out_i, fin, chg, row_of, logs, srv_i, srv_f, sel, drop, steps_out)


@njit(cache=True)
def resume_changes(flt, ints, upd_f, upd_i, heap_t, heap_i) -> None:  # pragma: no cover - compiled
    """`_resume_changes` on the packed state (after a ``CHANGES`` return)."""
    sc_f, out_t, state, capacity, clients, sc_i, slot_update, fin, _, out_i, active, shared, _, _ = views(flt, ints)
    _resume_changes(sc_f, sc_i, state, active, shared, capacity, clients, upd_f, upd_i, slot_update, heap_t,
                    heap_i, out_t, out_i, fin)


@njit(cache=True)
def resume_up(cap_bps: float, change_s: float, flt, ints, upd_i) -> None:  # pragma: no cover - compiled
    """`_resume_up` on the packed state (after a ``SEG_UP`` return)."""
    sc_f, _, state, capacity, _, sc_i, _, _, _, _, active, shared, soc, _ = views(flt, ints)
    _resume_up(cap_bps, change_s, sc_f, sc_i, state, active, shared, soc, capacity, upd_i)


@njit(cache=True)
def stop_rest(n: int, t_s: float, flt, ints, upd_f, upd_i) -> None:  # pragma: no cover - compiled
    """`_stop_rest` on the packed state."""
    sc_f, _, state, capacity, _, _, _, _, _, _, active, shared, _, _ = views(flt, ints)
    _stop_rest(n, t_s, sc_f, state, active, shared, capacity, upd_f, upd_i)
