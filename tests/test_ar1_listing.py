"""The AR(1) link listing of the fast engine: a windowed table, exponentiated
once, and a horizon guess from the shared links' queues (issue 15, speed).

Every change must leave the listed capacities bit-identical: each test compares
against a series that never drops an interval (a fresh one asked once) or
against `AR1Series.segment` (the scalar reference)."""

import math

import numpy as np
import pytest

from fedsim.system import fastnet
from fedsim.system.dynamics import _CHUNK, AR1Series
from fedsim.system.fastnet import _guess_horizon, fast_path_schedule
from fedsim.system.jitlinks import queue_finish

pytest.importorskip("numba")


def _series(n=6, seed=3):
    return AR1Series(np.linspace(2e6, 9e6, n), 0.5, 0.8, 1.0, seed, "uplink")


def _same(a, b):
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)


def test_windowed_rounds_list_the_same_links_as_a_fresh_series():
    """Rounds far apart (hundreds of chunks' intervals: the window shifts many
    times), some clients appearing only late (drawn up from interval 0 while
    the others' early intervals are gone): each listing equals that of a
    series asked only this once, which holds every interval from 0."""
    series = _series()
    rng = np.random.default_rng(0)
    t0 = 0.0
    for r in range(40):
        clients = np.array([0, 1, 2]) if r < 25 else np.array([5, 1, 3, 4])
        start = rng.uniform(0, 30, clients.size)
        got = series.breakpoints(clients, t0, start, 60.0)
        _same(got, _series().breakpoints(clients, t0, start, 60.0))
        t0 += rng.uniform(20.0, 120.0)
    assert series._base > 5 * _CHUNK  # the early intervals were dropped ...
    assert series._table.shape[1] <= 4 * _CHUNK  # ... and the storage stayed small (else: > 12 chunks)


def test_a_client_first_asked_late_continues_its_recursion_across_chunks():
    """A client first listed after many chunks, just after a chunk boundary
    (where a wrong carried value would show before the AR(1) forgets it,
    0.8^j), equals a fresh series' listing."""
    series = _series()
    series.breakpoints(np.array([0, 1]), 0.0, np.zeros(2), 8.0 * _CHUNK)  # the window moves on
    t0 = 40.0 * _CHUNK + 0.5  # past the storage (16 chunks wide): the window shifts
    series.breakpoints(np.array([0, 1]), t0, np.zeros(2), 4.0)
    assert series._base > 0
    _same(series.breakpoints(np.array([1, 4]), t0, np.array([0.0, 0.2]), 20.0),
          _series().breakpoints(np.array([1, 4]), t0, np.array([0.0, 0.2]), 20.0))


def test_an_earlier_round_after_the_window_moved_on_draws_again():
    series = _series()
    late = series.breakpoints(np.array([0, 4]), 5000.7, np.array([0.0, 2.5]), 10.0)
    early = series.breakpoints(np.array([4, 1]), 3.2, np.array([0.4, 0.0]), 8.0)  # before the window: restart
    _same(early, _series().breakpoints(np.array([4, 1]), 3.2, np.array([0.4, 0.0]), 8.0))
    _same(late, series.breakpoints(np.array([0, 4]), 5000.7, np.array([0.0, 2.5]), 10.0))


def test_listed_capacities_are_the_scalar_segments():
    """Capacities read from the exponentiated table are those of `segment`
    (base * math.exp(X_j)); listed after the window moved."""
    series, scalar = _series(), _series()
    series.breakpoints(np.arange(6), 0.0, np.zeros(6), 900.0)
    bp = series.breakpoints(np.array([2, 5]), 1500.25, np.array([0.5, 3.0]), 6.0)
    assert series._base > 0
    for flow, client in enumerate([2, 5]):
        for k in range(bp.offsets[flow], bp.offsets[flow + 1]):
            cap_bps, _ = scalar.segment(client, 1500.25 + bp.times_s[k] + 1e-9)
            assert bp.cap_bps[k] == pytest.approx(cap_bps, rel=1e-15)


def test_one_block_of_normals_is_the_draws_one_by_one():
    """A Generator's standard_normal in one block equals the same count drawn
    in pieces (what lets a chunk's innovations be drawn in any block size)."""
    whole = np.random.default_rng(7).standard_normal(3 * _CHUNK)
    rng = np.random.default_rng(7)
    pieces = np.concatenate([rng.standard_normal(_CHUNK), [rng.standard_normal() for _ in range(_CHUNK)],
                             rng.standard_normal(_CHUNK)])
    assert np.array_equal(whole, pieces)


def test_queue_finish_by_hand():
    """Link 0 (8 bit/s): flows of 2 and 1 bytes at 0 s and 1 s: busy to 2 s,
    then 1 s more: 3 s. Link 1 (4 bit/s), flow 2 only at 5 s: 5 + 2 = 7 s.
    Link 2 (inf) never counts. D: link 0 needs 2 + 1 = 3 s for its bytes."""
    start = np.array([0.0, 1.0, 5.0])
    size = np.array([2.0, 1.0, 1.0])
    shared = np.array([[0, 2], [0, -1], [1, 2]])
    capacity = np.array([8.0, 4.0, math.inf])
    assert queue_finish(start, size, np.arange(3), shared, capacity) == (7.0, 3.0)
    # the guess: max(Q, last start) + 2 D
    assert _guess_horizon(start, size, np.arange(3), shared, capacity) == 13.0
    # without a finite shared link: the last start plus 1 s
    assert _guess_horizon(start, size, np.arange(3), shared, np.full(3, math.inf)) == 6.0


def test_bench_batches_end_within_the_guess(monkeypatch):
    """On the bench's cells scenario no batch outlives the guessed horizon
    (no second run of the loop), and the guess is shorter than the old one
    (last start + twice every byte's drain time on the narrowest link): the
    part after the last start under 0.6 times as long on the whole."""
    from fedsim.bench.system import dynamic_system
    from fedsim.system.payload import Payload
    from fedsim.system.sim import simulate

    runs, guesses = [], []
    loop, guess = fastnet.schedule_loop, fastnet._guess_horizon

    def counting_loop(*args):
        out = loop(*args)
        runs.append(out[0])
        return out

    def recording_guess(start, size, order, shared, capacity):
        horizon = guess(start, size, order, shared, capacity)
        finite = capacity[np.isfinite(capacity)]
        guesses.append((horizon - start[order[-1]], max(2 * size.sum() * 8 / finite.min(), 1.0)))  # past the last start
        return horizon

    monkeypatch.setattr(fastnet, "schedule_loop", counting_loop)
    monkeypatch.setattr(fastnet, "_guess_horizon", recording_guess)
    payload = Payload(down_bytes=1_066_440, up_bytes=1_066_440)
    simulate(dynamic_system(40, 2), client_samples=np.full(40, 400), rounds=6, seed=1, payload=payload,
             work_fraction=1.0)
    assert len(runs) == len(guesses) == 12  # one loop per batch: none outlived its guess
    new, old = np.array(guesses).T
    assert (new < old).all() and new.sum() < 0.6 * old.sum()  # 0.56 here


def test_guess_does_not_change_the_schedule():
    """A far shorter or longer horizon (reruns, longer listings) gives the same schedule."""
    series = _series()
    start, size = np.array([0.0, 0.3, 2.0]), np.array([4e6, 2e6, 1e6])
    shared = np.array([[0, -1], [0, -1], [0, -1]])
    capacity = np.array([6e6])

    def run():
        return fast_path_schedule(start, size, lambda h: series.breakpoints(np.array([0, 1, 5]), 7.5, start, h),
                                  shared, capacity)

    ref = run()
    for fixed in (0.01, 1000.0):
        fastnet_guess = fastnet._guess_horizon
        fastnet._guess_horizon = lambda *a, fixed=fixed: fixed
        try:
            got = run()
        finally:
            fastnet._guess_horizon = fastnet_guess
        assert np.array_equal(got.end_s, ref.end_s) and np.array_equal(got.event_s, ref.event_s)
