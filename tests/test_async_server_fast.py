"""The asynchronous server's fast per-update path (`fedsim.system.async_record`,
`Protocol`, the drivers' launches, the frames): schedules bit-identical to
the code before it, pinned by digests of their frames; the record, the
uniform streams and the selection against plain references."""

import hashlib
import math

import numpy as np
import pytest
from async_systems import base_system, maybe_cells

from fedsim import seeding
from fedsim.bench.system import bench_system, dynamic_system
from fedsim.system import Payload, SystemConfig
from fedsim.system import async_drivers as drivers
from fedsim.system.async_record import _CHUNK, END, Record, Selector, Uniforms
from fedsim.system.async_result import as_system_result
from fedsim.system.async_spec import AsyncConfig
from fedsim.system.asynchronous import simulate_async
from fedsim.system.profiles import draw_profiles

LENET = Payload(down_bytes=266_610 * 4, up_bytes=266_610 * 4)


def digest(schedule) -> str:
    """SHA-256 (16 hex digits) of every value of a schedule's frames, its
    `as_system_result` frames, its step plan and participation: equal
    digests = bit-identical schedules."""
    h = hashlib.sha256()
    result = as_system_result(schedule)
    for frame in (schedule.updates, schedule.steps, result.timeline, result.rounds):
        for name in frame.columns:
            values = frame[name].to_numpy()
            h.update(f"{name}:{values.dtype}:".encode())
            h.update("\0".join(values).encode() if values.dtype == object else np.ascontiguousarray(values).tobytes())
    for step in schedule.step_plan():
        h.update(repr(step).encode())
    for clients in result.participation:
        h.update(np.asarray(clients, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def random_system(case: int):
    """A random small system: contended or unlimited server (closed form),
    cells, LTE links, dropout, deadline, availability, diurnal sessions,
    staleness limit, first-download extra bytes."""
    stream = seeding.rng(case, "server-fast-case")
    k = int(stream.integers(3, 30))
    raw = base_system(stream, ["inf", "40 Mbps", "200 Mbps"], ["inf", "10 Mbps", "50 Mbps"], [0.0, 0.2])
    maybe_cells(stream, raw, 0.3)
    if stream.random() < 0.3:
        raw["clients"]["dynamics"] = {"model": "lte"}
    if stream.random() < 0.3:
        raw["rounds"]["deadline"] = "12 s"
    if stream.random() < 0.3:
        raw["clients"]["availability"] = 0.7
    if stream.random() < 0.3:
        raw["clients"]["sessions"] = {"model": "diurnal", "mean": 0.6, "amplitude": 0.2, "session": "60 s",
                                      "period": "600 s"}
    cfg = AsyncConfig(concurrency=int(stream.integers(1, k + 1)), buffer_size=int(stream.integers(1, 6)),
                      max_staleness=None if stream.random() < 0.7 else 1)
    payload = Payload(down_bytes=int(stream.choice([0, 500_000, 1_000_000])), up_bytes=1_000_000,
                      first_round_extra_bytes=int(stream.choice([0, 100_000])))
    samples = seeding.rng(case, "samples").integers(100, 800, k)
    return SystemConfig.model_validate(raw), cfg, dict(client_samples=samples, payload=payload, work_fraction=0.5,
                                                       steps=8, seed=case)


def bench_case(name: str):
    """The `fedsim.bench.asynchronous` systems, shortened."""
    system, clients, cfg, steps = {
        "closed": (bench_system(1000, "inf", "inf"), 1000, AsyncConfig(concurrency=100, buffer_size=10), 40),
        "contended": (bench_system(100), 100, AsyncConfig(concurrency=20, buffer_size=10), 40),
        "dynamic": (dynamic_system(100, 4), 100, AsyncConfig(concurrency=20, buffer_size=10), 40),
    }[name]
    return system, cfg, dict(client_samples=np.full(clients, 400), payload=LENET, work_fraction=1.0, steps=steps,
                             seed=3)


#: Digests of the schedules computed by the code before the fast server
#: (git HEAD 3a3b6f5, extracted with ``git archive``): the same values must come out.
#: They hold for the pinned numpy / numba (constraints.txt): another build's exp
#: or log (LTE links) may round differently, and then all pins must be recomputed
#: from one commit (``digest`` of each case) rather than edited one by one.
PINNED = {
    0: '2d19c12e61750393', 1: '539d2507f18ed755', 2: '6890fa01833b8f0f', 3: '51422f0fdf0508be',
    4: '312824253d522f06', 5: 'e830aa94253f4ded', 6: '9551ea270dd9f2ac', 7: '2d5034a491c73aea',
    8: 'b57e8228f1086e43', 9: 'd1fa13eefca1de7c', 10: '98ecb5a1a3e42981', 11: 'd579516decff858c',
    12: 'f35e2070d019298a', 13: '142d12978b85a5ad', 14: 'c7256f1a828f23df', 15: '414452352af1f2c6',
    16: 'c30d4bc69270c40a', 17: 'a77927e1545b3136', 18: 'c0229997a51576ea', 19: '03b165a96b66f0bd',
    20: '3cbc5bed04864016', 21: 'afb8fded7b80d4ed', 22: '1de1d4bf14002b89', 23: '67dd23e42358a709',
    24: 'ec2c1465e5d2ac61', 25: '45cae92d092b04dc', 'closed': '8d1b3e949ec3d86e', 'contended': 'c37b52a521c7b959',
    'dynamic': '33df45f17c675ec6',
}


def case_of(key):
    return bench_case(key) if isinstance(key, str) else random_system(key)


@pytest.mark.parametrize("key", list(PINNED))
def test_schedules_bit_identical_to_before(key):
    """Every value of the frames equals the pre-change code's (closed-form,
    compiled-event and AR(1)-table drivers; drops, sessions, availability)."""
    system, cfg, args = case_of(key)
    assert digest(simulate_async(system, cfg, **args)) == PINNED[key]


def test_pinned_cases_cover_every_driver_and_rule():
    """The pinned cases reach the closed form and the event loop, and each drop rule."""
    kinds, reasons = set(), set()
    for key in PINNED:
        system, cfg, args = case_of(key)
        profiles = draw_profiles(system.clients, len(args["client_samples"]), args["seed"], None)
        kinds.add(drivers.needs_events(system, profiles, cfg.concurrency))
        if isinstance(key, int):
            reasons |= set(simulate_async(system, cfg, **args).updates["reason"])
    assert kinds == {True, False}
    assert {"ok", "dropout", "deadline", "offline", "stale", "end"} <= reasons


# ------------------------------------------------------------------ record, streams, selection


def test_record_preallocates_fills_and_trims():
    """Columns grow in blocks filled with each column's start value; `add`
    writes five fields; `trim` leaves exactly the recorded updates."""
    rec = Record()
    for u in range(2500):  # past two allocations (1024, then doubling)
        assert rec.add(u % 7, u % 3, u // 10, 0.5 * u, 1e6 + u) == u
    assert rec.n == 2500 and rec.size >= 2500 and len(rec.stop) == rec.size
    assert rec.reason[2499] == END and rec.step[2499] == -1 and rec.arrive[2499] == math.inf
    assert math.isnan(rec.down_bytes[2499]) and rec.client[2500] == -1
    rec.stop[5] = 3.0
    rec.trim()
    for name in Record.NAMES:
        assert len(getattr(rec, name)) == 2500
    assert rec.client[:4] == [0, 1, 2, 3] and rec.slot[:4] == [0, 1, 2, 0]
    assert rec.start_version[2499] == 249 and rec.start[2499] == 1249.5 and rec.down_size[2499] == 1e6 + 2499
    assert rec.stop[5] == 3.0 and rec.stop[6] == math.inf


def test_uniforms_match_the_chunked_stream():
    """`next` gives value i of ``rng(seed, "async", purpose, i // CHUNK)``,
    across chunk boundaries, and `at` any index in any order."""
    uniform = Uniforms(11, "selection")
    drawn = [uniform.next() for _ in range(2 * _CHUNK + 5)]
    expected = np.concatenate([seeding.rng(11, "async", "selection", c).random(_CHUNK) for c in range(3)])
    assert drawn == expected[:len(drawn)].tolist()
    other = Uniforms(11, "selection")
    for i in (2 * _CHUNK + 1, 3, _CHUNK, _CHUNK - 1, 0):
        assert other.at(i) == expected[i]
    assert other.next() == expected[0]  # `next` counts its own draws


class _Plan:
    """The parts of a `RoundPlan` that the simple selection reads."""

    def __init__(self, n_clients: int) -> None:
        self.n_clients, self.all_available, self.sessions, self.seed = n_clients, True, None, 0


def test_selection_matches_the_swap_remove_reference():
    """Uniform draws among idle clients, removal by swapping in the last one,
    returns appended: the same clients as a plain list reference."""
    selector = Selector(_Plan(9), seed=4)  # type: ignore[arg-type]
    idle, uniform, busy = list(range(9)), Uniforms(4, "selection"), []
    stream = seeding.rng(0, "selection-reference")
    for _ in range(300):
        if busy and (not idle or stream.random() < 0.5):
            k = busy.pop(int(stream.integers(len(busy))))
            idle.append(k)
            selector.idle.append(k)
            continue
        i = int(uniform.next() * len(idle))
        k = idle[i]
        idle[i] = idle[-1]
        idle.pop()
        assert selector.take(0.0) == k
        busy.append(k)
    assert selector.idle == idle
    assert Selector(_Plan(0), seed=4).take(0.0) is None  # type: ignore[arg-type]
