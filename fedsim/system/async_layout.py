"""The compiled asynchronous loop's state: names of its codes, events, columns and scalars, and its layout.

`fedsim.system.async_loop` (the compiled event loop), `fedsim.system.
async_server` (the compiled FedBuff server) and their Python side
`fedsim.system.async_drivers.CompiledEvents` share this state; the arrays are
owned by the caller and updated in place:

* a float and an int array of fixed size (`layout`), seen through `views` as
  ``sc_f`` / ``sc_i`` the scalars (indices below), ``state`` (2,
  ``async_jit.ROWS``, slots) and ``active`` (2, slots) the flows of each
  direction (0 down, 1 up), ``shared`` (slots, p) the shared links of each
  slot's client, ``capacity`` (2, S) the shared links, ``clients`` (4, K):
  half rtt (s), computation (s), downlink and uplink cap (bits/s, when the
  links are constant), ``slot_update``, ``out_t`` / ``out_i`` the updates
  that ended since the server last took them (time; update, reason), scratch
  lists ``fin`` / ``chg``. Packing the fixed state in two arrays keeps a call
  at few arguments: numba's dispatch costs about 0.25 µs per array argument;
* the growing ones: ``upd_f`` / ``upd_i`` per update (columns below), the
  event heap (`fedsim.system.async_heap`), the AR(1) table
  (`fedsim.system.async_links`), and the compiled server's
  (`fedsim.system.async_server`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fedsim.system.async_heap import HEAP_N, SEQ
from fedsim.system.async_jit import ROWS

# return codes of `async_loop.run`: the server must act (Python server) ...
INSTANT, STEP, RETRY = 0, 1, 2
# ... the caller must read a segment, grow the heap, or nothing is left ...
SEG_UP, CHANGES, GROW, EMPTY, GROW_LINKS = 3, 4, 5, 6, 7
# ... the compiled server's: the last step is done, more per-update rows, more uniforms, an AR(1) row
# for client ``sc_i[ARG_U]``, no client reachable in 100,000 tries, too many updates without a step
DONE, GROW_UPD, NEED_DRAWS, NEED_ROW, NO_CLIENT, NO_STEP = 8, 9, 10, 11, 12, 13
# event kinds (`async_drivers`' kinds; the protocol's STEP_DONE, RETRY)
FINISH, HAS_MODEL, COMPUTE_END, UP_FLOW, QUIT, GONE, GONE_UP, CUT = range(8)
STEP_DONE, RETRY_EVENT = 100, 101
# reasons (`async_record`)
OK, DROPOUT, DEADLINE, OFFLINE, STALE, UNUSED, END = range(7)
# sc_f: the current instant, each direction's now and next event, upload bytes, deadline (s after start),
# each direction's AR(1) interval (s; links read from the table)
T_CUR, NOW0, NEXT0, NOW1, NEXT1, UP_SIZE, DEADLINE_S, INTERVAL0, INTERVAL1 = range(9)
SC_F = 9
# sc_i: sequence number and heap size (`async_heap`), ended updates listed, settle pending,
# the update / direction / counts a SEG_UP or CHANGES return is about, dynamic links,
# updates launched by `run` / handed over by the caller, the table's columns filled / needed (``GROW_LINKS``),
# the server (0: Python's `Protocol`, 1: compiled, `async_server`)
(N_OUT, PENDING, ARG_U, ARG_D, N_DONE, N_CHANGED, DYNAMIC, LAUNCHED, N_UPD, N_COLS, NEED_COLS,
 SERVER) = range(max(SEQ, HEAP_N) + 1, max(SEQ, HEAP_N) + 13)
SC_I = SERVER + 1
# sc_i[DYNAMIC]: constant links; links read by the caller (``SEG_UP``, ``CHANGES``); AR(1) links from the table
STATIC, CALLER, TABLE = range(3)
# upd_f columns: set at the launch (size of the download, when its client
# quits into the computation, the start, its session's end, its downlink's
# segment), then the phases and bytes; the end and arrival (compiled server)
(DOWN_SIZE, QUIT_S, START_S, OFFLINE_S, CAP0, CHANGE0, FLOW_DOWN_END, HAS_MODEL_S, COMPUTE_END_S, FLOW_UP_START,
 DOWN_BYTES, UP_BYTES, STOP_S, ARRIVE_S) = range(14)
UPD_F_COLUMNS = 14
# upd_i columns; with the compiled server also the version downloaded, the
# reason, the step that used it (-1: none), and BUF: row j holds the update
# in position j of the server's arrival buffer
CLIENT, SLOT, FINISHED, START_VERSION, REASON, STEP_OF, BUF = range(7)
UPD_I_COLUMNS = 7
# clients rows
HALF_RTT, COMPUTE, CAP_DOWN, CAP_UP = range(4)


def new_updates(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-update columns for ``count`` updates as `async_record.Record.add`
    starts them (phases and end inf, bytes NaN, reason ``END``, step -1)."""
    upd_f = np.full((count, UPD_F_COLUMNS), np.inf)
    upd_f[:, [DOWN_BYTES, UP_BYTES]] = np.nan
    upd_i = np.zeros((count, UPD_I_COLUMNS), dtype=np.int64)
    upd_i[:, REASON], upd_i[:, STEP_OF] = END, -1
    return upd_f, upd_i


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
def views(flt: np.ndarray, ints: np.ndarray) -> tuple:  # pragma: no cover - compiled
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
