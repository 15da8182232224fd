"""The max-min fluid link: hand-computed schedules, a brute-force reference, invariants."""

import math

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.system.links import SharedLink, fluid_schedule, max_min_rates, water_level

MBIT = 1e6 / 8  # bytes in a megabit


def approx_log(segments):
    """Segments with rates in Mbit/s, rounded to the nanosecond / bit/s."""
    return [
        (round(t0, 9), round(t1, 9), {i: round(r / 1e6, 9) for i, r in sorted(rates.items())})
        for t0, t1, rates in segments
    ]


def test_water_level_by_hand():
    # 10 Mbps shared by caps 2 and 20: the 2-Mbps flow keeps its cap, the other gets 8
    assert water_level(np.array([2e6, 20e6]), 10e6) == 8e6
    assert max_min_rates(np.array([2e6, 20e6, math.inf]), 10e6).tolist() == [2e6, 4e6, 4e6]
    # caps that fit: nobody is limited by the link
    assert water_level(np.array([2e6, 3e6]), 10e6) == math.inf
    assert max_min_rates(np.array([2e6, 3e6]), math.inf).tolist() == [2e6, 3e6]


def test_two_flows_with_different_caps_share_a_link():
    # 1 MB (8 Mbit) each on a 10 Mbps link; caps 2 and 20 Mbps.
    # 0-1 s: rates 2 and 8 -> flow 1 done at 1 s; flow 0 keeps its 2 Mbps cap: 8/2 = 4 s.
    schedule = fluid_schedule([0, 0], [8 * MBIT, 8 * MBIT], [2e6, 20e6], 10e6, record=True)
    assert schedule.end_s.tolist() == [4.0, 1.0]
    assert approx_log(schedule.segments) == [(0.0, 1.0, {0: 2.0, 1: 8.0}), (1.0, 4.0, {0: 2.0})]
    # the closed form (same start, same size) agrees with the event loop
    assert fluid_schedule([0, 0], [8 * MBIT] * 2, [2e6, 20e6], 10e6).end_s.tolist() == [4.0, 1.0]


def test_a_flow_that_starts_while_another_runs():
    # 10 Mbps link, no caps. A: 10 Mbit from t=0; B: 2.5 Mbit from t=0.5.
    # 0-0.5: A alone at 10 (5 Mbit sent); 0.5-1: 5 each, B done at 1.0 (A: 7.5 sent);
    # 1-1.25: A alone at 10 for its last 2.5 Mbit.
    schedule = fluid_schedule([0.0, 0.5], [10 * MBIT, 2.5 * MBIT], [math.inf] * 2, 10e6, record=True)
    assert schedule.end_s.tolist() == [1.25, 1.0]
    assert approx_log(schedule.segments) == [
        (0.0, 0.5, {0: 10.0}),
        (0.5, 1.0, {0: 5.0, 1: 5.0}),
        (1.0, 1.25, {0: 10.0}),
    ]
    assert schedule.sent_bytes_at(0.75).tolist() == [6.25 * MBIT, 1.25 * MBIT]


def test_a_capped_flow_joins_the_level_and_leaves_it_again():
    # 12 Mbps link. A: cap 5, 9 Mbit; B: no cap, 13 Mbit; both from 0. C: no cap, 2 Mbit from 1 s.
    # 0-1: A capped at 5, B 7.  At 1 s C arrives: level 12/3 = 4 < 5, so A joins the level.
    # 1-1.5: 4 each; C done (2 Mbit).  Then level 12 - 5 = 7 > 5: A capped again.
    # 1.5-1.9: A 5 (its last 2 Mbit), B 7.  1.9-2.0: B alone at 12 for its last 1.2 Mbit.
    schedule = fluid_schedule(
        [0, 0, 1], [9 * MBIT, 13 * MBIT, 2 * MBIT], [5e6, math.inf, math.inf], 12e6, record=True
    )
    assert schedule.end_s == pytest.approx([1.9, 2.0, 1.5], abs=1e-12)
    assert approx_log(schedule.segments) == [
        (0.0, 1.0, {0: 5.0, 1: 7.0}),
        (1.0, 1.5, {0: 4.0, 1: 4.0, 2: 4.0}),
        (1.5, 1.9, {0: 5.0, 1: 7.0}),
        (1.9, 2.0, {1: 12.0}),
    ]


def test_until_cuts_the_schedule_and_reports_partial_bytes():
    full = fluid_schedule([0.0, 0.5], [10 * MBIT, 2.5 * MBIT], [math.inf] * 2, 10e6)
    cut = fluid_schedule([0.0, 0.5], [10 * MBIT, 2.5 * MBIT], [math.inf] * 2, 10e6, until_s=0.75)
    assert cut.end_s.tolist() == [math.inf, math.inf]
    assert cut.sent_bytes.tolist() == [6.25 * MBIT, 1.25 * MBIT]
    assert full.sent_bytes_at(0.75).tolist() == cut.sent_bytes.tolist()
    assert full.sent_bytes_at(0.25).tolist() == [2.5 * MBIT, 0.0]


def test_edge_cases():
    empty = fluid_schedule([], [], [], 1e6)
    assert empty.end_s.size == 0
    zero = fluid_schedule([3.0], [0.0], [1e6], 1e6)
    assert zero.end_s.tolist() == [3.0]
    instant = fluid_schedule([2.0, 2.0], [MBIT, MBIT], [math.inf, math.inf], math.inf)
    assert instant.end_s.tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="must be > 0"):
        fluid_schedule([0.0], [1.0], [0.0], 1e6)
    with pytest.raises(ValueError, match="disagree in length"):
        fluid_schedule([0.0, 1.0], [1.0], [1.0], 1e6)


def reference_schedule(start, size, cap, capacity):
    """Brute force: recompute the max-min rates from scratch at every event."""
    n = len(start)
    remaining = [float(s) for s in size]
    end = [math.inf] * n
    t = min(start)
    while any(e == math.inf for e in end):
        active = [i for i in range(n) if start[i] <= t and end[i] == math.inf]
        for i in active:
            if remaining[i] <= 1e-9 * max(size[i], 1.0):
                end[i] = t
        active = [i for i in active if end[i] == math.inf]
        rates = {}
        left, todo = capacity, sorted(active, key=lambda i: cap[i])
        while todo:  # progressive filling, textbook form
            share = left / len(todo)
            if cap[todo[0]] <= share:
                rates[todo[0]] = cap[todo[0]]
                left -= cap[todo[0]]
                todo.pop(0)
            else:
                for i in todo:
                    rates[i] = share
                todo = []
        pending = [start[i] for i in range(n) if start[i] > t]
        steps = [remaining[i] * 8 / rates[i] for i in active] + [p - t for p in pending]
        if not steps:
            break
        dt = min(steps)
        for i in active:
            remaining[i] -= rates[i] * dt / 8
        t += dt
    return end


flows = st.integers(min_value=1, max_value=7).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from([0.0, 0.0, 0.5, 1.0, 1.7, 3.0]), min_size=n, max_size=n),
        st.lists(st.floats(1e4, 2e6), min_size=n, max_size=n),
        st.lists(st.one_of(st.floats(1e5, 5e7), st.just(math.inf)), min_size=n, max_size=n),
        st.floats(1e6, 5e7),
    )
)


@settings(max_examples=150, deadline=None)
@given(flows)
def test_matches_brute_force_reference(case):
    start, size, cap, capacity = case
    schedule = fluid_schedule(start, size, cap, capacity)
    expected = reference_schedule(start, size, cap, capacity)
    assert schedule.end_s == pytest.approx(expected, rel=1e-7, abs=1e-9)
    event_loop = fluid_schedule(start, size, cap, capacity, record=True)  # no fast path
    assert event_loop.end_s == pytest.approx(expected, rel=1e-7, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(flows)
def test_rates_are_max_min_fair_and_bytes_conserved(case):
    start, size, cap, capacity = case
    schedule = fluid_schedule(start, size, cap, capacity, record=True)
    carried = np.zeros(len(start))
    for t0, t1, rates in schedule.segments:
        assert t1 > t0
        total = sum(rates.values())
        assert total <= capacity * (1 + 1e-9)  # fair shares never exceed the capacity
        top = max(rates.values())
        for i, rate in rates.items():
            assert start[i] <= t0 and schedule.end_s[i] >= t1
            assert rate <= cap[i] * (1 + 1e-12)
            # max-min: a flow below its cap has the largest rate, on a saturated link
            if rate < cap[i] * (1 - 1e-9):
                assert rate == pytest.approx(top, rel=1e-9)
                assert total == pytest.approx(capacity, rel=1e-9)
            carried[i] += rate * (t1 - t0) / 8
    assert carried == pytest.approx(np.asarray(size), rel=1e-7)
    assert (schedule.end_s >= np.asarray(start)).all()


@settings(max_examples=60, deadline=None)
@given(flows, st.floats(0.0, 4.0))
def test_partial_bytes_at_any_time(case, at_s):
    start, size, cap, capacity = case
    schedule = fluid_schedule(start, size, cap, capacity)
    sent = schedule.sent_bytes_at(at_s)
    assert ((sent >= 0) & (sent <= np.asarray(size) * (1 + 1e-12))).all()
    assert (sent[schedule.end_s <= at_s] == np.asarray(size)[schedule.end_s <= at_s]).all()
    cut = fluid_schedule(start, size, cap, capacity, until_s=at_s)
    assert cut.sent_bytes == pytest.approx(sent, rel=1e-9, abs=1e-6)


def test_shared_link_refuses_overlapping_batches():
    env = simpy.Environment()
    link = SharedLink(env, 10e6, "egress")
    schedule = link.transfer_all(np.array([0.0]), np.array([MBIT]), np.array([math.inf]))
    assert schedule.end_s.tolist() == [0.1]  # 1 Mbit at 10 Mbps
    link.release(0.1, MBIT)
    with pytest.raises(RuntimeError, match="before the previous batch ended"):
        link.transfer_all(np.array([0.05]), np.array([MBIT]), np.array([math.inf]))
    assert link.carried_bytes == MBIT and link.flows == 1
    with pytest.raises(ValueError, match="capacity must be > 0"):
        SharedLink(env, 0.0, "ingress")


@pytest.mark.parametrize("seed", range(4))
def test_many_flows_match_the_reference(seed):
    # 60 contended flows with lognormal caps, bursts of simultaneous arrivals and mixed sizes
    gen = np.random.default_rng(seed)
    start = np.round(gen.uniform(0, 5, 60), 1)  # rounding makes simultaneous arrivals
    size = gen.choice([125_000.0, 250_000.0, 1_066_440.0], 60)
    cap = 5e6 * np.exp(0.8 * gen.standard_normal(60))
    cap[::7] = math.inf
    schedule = fluid_schedule(start, size, cap, 40e6)
    expected = reference_schedule(start.tolist(), size.tolist(), cap.tolist(), 40e6)
    assert schedule.end_s == pytest.approx(expected, rel=1e-9)
