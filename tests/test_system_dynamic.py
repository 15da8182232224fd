"""Client links that change over time: the event-driven fluid solver against an
independent event-by-event solver and hand calculations, the AR(1) and LTE
variation, bandwidth traces and their errors, and whole rounds."""

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fedsim.errors import InputError
from fedsim.system import Payload, SystemConfig, simulate
from fedsim.system.dynamics import AR1Series, generate_lte_trace, read_bandwidth_trace
from fedsim.system.network import path_schedule

MB = 1_000_000


# --- an independent solver: plain Python, one event at a time ----------------

def _textbook_max_min(active, paths, capacity):
    """Bertsekas & Gallager's progressive filling: the link with the smallest
    equal share saturates first; its flows freeze at that share."""
    rate, unfrozen, residual = {}, set(active), dict(capacity)
    while unfrozen:
        shares = {}
        for link, cap in residual.items():
            users = [i for i in unfrozen if link in paths[i]]
            if users:
                shares[link] = cap / len(users)
        link = min(shares, key=shares.get)
        share = shares[link]
        for i in [i for i in unfrozen if link in paths[i]]:
            rate[i] = share
            unfrozen.discard(i)
            for other in paths[i]:
                residual[other] -= share
    return rate


def reference_schedule(starts, sizes_bits, client_steps, cell_of, cell_caps, server_cap):
    """End times of flows whose client link i has steps ``[(t, bps), ...]``
    (first at 0), each in cell ``cell_of[i]`` (None: no cell), all through
    the server's link."""
    n = len(starts)
    paths = [{("client", i), "server"} | ({("cell", cell_of[i])} if cell_of[i] is not None else set())
             for i in range(n)]
    left = list(sizes_bits)
    end = [math.inf] * n
    t = 0.0
    changes = sorted({s for s in starts} | {step for steps in client_steps for step, _ in steps})
    while True:
        active = [i for i in range(n) if starts[i] <= t and end[i] == math.inf]
        capacity = {"server": server_cap, **{("cell", c): cap for c, cap in cell_caps.items()}}
        for i in active:
            capacity[("client", i)] = [bps for step, bps in client_steps[i] if step <= t][-1]
        rate = _textbook_max_min(active, paths, capacity) if active else {}
        t_next = min([c for c in changes if c > t] + [t + left[i] / rate[i] for i in active], default=math.inf)
        if t_next == math.inf:
            return end
        for i in active:
            left[i] -= rate[i] * (t_next - t)
            if left[i] <= 1e-9 * sizes_bits[i]:
                end[i] = t_next
        t = t_next


def _caps_of(client_steps):
    def caps(flow, t):
        steps = client_steps[flow]
        k = max(j for j, (step, _) in enumerate(steps) if step <= t + 1e-12)
        nxt = steps[k + 1][0] if k + 1 < len(steps) else math.inf
        return steps[k][1], nxt
    return caps


def _schedule(starts, sizes_bytes, client_steps, cell_of, cell_caps, server_cap, **kw):
    cells = sorted(cell_caps)
    shared_of = np.array([[0, -1 if c is None else 1 + cells.index(c)] for c in cell_of])
    return path_schedule(starts, sizes_bytes, _caps_of(client_steps), shared_of,
                         [server_cap, *(cell_caps[c] for c in cells)], **kw)


# --- hand calculations ------------------------------------------------------

def test_one_flow_with_a_step_mid_transfer():
    # 1 MB = 8 Mbit: 0.5 s at 8 Mbps (4 Mbit), then 4 Mbit at 4 Mbps: 1 s more
    out = _schedule([0.0], [MB], [[(0.0, 8e6), (0.5, 4e6)]], [None], {}, math.inf)
    assert out.end_s[0] == pytest.approx(1.5, abs=1e-12)
    assert out.sent_bytes_at(0.5)[0] == pytest.approx(500_000)
    assert out.sent_bytes_at(1.0)[0] == pytest.approx(750_000)


def test_a_step_hands_capacity_to_the_other_flow():
    # server 10 Mbps; both capped 8: 5 Mbps each to 0.4 s (2 Mbit each). B drops
    # to 2 Mbps: A gets 8 (its cap), ends after 6 Mbit / 8 = 0.75 s at 1.15 s;
    # B then has 2 + 1.5 = 3.5 Mbit, 4.5 left at 2 Mbps: ends at 3.4 s
    steps = [[(0.0, 8e6)], [(0.0, 8e6), (0.4, 2e6)]]
    out = _schedule([0.0, 0.0], [MB, MB], steps, [None, None], {}, 10e6)
    assert out.end_s.tolist() == pytest.approx([1.15, 3.4], abs=1e-12)
    assert out.sent_bytes_at(0.4).tolist() == pytest.approx([250_000, 250_000])


def test_until_cuts_and_counts_what_was_sent():
    out = _schedule([0.0], [MB], [[(0.0, 8e6), (0.5, 4e6)]], [None], {}, math.inf, until_s=1.0)
    assert out.end_s[0] == math.inf
    assert out.sent_bytes[0] == pytest.approx(750_000)


def test_late_start_and_empty_flow():
    out = _schedule([2.0, 1.0], [MB, 0.0], [[(0.0, 8e6), (2.5, 16e6)], [(0.0, 1e6)]], [None, None], {}, math.inf)
    # 0.5 s at 8 Mbps = 4 Mbit, then 4 Mbit at 16 Mbps = 0.25 s
    assert out.end_s.tolist() == pytest.approx([2.75, 1.0])


# --- against the independent solver -------------------------------------------

@st.composite
def _cases(draw):
    n = draw(st.integers(1, 5))
    starts = [draw(st.sampled_from([0.0, 0.0, 0.3, 1.1, 2.0])) for _ in range(n)]
    sizes = [draw(st.integers(50_000, 1_500_000)) for _ in range(n)]
    steps = []
    for _ in range(n):
        times = sorted(set(draw(st.lists(st.floats(0.05, 4.0), max_size=3))))
        values = [draw(st.floats(1e6, 20e6)) for _ in range(len(times) + 1)]
        steps.append(list(zip([0.0, *times], values, strict=True)))
    cell_caps = {c: draw(st.floats(2e6, 30e6)) for c in draw(st.sampled_from([[], ["a"], ["a", "b"]]))}
    cell_of = [draw(st.sampled_from([None, *cell_caps])) for _ in range(n)]
    server = draw(st.floats(3e6, 40e6))
    return starts, sizes, steps, cell_of, cell_caps, server


@settings(max_examples=60, deadline=None)
@given(_cases())
def test_matches_the_event_by_event_solver(case):
    starts, sizes, steps, cell_of, cell_caps, server = case
    expected = reference_schedule(starts, [8 * s for s in sizes], steps, cell_of, cell_caps, server)
    got = _schedule(starts, sizes, steps, cell_of, cell_caps, server).end_s
    assert got.tolist() == pytest.approx(expected, rel=1e-7)


# --- AR(1) variation and LTE traces -------------------------------------------

def test_ar1_chunks_do_not_change_the_values_and_streams_are_per_client():
    series = AR1Series(np.full(3, 1e6), 0.5, 0.8, 1.0, seed=4, direction="uplink")
    first = series.log_factors(1, 10).copy()
    again = AR1Series(np.full(3, 1e6), 0.5, 0.8, 1.0, seed=4, direction="uplink")
    assert np.array_equal(again.log_factors(1, 700)[:10], first)
    assert not np.array_equal(again.log_factors(0, 10), first)


def test_ar1_has_the_stated_spread_and_correlation():
    x = AR1Series(np.ones(1), 0.5, 0.8, 1.0, seed=0, direction="downlink").log_factors(0, 40_000)
    assert x.std() == pytest.approx(0.5, rel=0.05)
    assert np.corrcoef(x[:-1], x[1:])[0, 1] == pytest.approx(0.8, abs=0.02)


def test_ar1_segment_is_piecewise_constant_on_its_intervals():
    series = AR1Series(np.array([2e6]), 0.5, 0.8, 2.0, seed=1, direction="downlink")
    value, nxt = series.segment(0, 3.0)
    assert nxt == 4.0
    assert series.segment(0, 2.0) == (value, 4.0)
    assert value == pytest.approx(2e6 * math.exp(series.log_factors(0, 2)[1]))


def test_lte_trace_reads_back(tmp_path):
    rows = generate_lte_trace(2, 3.0, seed=0)
    path = tmp_path / "lte.csv"
    path.write_text("client_id,t_s,downlink_bps,uplink_bps\n" + "".join(f"{k},{t},{d},{u}\n" for k, t, d, u in rows))
    series = read_bandwidth_trace(path, 2)
    assert series["downlink"].segment(1, 1.5) == (pytest.approx(rows[4][2]), 2.0)
    assert len({round(r[2]) for r in rows}) == 6  # it varies


# --- bandwidth trace files --------------------------------------------------

TRACE = "client_id,t_s,downlink_mbps,uplink_kbps\n0,0,8,1000\n0,0.5,4,1000\n1,0,8,500\n"


def _read(tmp_path, text, n=2, unit=None):
    path = tmp_path / "bw.csv"
    path.write_text(text)
    return read_bandwidth_trace(path, n, unit)


def test_trace_units_from_header_or_scenario(tmp_path):
    series = _read(tmp_path, TRACE)
    assert series["downlink"].segment(0, 0.7) == (4e6, math.inf)
    assert series["uplink"].segment(1, 9.0) == (500e3, math.inf)
    bare = _read(tmp_path, "client_id,t_s,downlink,uplink\n0,0,8,1\n1,0,8,1\n", unit="Mbps")
    assert bare["uplink"].segment(0, 0.0) == (1e6, math.inf)


@pytest.mark.parametrize(("text", "needle"), [
    (TRACE.replace("0,0.5,4", "0,0.0,4"), "line 3, column t_s: '0.0' is not after client 0's previous time"),
    (TRACE.replace("0,0.5,4", "0,0.5,-4"), "line 3, column downlink_mbps: '-4' must be a finite bandwidth > 0"),
    (TRACE.replace("0,0.5,4", "0,0.5,nan"), "line 3, column downlink_mbps: 'nan'"),
    (TRACE.replace("1,0,8", "7,0,8"), "line 4, column client_id: '7' is not a client id in 0..1"),
    (TRACE.replace("1,0,8", "1,2,8"), "line 4, column t_s: client 1's first row is at 2 s"),
    (TRACE.replace("1,0,8,500\n", ""), "no rows for client_id 1"),
    (TRACE.replace("downlink_mbps", "downlink"), "column 'downlink' has no unit"),
    (TRACE.replace("downlink_mbps", "downlink_furlongs"), "unknown unit suffix 'furlongs'"),
    (TRACE.replace("uplink_kbps", "up"), "unknown column 'up'"),
])
def test_trace_errors_name_file_line_and_column(tmp_path, text, needle):
    with pytest.raises(InputError) as info:
        _read(tmp_path, text)
    assert "bw.csv" in str(info.value) and needle in str(info.value)


# --- whole rounds -------------------------------------------------------------

def _system(clients, **extra):
    return SystemConfig.model_validate({
        "clients": {"rtt": "40 ms", "speed": {"dist": "uniform", "low": 0.5, "high": 2.0}, **clients},
        "server": {"downlink": "60 Mbps", "uplink": "20 Mbps", "aggregation": "0.5 s"}, **extra,
    })


def _run(system, rounds=4, k=12, **kw):
    return simulate(system, client_samples=np.full(k, 400), payload=Payload(down_bytes=MB, up_bytes=MB),
                    work_fraction=0.5, rounds=rounds, seed=3, **kw)


LINKS = {"downlink": {"dist": "lognormal", "median": "20 Mbps", "sigma": 0.6},
         "uplink": {"dist": "lognormal", "median": "5 Mbps", "sigma": 0.6}}


def test_zero_variation_reproduces_the_static_simulation():
    static = _run(_system(LINKS))
    flat = _run(_system({**LINKS, "dynamics": {"model": "lognormal_ar1", "sigma": 0.0, "correlation": 0.5,
                                              "interval": "1 s"}}))
    np.testing.assert_allclose(flat.timeline["upload_end_s"], static.timeline["upload_end_s"], rtol=1e-9)
    np.testing.assert_allclose(flat.rounds["duration_s"], static.rounds["duration_s"], rtol=1e-9)


def test_lte_rounds_differ_and_are_reproducible():
    static = _run(_system(LINKS))
    assert static.rounds["duration_s"].nunique() == 1
    lte = _run(_system({**LINKS, "dynamics": {"model": "lte"}}))
    assert lte.rounds["duration_s"].nunique() == 4
    again = _run(_system({**LINKS, "dynamics": {"model": "lte"}}))
    assert lte.rounds.equals(again.rounds)


def test_a_trace_step_is_replayed_in_a_round(tmp_path):
    (tmp_path / "bw.csv").write_text(TRACE)
    system = SystemConfig.model_validate({"clients": {"dynamics": {"model": "trace", "trace": "bw.csv"}}})
    out = simulate(system, client_samples=np.full(2, 400), payload=Payload(down_bytes=MB, up_bytes=MB),
                   work_fraction=0.0, rounds=1, seed=0, base_dir=tmp_path)
    assert out.timeline["download_end_s"].tolist() == pytest.approx([1.5, 1.0])
    # uploads from 1.5 s at 1 Mbps (8 s) and from 1.0 s at 0.5 Mbps (16 s)
    assert out.timeline["upload_end_s"].tolist() == pytest.approx([9.5, 17.0])


def test_a_bad_trace_is_an_input_error(tmp_path):
    (tmp_path / "bw.csv").write_text(TRACE.replace("0,0.5,4", "0,0.5,-4"))
    system = SystemConfig.model_validate({"clients": {"dynamics": {"model": "trace", "trace": "bw.csv"}}})
    with pytest.raises(InputError, match=r"bw\.csv' line 3, column downlink_mbps"):
        _run(system, k=2, base_dir=tmp_path)


@pytest.mark.parametrize(("dynamics", "needle"), [
    ({"model": "trace"}, "model 'trace' needs trace"),
    ({"model": "lognormal_ar1", "sigma": 0.5}, "needs correlation, interval"),
    ({"model": "lte", "trace": "x.csv"}, "takes no trace"),
    ({"model": "lte", "correlation": 1.0}, "less than 1"),
    ({"model": "trace", "trace": "x.csv", "unit": "Mfurlongs"}, "unit"),
    ({"model": "brownian"}, "model"),
])
def test_bad_dynamics_settings(dynamics, needle):
    with pytest.raises(ValidationError, match=needle):
        SystemConfig.model_validate({"clients": {"dynamics": dynamics}})


def test_a_trace_replaces_the_drawn_links():
    with pytest.raises(ValidationError, match="remove downlink"):
        SystemConfig.model_validate({"clients": {"downlink": "5 Mbps",
                                                 "dynamics": {"model": "trace", "trace": "x.csv"}}})


def test_a_bad_trace_exits_2_before_any_stage(tmp_path, monkeypatch, capsys):
    import importlib

    from fedsim.cli import main

    pipeline_run = importlib.import_module("fedsim.pipeline.runner")

    def no_stage(*_args, **_kwargs):
        raise AssertionError("a stage ran")

    monkeypatch.setattr(pipeline_run, "prepare_data", no_stage)
    (tmp_path / "bw.csv").write_text("client_id,t_s,downlink_mbps,uplink_mbps\n0,0,8,1\n1,0,8,1\n0,-1,8,1\n")
    tiny = (Path(__file__).parent / "scenarios" / "tiny.yaml").read_text()
    (tmp_path / "s.yaml").write_text(tiny.replace('    rtt: "50 ms"\n', '    rtt: "50 ms"\n    dynamics: {model: trace, trace: bw.csv}\n')
                                     .replace('    downlink: {dist: lognormal, median: "20 Mbps", sigma: 0.5}\n', "")
                                     .replace('    uplink: {dist: lognormal, median: "5 Mbps", sigma: 0.5}\n', ""))
    assert main(["scenario", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bw.csv' line 4, column t_s: '-1' must be a time >= 0 s" in err
