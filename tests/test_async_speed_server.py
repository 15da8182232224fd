"""The FedBuff server compiled into the event loop (`fedsim.system.async_server`)
against the Python server (`asynchronous.Protocol` driving the same compiled
loop): the same schedules, float for float, on random systems (cells, LTE
links, dropout, deadlines, staleness limits, first-download extra bytes) and on
long runs that cross every refill (uniform chunks, per-update rows, AR(1) rows
and columns); the fallback to the Python server where the
selection needs more than the idle list."""

import numpy as np
import pandas as pd
import pytest
from async_systems import base_system, maybe_cells

from fedsim import seeding
from fedsim.bench.system import bench_system, dynamic_system
from fedsim.system import Payload, SystemConfig
from fedsim.system import async_drivers as drivers
from fedsim.system import async_layout as lay
from fedsim.system import async_loop as loop
from fedsim.system.async_record import _CHUNK
from fedsim.system.async_spec import AsyncConfig
from fedsim.system.asynchronous import simulate_async
from fedsim.system.profiles import draw_profiles

MB = Payload(down_bytes=1_000_000, up_bytes=1_000_000)


def both(system, cfg, monkeypatch, **args):
    """(compiled-server schedule, Python-server schedule, codes the loop returned in the first)."""
    codes: list[int] = []
    run = loop.run

    def counting(*a):
        codes.append(run(*a))
        return codes[-1]

    with monkeypatch.context() as m:
        m.setattr(loop, "run", counting)
        fast = simulate_async(system, cfg, **args)
    with monkeypatch.context() as m:
        m.setattr(drivers.CompiledEvents, "server_in_loop", False)
        slow = simulate_async(system, cfg, **args)
    return fast, slow, codes


def assert_same(fast, slow):
    pd.testing.assert_frame_equal(fast.updates, slow.updates, check_exact=True)
    pd.testing.assert_frame_equal(fast.steps, slow.steps, check_exact=True)
    assert fast.step_plan() == slow.step_plan()


def random_case(case: int):
    stream = seeding.rng(case, "speed-server-case")
    k = int(stream.integers(3, 40))
    raw = base_system(stream, ["40 Mbps", "200 Mbps"], ["10 Mbps", "50 Mbps"], [0.0, 0.3])
    maybe_cells(stream, raw, 0.4)
    if stream.random() < 0.4:
        raw["clients"]["dynamics"] = {"model": "lte"}
    if stream.random() < 0.4:
        raw["rounds"]["deadline"] = "15 s"
    cfg = AsyncConfig(concurrency=int(stream.integers(1, k + 1)), buffer_size=int(stream.integers(1, 6)),
                      max_staleness=None if stream.random() < 0.6 else int(stream.integers(0, 3)))
    payload = Payload(down_bytes=int(stream.choice([0, 500_000, 1_000_000])), up_bytes=1_000_000,
                      first_round_extra_bytes=int(stream.choice([0, 100_000])))
    args = dict(client_samples=seeding.rng(case, "samples").integers(100, 800, k), payload=payload,
                work_fraction=0.5, steps=int(stream.integers(5, 40)), seed=case)
    return SystemConfig.model_validate(raw), cfg, args


@pytest.mark.parametrize("case", range(24))
def test_compiled_server_equals_python_server(case, monkeypatch):
    """Random systems: the same schedule from both servers, and where the
    event loop runs (not the closed form), it ran the server itself: it never
    returned for a settle, a step or a retry."""
    system, cfg, args = random_case(case)
    fast, slow, codes = both(system, cfg, monkeypatch, **args)
    assert_same(fast, slow)
    if codes:
        assert codes[-1] == lay.DONE
        assert not {lay.INSTANT, lay.STEP, lay.RETRY, lay.SEG_UP, lay.CHANGES} & set(codes)


def test_random_cases_mostly_run_the_event_loop():
    """Most of the random cases are contended (the closed form needs no server in the loop)."""
    events = 0
    for case in range(24):
        system, cfg, args = random_case(case)
        profiles = draw_profiles(system.clients, len(args["client_samples"]), args["seed"], None)
        events += drivers.needs_events(system, profiles, cfg.concurrency)
    assert events >= 18


def test_random_cases_reach_every_rule(monkeypatch):
    """The random cases above drop, cut, discard stale updates and leave some unused."""
    reasons = set()
    for case in range(24):
        system, cfg, args = random_case(case)
        reasons |= set(simulate_async(system, cfg, **args).updates["reason"])
    assert {"ok", "dropout", "deadline", "stale", "unused", "end"} <= reasons


def test_long_runs_cross_every_refill(monkeypatch):
    """Thousands of updates: past the first chunk of selection uniforms (and
    of dropout's, two per update), several doublings of the per-update rows,
    and on LTE links new AR(1) rows and columns asked for mid-run."""
    system = SystemConfig.model_validate({**bench_system(30).model_dump(), "rounds": {"dropout": 0.2}})
    cfg = AsyncConfig(concurrency=12, buffer_size=3)
    args = dict(client_samples=np.full(30, 400), payload=MB, work_fraction=1.0, steps=1300, seed=5)
    fast, slow, codes = both(system, cfg, monkeypatch, **args)
    assert_same(fast, slow)
    assert len(fast.updates) > _CHUNK
    assert {lay.NEED_DRAWS, lay.GROW_UPD} <= set(codes) and lay.INSTANT not in codes
    fast, slow, codes = both(dynamic_system(40, 3), AsyncConfig(concurrency=10, buffer_size=5), monkeypatch,
                             **{**args, "client_samples": np.full(40, 400), "steps": 300})
    assert_same(fast, slow)
    assert {lay.NEED_ROW, lay.GROW_LINKS} <= set(codes)


def test_python_server_where_selection_needs_more(monkeypatch):
    """Availability below 1 or sessions: the Python server drives the loop
    (it returns for every settle), with the schedule of the reference."""
    raw = bench_system(30).model_dump()
    system = SystemConfig.model_validate({**raw, "clients": {**raw["clients"], "availability": 0.6}})
    codes: list[int] = []
    run = loop.run
    monkeypatch.setattr(loop, "run", lambda *a: codes.append(run(*a)) or codes[-1])
    simulate_async(system, AsyncConfig(concurrency=15, buffer_size=2), client_samples=np.full(30, 400),
                   payload=MB, work_fraction=1.0, steps=6, seed=1)
    assert lay.INSTANT in codes and lay.DONE not in codes


def test_compiled_server_reports_a_schedule_without_steps():
    """A deadline that no update meets on the contended link: the compiled
    server stops with `Protocol`'s error."""
    system = SystemConfig.model_validate({**bench_system(4).model_dump(), "rounds": {"deadline": "0.1 s"}})
    with pytest.raises(ValueError, match="without a server step"):
        simulate_async(system, AsyncConfig(concurrency=2, buffer_size=1), client_samples=np.full(4, 400),
                       payload=MB, work_fraction=1.0, steps=1, seed=0)
