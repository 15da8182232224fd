"""The FedBuff server compiled (numba): finish, settle, trigger and step inside the event loop.

`fedsim.system.asynchronous.Protocol` is the server's reference: Python code
run once or a few times per client update (an update ends: its slot and
client free up, it joins the buffer; after each instant: a step if the
buffer is full, then a new client per free slot, drawn uniformly among the
idle ones). With the compiled event loop (`fedsim.system.async_loop`) that
was the larger part of a contended schedule's time: the loop returned to
Python about 1.2 times per update, and each return cost the dispatch, the
Python bookkeeping (`fedsim.system.async_record`) and the hand-over of the
launches. Here the same moves run inside the loop when the selection needs
nothing but the idle list and its uniform stream (every client available,
no sessions; `async_record.Selector.simple`) and the links are constant or
AR(1) (``async_layout.STATIC`` / ``TABLE``): the loop then returns only to
have an array grown or refilled (``GROW``, ``GROW_LINKS``, ``GROW_UPD``,
``NEED_DRAWS``, ``NEED_ROW``), on an error, or when the last step is done
(``DONE``). Other systems keep the Python server.

The rules and the order of every operation are `Protocol`'s: the finishes
in the order the updates ended, the buffer in arrival order, the idle list
kept by swap-with-last removal, the free slots as a stack (slot 0 first),
a client's first download carrying the extra bytes, the uniforms of
``rng(seed, "async", "selection", chunk)`` and ``rng(seed, "async",
"dropout", chunk)`` by index (`async_record.Uniforms`; the caller appends
them in chunks), the retry after ``IDLE_RETRY_S``, staleness limits applied
when the buffer is read. The schedules are the Python server's, bit for bit
(tests/test_async_server_fast.py pins 29 of them; tests/test_async_speed_
server.py compares the two servers on random systems).

State: ``srv_i`` (int64) holds the scalars (indices ``V_*``) then the idle
clients (K), the free slots (C), per client whether it has downloaded the
model (K) and the updates of the step in progress (M); ``srv_f`` the floats
(``W_*``); ``sel`` / ``drop`` the uniforms drawn so far; ``steps_out`` one
row per server step (step, time, updates, mean and max staleness).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from fedsim import seeding
from fedsim.system import async_layout as lay
from fedsim.system.async_heap import push
from fedsim.system.async_layout import (
    ARRIVE_S,
    BUF,
    CAP0,
    CAP_DOWN,
    CHANGE0,
    CLIENT,
    COMPUTE,
    DOWN_SIZE,
    FINISHED,
    GROW_UPD,
    N_OUT,
    N_UPD,
    NEED_DRAWS,
    NO_CLIENT,
    NO_STEP,
    OFFLINE_S,
    OK,
    QUIT_S,
    REASON,
    RETRY_EVENT,
    SLOT,
    STALE,
    START_S,
    START_VERSION,
    STATIC,
    STEP_DONE,
    STEP_OF,
    STOP_S,
)
from fedsim.system.async_record import _CHUNK
from fedsim.system.asynchronous import IDLE_RETRY_S

if TYPE_CHECKING:
    from fedsim.system.async_drivers import CompiledEvents
    from fedsim.system.async_record import Record
    from fedsim.system.asynchronous import Protocol

__all__ = ["CONTINUE", "new_server", "run_compiled", "settle", "step_done", "take_finished", "to_record"]

#: `settle`'s code when the loop goes on.
CONTINUE = -1
(V_VERSION, V_BUSY, V_CHANGED, V_RETRY_PENDING, V_SINCE, V_RETRIES, V_DONE, V_MAX_STEPS, V_M, V_MAX_STALE,
 V_IDLE_N, V_FREE_N, V_HEAD, V_TAIL, V_SEL_I, V_SEL_N, V_DROP_N, V_N_STEPS, V_MAX_SINCE, V_N_PENDING) = range(20)
SRV_I = 20
W_AGG, W_DOWN_FIRST, W_DOWN_REST, W_DROPOUT, W_RETRY_S = range(5)
SRV_F = 5
_MAX_RETRIES = 100_000  # `Protocol.settle`'s limit
_INF = math.inf


def new_server(clients: int, slots: int, buffer_size: int, max_staleness: int | None, steps: int,
               max_since_step: int, aggregation_s: float, down_sizes: tuple[float, float], dropout: float,
               retry_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(srv_i, srv_f, steps_out) of a server at time 0 (`Protocol.__init__`):
    all clients idle, every slot free, version 0, a settle due."""
    srv_i = np.zeros(SRV_I + 2 * clients + slots + buffer_size, dtype=np.int64)
    srv_i[V_CHANGED], srv_i[V_MAX_STEPS], srv_i[V_M] = 1, steps, buffer_size
    srv_i[V_MAX_STALE] = -1 if max_staleness is None else max_staleness
    srv_i[V_IDLE_N], srv_i[V_FREE_N], srv_i[V_MAX_SINCE] = clients, slots, max_since_step
    srv_i[SRV_I:SRV_I + clients] = np.arange(clients)
    srv_i[SRV_I + clients:SRV_I + clients + slots] = np.arange(slots - 1, -1, -1)  # the stack's top: slot 0
    srv_f = np.array([aggregation_s, down_sizes[0], down_sizes[1], dropout, retry_s])
    return srv_i, srv_f, np.zeros((steps, 5))


@njit(cache=True)
def take_finished(sc_i, upd_f, upd_i, out_t, out_i, srv_i, clients: int, slots: int) -> None:  # pragma: no cover
    """`Protocol.finish` of every update listed in ``out_t`` / ``out_i``, in
    order: its end and reason, its arrival into the buffer, its slot and
    client freed."""
    idle, free = srv_i[SRV_I:SRV_I + clients], srv_i[SRV_I + clients:SRV_I + clients + slots]
    for j in range(sc_i[N_OUT]):
        u, t_s, reason = out_i[0, j], out_t[j], out_i[1, j]
        upd_f[u, STOP_S] = t_s
        upd_i[u, REASON] = reason
        if reason == OK:
            upd_f[u, ARRIVE_S] = t_s
            upd_i[srv_i[V_TAIL], BUF] = u
            srv_i[V_TAIL] += 1
        free[srv_i[V_FREE_N]] = upd_i[u, SLOT]
        srv_i[V_FREE_N] += 1
        idle[srv_i[V_IDLE_N]] = upd_i[u, CLIENT]
        srv_i[V_IDLE_N] += 1
        srv_i[V_CHANGED] = 1
    sc_i[N_OUT] = 0


@njit(cache=True)
def _trigger(t_s: float, upd_i, heap_t, heap_i, sc_i, srv_i, srv_f, pending) -> None:  # pragma: no cover
    """`Protocol.trigger`: the first M usable updates of the buffer (too stale
    ones discarded) start a step, done ``aggregation`` later; fewer stay."""
    m, limit, version = srv_i[V_M], srv_i[V_MAX_STALE], srv_i[V_VERSION]
    p, tail, count = srv_i[V_HEAD], srv_i[V_TAIL], 0
    while p < tail and count < m:
        u = upd_i[p, BUF]
        p += 1
        if limit >= 0 and version - upd_i[u, START_VERSION] > limit:
            upd_i[u, REASON] = STALE
        else:
            pending[count] = u
            count += 1
    if count < m:  # the buffer was read to its end: the kept ones go back, in order
        for j in range(count):
            upd_i[tail - count + j, BUF] = pending[j]
        srv_i[V_HEAD] = tail - count
        return
    srv_i[V_HEAD] = p
    srv_i[V_BUSY] = 1
    srv_i[V_N_PENDING] = count
    push(heap_t, heap_i, sc_i, t_s + srv_f[W_AGG], 1, STEP_DONE, -1)


@njit(cache=True)
def settle(t_s: float, sc_i, clients_f, upd_f, upd_i, heap_t, heap_i, srv_i, srv_f, sel, drop, mode: int,
           slots: int) -> int:  # pragma: no cover - compiled
    """`Protocol.settle` after the events of instant ``t_s``: a step if the
    buffer is full and the server idle, then a client per free slot (recorded
    and handed to the loop's launch, ``sc_i[N_UPD]``). Returns ``CONTINUE``,
    or before changing anything a code for the caller (``GROW_UPD``,
    ``NEED_DRAWS``), or an error code (``NO_CLIENT``, ``NO_STEP``)."""
    if srv_i[V_DONE]:
        return CONTINUE
    k_all = clients_f.shape[1]
    free_n, n = srv_i[V_FREE_N], sc_i[N_UPD]
    if n + free_n > upd_f.shape[0]:
        return GROW_UPD
    if srv_i[V_SEL_N] - srv_i[V_SEL_I] < free_n or (srv_f[W_DROPOUT] > 0 and srv_i[V_DROP_N] < 2 * (n + free_n)):
        return NEED_DRAWS
    idle = srv_i[SRV_I:SRV_I + k_all]
    free = srv_i[SRV_I + k_all:SRV_I + k_all + slots]
    got = srv_i[SRV_I + k_all + slots:SRV_I + 2 * k_all + slots]
    if not srv_i[V_BUSY] and srv_i[V_TAIL] - srv_i[V_HEAD] >= srv_i[V_M]:
        _trigger(t_s, upd_i, heap_t, heap_i, sc_i, srv_i, srv_f, srv_i[SRV_I + 2 * k_all + slots:])
    if srv_i[V_BUSY] or not srv_i[V_CHANGED]:
        return CONTINUE
    srv_i[V_CHANGED] = 0
    dropout, version = srv_f[W_DROPOUT], srv_i[V_VERSION]
    while free_n > 0:
        idle_n = srv_i[V_IDLE_N]
        if idle_n == 0:  # `Selector.take` gives None
            srv_i[V_RETRIES] += 1
            if srv_i[V_RETRIES] > _MAX_RETRIES:
                return NO_CLIENT
            if not srv_i[V_RETRY_PENDING]:
                srv_i[V_RETRY_PENDING] = 1
                push(heap_t, heap_i, sc_i, t_s + srv_f[W_RETRY_S], 1, RETRY_EVENT, -1)
            break
        i = int(sel[srv_i[V_SEL_I]] * idle_n)
        srv_i[V_SEL_I] += 1
        k = idle[i]
        last = idle[idle_n - 1]
        srv_i[V_IDLE_N] = idle_n - 1
        if last != k:
            idle[i] = last
        srv_i[V_RETRIES] = 0
        srv_i[V_SINCE] += 1
        if srv_i[V_SINCE] > srv_i[V_MAX_SINCE]:
            return NO_STEP
        size = srv_f[W_DOWN_REST] if got[k] else srv_f[W_DOWN_FIRST]
        got[k] = 1
        free_n -= 1
        u = n
        n += 1
        upd_i[u, CLIENT], upd_i[u, SLOT], upd_i[u, START_VERSION] = k, free[free_n], version
        upd_f[u, START_S], upd_f[u, DOWN_SIZE], upd_f[u, OFFLINE_S] = t_s, size, _INF
        upd_f[u, QUIT_S] = drop[2 * u + 1] * clients_f[COMPUTE, k] if dropout > 0 and drop[2 * u] < dropout else _INF
        # constant links: the cap (`CompiledEvents.launch`); AR(1): read by the loop's launch
        upd_f[u, CAP0] = clients_f[CAP_DOWN, k] if mode == STATIC else math.nan
        upd_f[u, CHANGE0] = _INF
    srv_i[V_FREE_N] = free_n
    sc_i[N_UPD] = n
    return CONTINUE


@njit(cache=True)
def step_done(t_s: float, upd_i, srv_i, clients: int, slots: int, steps_out) -> None:  # pragma: no cover
    """`Protocol.step_done`: version v + 1 exists at ``t_s``; its updates'
    step and staleness, the step's row; done after the last step."""
    version = srv_i[V_VERSION] + 1
    srv_i[V_VERSION] = version
    srv_i[V_BUSY], srv_i[V_CHANGED], srv_i[V_SINCE] = 0, 1, 0
    pending = srv_i[SRV_I + 2 * clients + slots:]
    count, total, most = srv_i[V_N_PENDING], 0, 0
    for j in range(count):
        u = pending[j]
        stale = version - 1 - upd_i[u, START_VERSION]
        total += stale
        if j == 0 or stale > most:
            most = stale
        upd_i[u, STEP_OF] = version
    row = srv_i[V_N_STEPS]
    steps_out[row, 0], steps_out[row, 1], steps_out[row, 2] = version, t_s, count
    steps_out[row, 3], steps_out[row, 4] = total / count, most
    srv_i[V_N_STEPS] = row + 1
    if version >= srv_i[V_MAX_STEPS]:
        srv_i[V_DONE] = 1


def _chunk(seed: int, purpose: str, chunk: int) -> np.ndarray:
    """Chunk ``chunk`` of a purpose's uniforms (`fedsim.system.async_record.Uniforms`)."""
    return seeding.rng(seed, "async", purpose, chunk).random(_CHUNK)


def run_compiled(driver: CompiledEvents, protocol: Protocol) -> float:
    """`CompiledEvents.run_loop` with the server in the loop: runs until
    the last step, growing or refilling arrays when the loop asks; the end
    time (the last step's). The record's columns stay in the driver's
    ``upd_f`` / ``upd_i`` (`to_record`); the steps go to
    ``protocol.step_rows``.

    Raises:
        ValueError: no client reachable in 100,000 tries, too many updates
            without a step, or nothing left to happen (`Protocol.settle`'s).
    """
    from fedsim.system import async_loop as loop  # it imports this module

    cfg, plan, sc_i = protocol.cfg, protocol.plan, driver.sc_i
    srv_i, srv_f, steps_out = new_server(
        plan.n_clients, driver.slots, cfg.buffer_size, cfg.max_staleness, protocol.max_steps,
        protocol.max_since_step, protocol.aggregation_s, protocol.down_size, driver.dropout, IDLE_RETRY_S)
    sel, drop = np.empty(0), np.empty(0)
    sc_i[lay.SERVER], sc_i[lay.PENDING] = 1, 1  # `Protocol.run`'s first settle, at 0
    run = loop.run
    while True:
        code = run(driver.flt, driver.ints, driver.upd_f, driver.upd_i, driver.heap_t, driver.heap_i, driver.logs,
                   srv_i, srv_f, sel, drop, steps_out)
        if code == lay.DONE:
            break
        if code == lay.NEED_DRAWS:  # `async_record.Uniforms`' chunks, appended
            free_n, n = int(srv_i[V_FREE_N]), int(sc_i[lay.N_UPD])
            while sel.size - srv_i[V_SEL_I] < free_n:
                sel = np.concatenate([sel, _chunk(plan.seed, "selection", sel.size // _CHUNK)])
            while driver.dropout > 0 and drop.size < 2 * (n + free_n):
                drop = np.concatenate([drop, _chunk(plan.seed, "dropout", drop.size // _CHUNK)])
            srv_i[V_SEL_N], srv_i[V_DROP_N] = sel.size, drop.size
        elif code == lay.GROW_UPD:
            upd_f, upd_i = lay.new_updates(2 * driver.upd_f.shape[0])
            upd_f[:driver.upd_f.shape[0]], upd_i[:driver.upd_f.shape[0]] = driver.upd_f, driver.upd_i
            driver.upd_f, driver.upd_i = upd_f, upd_i
        elif code == lay.NEED_ROW:
            driver.table.add_row(int(sc_i[lay.ARG_U]))  # type: ignore[union-attr]
            driver.logs = driver.table.logs  # type: ignore[union-attr]
        elif code == lay.GROW:
            driver.room()
        elif code == lay.GROW_LINKS:
            driver.grow_links()
        elif code == lay.NO_CLIENT:
            raise ValueError("asynchronous schedule: no client reachable in 100,000 tries")
        elif code == lay.NO_STEP:
            raise ValueError(f"asynchronous schedule: {srv_i[V_SINCE] - 1} client updates without a "
                             "server step (the deadline, dropout or sessions let too few arrive)")
        else:
            raise ValueError("asynchronous schedule: nothing left to happen before the last step")
    driver.n = int(sc_i[lay.N_UPD])
    protocol.version, protocol.done = int(srv_i[V_VERSION]), True
    protocol.step_rows = [(int(v), t, int(c), mean, int(most))
                          for v, t, c, mean, most in steps_out[:srv_i[V_N_STEPS]].tolist()]
    return float(driver.sc_f[lay.T_CUR])


def to_record(rec: Record, upd_f: np.ndarray, upd_i: np.ndarray, t_s: float) -> None:
    """The compiled server's columns of the ``n`` updates (``upd_f[:n]``,
    ``upd_i[:n]``) as the record's (`Protocol.finish` / `Record.add`'s
    fields; those still running stop at ``t_s``, reason ``end``)."""
    rec.n = rec.size = upd_f.shape[0]
    rec.client, rec.slot, rec.start_version = upd_i[:, CLIENT], upd_i[:, SLOT], upd_i[:, START_VERSION]
    rec.start, rec.down_size, rec.arrive = upd_f[:, START_S], upd_f[:, DOWN_SIZE], upd_f[:, ARRIVE_S]
    rec.reason, rec.step = upd_i[:, REASON], upd_i[:, STEP_OF]
    rec.stop = np.where(upd_i[:, FINISHED] == 0, t_s, upd_f[:, STOP_S])
