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

State (arrays owned by the caller, updated in place): a float and an int
array of fixed size (`layout`), seen through `views` as ``sc_f`` / ``sc_i``
the scalars (indices below), ``state`` (2, ``async_jit.ROWS``, slots) and
``active`` (2, slots) the flows of each direction (0 down, 1 up),
``shared`` (slots, p) the shared links of each slot's client,
``capacity`` (2, S) the shared links, ``clients`` (4, K): half rtt (s),
computation (s), downlink and uplink cap (bits/s, when the links are
constant), ``slot_update``, ``out_t`` / ``out_i`` the updates that ended since
the last return (time; update, reason), scratch lists ``fin`` / ``chg``; and
the growing ones: ``upd_f`` / ``upd_i`` per update (columns below), the heap
(``heap_t`` times, ``heap_i`` rows priority, sequence, kind, update). Packing
the fixed state in two arrays keeps a call at six arguments: numba's dispatch
costs about 0.25 µs per array argument, and the loop is entered about once
per client update.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from fedsim.system.async_jit import CAP, CHANGE, ROWS, SENT, SIZE, advance, reallocate, step_due
from fedsim.system.async_links import columns_for, segment

__all__ = ["layout", "new_heap", "push", "resume_changes", "resume_up", "run", "stop_rest", "views"]

# return codes of `run`
INSTANT, STEP, RETRY, SEG_UP, CHANGES, GROW, EMPTY, GROW_LINKS = range(8)
# event kinds (`async_drivers`' kinds; the protocol's STEP_DONE, RETRY)
FINISH, HAS_MODEL, COMPUTE_END, UP_FLOW, QUIT, GONE, GONE_UP, CUT = range(8)
STEP_DONE, RETRY_EVENT = 100, 101
# reasons (`asynchronous`)
OK, DROPOUT, DEADLINE, OFFLINE = 0, 1, 2, 3
# sc_f: the current instant, each direction's now and next event, upload bytes, deadline (s after start),
# each direction's AR(1) interval (s; links read from the table)
T_CUR, NOW0, NEXT0, NOW1, NEXT1, UP_SIZE, DEADLINE_S, INTERVAL0, INTERVAL1 = range(9)
SC_F = 9
# sc_i: sequence number, heap size, ended updates listed, settle pending,
# the update / direction / counts a SEG_UP or CHANGES return is about, dynamic links,
# updates launched by `run` / handed over by the caller, the table's columns filled / needed (``GROW_LINKS``)
SEQ, HEAP_N, N_OUT, PENDING, ARG_U, ARG_D, N_DONE, N_CHANGED, DYNAMIC, LAUNCHED, N_UPD, N_COLS, NEED_COLS = range(13)
SC_I = 13
# sc_i[DYNAMIC]: constant links; links read by the caller (``SEG_UP``, ``CHANGES``); AR(1) links from the table
STATIC, CALLER, TABLE = range(3)
# upd_f columns: set by the caller (size of the download, when its client
# quits into the computation, the start, its session's end, its downlink's
# segment), then the phases and bytes
(DOWN_SIZE, QUIT_S, START_S, OFFLINE_S, CAP0, CHANGE0, FLOW_DOWN_END, HAS_MODEL_S, COMPUTE_END_S, FLOW_UP_START,
 DOWN_BYTES, UP_BYTES) = range(12)
UPD_F_COLUMNS = 12
# upd_i columns
CLIENT, SLOT, FINISHED = range(3)
UPD_I_COLUMNS = 3
# clients rows
HALF_RTT, COMPUTE, CAP_DOWN, CAP_UP = range(4)
_DONE_RTOL = 1e-9  # `async_flows._DONE_RTOL`
_INF = math.inf


def layout(slots: int, path_links: int, links: int, clients: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed-size state of `views` (zeros, the header of ``ints`` set):
    one float and one int array, so that a call passes few arguments (numba's
    dispatch costs about 0.25 µs per array argument)."""
    flt = np.zeros(SC_F + slots + 1 + 2 * ROWS * slots + 2 * links + 4 * clients)
    ints = np.zeros(4 + SC_I + 3 * slots + 2 * (slots + 1) + 2 * slots + (slots + clients) * path_links + clients,
                    dtype=np.int64)
    ints[:4] = slots, path_links, links, clients
    return flt, ints


@njit(cache=True)
def views(flt: np.ndarray, ints: np.ndarray) -> tuple:
    """The named views of the packed state (`layout`): sc_f, out_t, state,
    capacity, clients, sc_i, slot_update, fin, chg, out_i, active (int 0/1),
    shared, shared_of_client, row_of (module docstring). Also runs in Python
    (``views.py_func``) on the same arrays."""
    slots, p, links, k = ints[0], ints[1], ints[2], ints[3]
    a = SC_F
    sc_f, out_t = flt[:a], flt[a:a + slots + 1]
    a += slots + 1
    state = flt[a:a + 2 * ROWS * slots].reshape((2, ROWS, slots))
    a += 2 * ROWS * slots
    capacity = flt[a:a + 2 * links].reshape((2, links))
    a += 2 * links
    clients = flt[a:a + 4 * k].reshape((4, k))
    b = 4
    sc_i = ints[b:b + SC_I]
    b += SC_I
    slot_update, fin, chg = ints[b:b + slots], ints[b + slots:b + 2 * slots], ints[b + 2 * slots:b + 3 * slots]
    b += 3 * slots
    out_i = ints[b:b + 2 * (slots + 1)].reshape((2, slots + 1))
    b += 2 * (slots + 1)
    active = ints[b:b + 2 * slots].reshape((2, slots))
    b += 2 * slots
    shared = ints[b:b + slots * p].reshape((slots, p))
    b += slots * p
    shared_of_client = ints[b:b + k * p].reshape((k, p))
    b += k * p
    row_of = ints[b:b + k]
    return (sc_f, out_t, state, capacity, clients, sc_i, slot_update, fin, chg, out_i, active, shared,
            shared_of_client, row_of)


def new_heap(capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """An empty event heap with room for ``capacity`` events."""
    return np.full(capacity, _INF), np.zeros((4, capacity), dtype=np.int64)


@njit(cache=True)
def _earlier(t_s: float, prio: int, seq: int, t2_s: float, prio2: int, seq2: int) -> bool:  # pragma: no cover
    """Event (t_s, prio, seq) comes before (t2_s, prio2, seq2) on the heap: by
    time, then priority, then push order."""
    return t_s < t2_s or (t_s == t2_s and (prio < prio2 or (prio == prio2 and seq < seq2)))


@njit(cache=True)
def push(heap_t: np.ndarray, heap_i: np.ndarray, sc_i: np.ndarray, t_s: float, prio: int, kind: int,
         u: int) -> None:  # pragma: no cover - compiled
    """Push an event (the caller keeps room, see ``GROW``); ties broken by
    priority, then by the order of pushes."""
    sc_i[SEQ] += 1
    seq = sc_i[SEQ]
    i = sc_i[HEAP_N]
    sc_i[HEAP_N] = i + 1
    while i > 0:
        parent = (i - 1) >> 1
        pt, pp, ps = heap_t[parent], heap_i[0, parent], heap_i[1, parent]
        if _earlier(t_s, prio, seq, pt, pp, ps):
            heap_t[i] = pt
            heap_i[:, i] = heap_i[:, parent]
            i = parent
        else:
            break
    heap_t[i] = t_s
    heap_i[0, i], heap_i[1, i], heap_i[2, i], heap_i[3, i] = prio, seq, kind, u


@njit(cache=True)
def _pop(heap_t: np.ndarray, heap_i: np.ndarray, sc_i: np.ndarray) -> tuple[int, int]:  # pragma: no cover
    """Remove the first event; its (kind, update)."""
    kind, u = heap_i[2, 0], heap_i[3, 0]
    n = sc_i[HEAP_N] - 1
    sc_i[HEAP_N] = n
    t_s, prio, seq = heap_t[n], heap_i[0, n], heap_i[1, n]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n:
            ct, cp, cs = heap_t[child + 1], heap_i[0, child + 1], heap_i[1, child + 1]
            if _earlier(ct, cp, cs, heap_t[child], heap_i[0, child], heap_i[1, child]):
                child += 1
        ct, cp, cs = heap_t[child], heap_i[0, child], heap_i[1, child]
        if _earlier(ct, cp, cs, t_s, prio, seq):
            heap_t[i] = ct
            heap_i[:, i] = heap_i[:, child]
            i = child
        else:
            break
    heap_t[i] = t_s
    heap_i[:, i] = heap_i[:, n]
    heap_t[n] = _INF
    return kind, u


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
    slot = upd_i[u, SLOT]
    if math.isnan(upd_f[u, DOWN_BYTES]):
        upd_f[u, DOWN_BYTES] = _stop_flow(0, slot, t_s, sc_f, state, active, shared, capacity)
    if math.isnan(upd_f[u, UP_BYTES]):
        if upd_f[u, FLOW_UP_START] <= t_s:
            upd_f[u, UP_BYTES] = _stop_flow(1, slot, t_s, sc_f, state, active, shared, capacity)
        else:
            upd_f[u, UP_BYTES] = 0.0
    _end(u, t_s, reason, sc_i, upd_i, out_t, out_i)


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
        heap_t, heap_i, out_t, out_i, fin, chg, row_of, logs) -> int:  # pragma: no cover - compiled
    """Launch the updates the caller handed over (``sc_i[LAUNCHED]`` to
    ``sc_i[N_UPD]``, in order: they started at ``T_CUR``), then process
    events in time order until the server or the caller is needed; the return
    code (module docstring), the instant in ``sc_f[T_CUR]``. ``GROW`` (before
    anything is done) when the heap lacks room for ``4 * slots + 8`` more
    events; ``GROW_LINKS`` before an event whose link the AR(1) table cannot
    yet answer (``sc_i[NEED_COLS]`` columns needed; nothing of it done)."""
    slots = active.shape[1]
    mode = sc_i[DYNAMIC]
    if sc_i[HEAP_N] + 4 * slots + 8 > heap_t.size:
        return GROW
    if mode == TABLE and sc_i[LAUNCHED] < sc_i[N_UPD] and _lacks_columns(sc_f[T_CUR], sc_f, sc_i):
        return GROW_LINKS
    while sc_i[LAUNCHED] < sc_i[N_UPD]:
        _launch(sc_i[LAUNCHED], sc_f, sc_i, state, active, shared, shared_of_client, capacity, clients, upd_f,
                upd_i, slot_update, heap_t, heap_i, row_of, logs)
        sc_i[LAUNCHED] += 1
    while True:
        if sc_i[HEAP_N] + slots + 4 > heap_t.size:
            return GROW
        t_next = min(heap_t[0] if sc_i[HEAP_N] > 0 else _INF, min(sc_f[NEXT0], sc_f[NEXT1]))
        if t_next > sc_f[T_CUR]:
            if sc_i[PENDING]:
                sc_i[PENDING] = 0
                return INSTANT
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
        if kind == STEP_DONE:
            sc_i[PENDING] = 1
            return STEP
        if kind == RETRY_EVENT:
            sc_i[PENDING] = 1
            return RETRY
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
        if upd_i[u, FINISHED]:
            continue
        slot = upd_i[u, SLOT]
        if math.isnan(upd_f[u, DOWN_BYTES]):
            upd_f[u, DOWN_BYTES] = _stop_flow(0, slot, t_s, sc_f, state, active, shared, capacity)
        if math.isnan(upd_f[u, UP_BYTES]):
            if upd_f[u, FLOW_UP_START] <= t_s:
                upd_f[u, UP_BYTES] = _stop_flow(1, slot, t_s, sc_f, state, active, shared, capacity)
            else:
                upd_f[u, UP_BYTES] = 0.0


@njit(cache=True)
def run(flt, ints, upd_f, upd_i, heap_t, heap_i, logs) -> int:  # pragma: no cover - compiled
    """`_run` on the packed state (`layout`) and the AR(1) table ``logs``
    (`fedsim.system.async_links.AR1Table.logs`; any float (2, 1, 1) array
    when the links are not read from it): launch the handed-over updates,
    process events until the server or the caller is needed; the code."""
    (sc_f, out_t, state, capacity, clients, sc_i, slot_update, fin, chg, out_i, active, shared, soc,
     row_of) = views(flt, ints)
    return _run(sc_f, sc_i, state, active, shared, soc, capacity, clients, upd_f, upd_i, slot_update, heap_t,
                heap_i, out_t, out_i, fin, chg, row_of, logs)


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
