"""The asynchronous (FedBuff) schedule: hand-computed schedules event by event,
invariants on random systems, the synchronous limit, the two drivers against
each other, and the config."""

import math

import numpy as np
import pandas as pd
import pytest

from fedsim import seeding
from fedsim.learn.spec import MethodConfig
from fedsim.system import Payload, SystemConfig, simulate
from fedsim.system.async_spec import AsyncConfig, staleness_weight
from fedsim.system.asynchronous import ASYNC_REASONS, STEP_COLUMNS, UPDATE_COLUMNS, simulate_async
from fedsim.system.energy import energy_frame

MB = Payload(down_bytes=1_000_000, up_bytes=1_000_000)  # 8 Mbit each way
BIG_CELL = {"cells": {"all": {"capacity_down": "100 Gbps", "capacity_up": "100 Gbps"}}}  # forces the event driver


def trace_system(tmp_path, rows, **extra):
    """A system from a per-client trace (``rows``: downlink, uplink, rtt, speed)."""
    lines = ["client_id,downlink,uplink,rtt,speed,availability"]
    lines += [f"{k},{d},{u},{r},{s},1" for k, (d, u, r, s) in enumerate(rows)]
    (tmp_path / "profiles.csv").write_text("\n".join(lines) + "\n")
    raw = {"clients": {"trace": "profiles.csv"}, "compute": {"t_comp_full": "8 s", "reference_samples": 400}}
    raw.update(extra)
    return SystemConfig.model_validate(raw)


def run(system, cfg, clients, steps, tmp_path=None, payload=MB, seed=0):
    return simulate_async(system, cfg, client_samples=np.full(clients, 400), payload=payload, work_fraction=1.0,
                          steps=steps, seed=seed, base_dir=tmp_path)


def rows_of(schedule):
    """(client, start_version, start_s, arrive_s, reason, step, staleness) sorted by start, client."""
    u = schedule.updates.sort_values(["start_s", "client_id"])
    return [(r.client_id, r.start_version, round(r.start_s, 9),
             None if math.isnan(r.arrive_s) else round(r.arrive_s, 9), r.reason, r.step, r.staleness)
            for r in u.itertuples()]


# ------------------------------------------------------------------ hand-computed schedules

@pytest.mark.parametrize("extra", [{}, BIG_CELL], ids=["closed-form", "events"])
def test_three_clients_buffer_two(tmp_path, extra):
    """8 Mbps links, 1 MB each way (1 s), rtt 0; compute 8 s / speed 1, 2, 4 = 8, 4, 2 s:
    an update of client 0, 1, 2 takes 10, 6, 4 s. C = K = 3, M = 2, aggregation 0.5 s.
    t=4 c2 arrives (buffer 1), restarts at 4 with v0 (-> 8). t=6 c1 arrives: step 1 runs
    6-6.5, c1 waits for it and restarts at 6.5 with v1 (-> 12.5). t=8 c2 (v0) arrives,
    restarts at 8 with v1 (-> 12). t=10 c0 (v0): step 2 with c2's v0 update and c0's,
    staleness 1 each, done 10.5; c0 restarts at 10.5 (v2). t=12 c2 (v1) arrives, restarts
    at 12 (v2). t=12.5 c1 (v1): step 3, 12.5-13.0, staleness 1 each; the end at 13.0 cuts
    c0 (computing since 11.5) and c2 (its download ended at 13.0)."""
    system = trace_system(tmp_path, [("8 Mbps", "8 Mbps", 0, 1), ("8 Mbps", "8 Mbps", 0, 2),
                                     ("8 Mbps", "8 Mbps", 0, 4)],
                          server={"aggregation": "0.5 s"}, **extra)
    s = run(system, AsyncConfig(concurrency=3, buffer_size=2), 3, 3, tmp_path)
    assert rows_of(s) == [
        (0, 0, 0.0, 10.0, "ok", 2, 1),
        (1, 0, 0.0, 6.0, "ok", 1, 0),
        (2, 0, 0.0, 4.0, "ok", 1, 0),
        (2, 0, 4.0, 8.0, "ok", 2, 1),
        (1, 1, 6.5, 12.5, "ok", 3, 1),
        (2, 1, 8.0, 12.0, "ok", 3, 1),
        (0, 2, 10.5, None, "end", -1, -1),
        (2, 2, 12.0, None, "end", -1, -1),
    ]
    assert s.steps.values.tolist() == [[1, 6.5, 2, 0.0, 0], [2, 10.5, 2, 1.0, 1], [3, 13.0, 2, 1.0, 1]]
    cut = s.updates[s.updates["reason"] == "end"].sort_values("start_s")
    assert cut["down_bytes"].tolist() == [1e6, 1e6]
    assert cut["up_bytes"].tolist() == [0.0, 0.0]
    assert cut["compute_s"].tolist() == pytest.approx([1.5, 0.0])
    assert cut["end_s"].tolist() == [13.0, 13.0]
    w = 1 / math.sqrt(2)
    assert [[(c, v, round(x, 12)) for c, v, x in step] for step in s.step_plan()] == [
        [(2, 0, 1.0), (1, 0, 1.0)], [(2, 0, round(w, 12)), (0, 0, round(w, 12))],
        [(2, 1, round(w, 12)), (1, 1, round(w, 12))]]


def test_two_clients_share_the_egress(tmp_path):
    """An 8 Mbps egress, 1 MB downloads, unlimited uplinks, rtt 0, compute 8 and 2 s,
    C = K = 2, M = 1, no aggregation time. Both download at 4 Mbps (2 s); c1 arrives at
    4 (step 1) and downloads alone at 8 Mbps (4-5), arrives at 7 (step 2), again 7-8,
    arrives at 10 with c0 (v0, started at 0): step 3 takes c0's (staleness 2), step 4
    c1's (v2, staleness 1) at the same instant."""
    system = trace_system(tmp_path, [("8 Mbps", "inf", 0, 1), ("8 Mbps", "inf", 0, 4)],
                          server={"downlink": "8 Mbps"})
    s = run(system, AsyncConfig(concurrency=2, buffer_size=1), 2, 4, tmp_path)
    assert rows_of(s) == [
        (0, 0, 0.0, 10.0, "ok", 3, 2),
        (1, 0, 0.0, 4.0, "ok", 1, 0),
        (1, 1, 4.0, 7.0, "ok", 2, 0),
        (1, 2, 7.0, 10.0, "ok", 4, 1),
    ]
    assert s.updates.sort_values(["start_s", "client_id"])["download_end_s"].tolist() == [2.0, 2.0, 5.0, 8.0]
    assert s.steps["time_s"].tolist() == [4.0, 7.0, 10.0, 10.0]


def test_deadline_dropout_and_end(tmp_path):
    """1 s each way, compute 8 s / speed: client 0 needs 10 s, client 1 4 s. A 6 s deadline
    cuts every update of client 0 at its start + 6 s, 5 s into its computation; client 1
    alone makes the steps (M = 1), at 4, 8 and 12 s."""
    system = trace_system(tmp_path, [("8 Mbps", "8 Mbps", 0, 1), ("8 Mbps", "8 Mbps", 0, 4)],
                          rounds={"deadline": "6 s"})
    s = run(system, AsyncConfig(concurrency=2, buffer_size=1), 2, 3, tmp_path)
    c0 = s.updates[s.updates["client_id"] == 0]
    assert set(c0["reason"]) <= {"deadline", "end"}
    cut = c0[c0["reason"] == "deadline"]
    assert (cut["end_s"] - cut["start_s"]).tolist() == pytest.approx([6.0] * len(cut))
    assert cut["compute_s"].tolist() == pytest.approx([5.0] * len(cut))  # computing from 1 s to 6 s
    assert cut["up_bytes"].tolist() == [0.0] * len(cut)
    assert s.steps["time_s"].tolist() == [4.0, 8.0, 12.0]


# ------------------------------------------------------------------ the synchronous limit

@pytest.mark.parametrize("server", [{}, {"downlink": "30 Mbps", "uplink": "12 Mbps"}],
                         ids=["unlimited", "contended"])
def test_identical_clients_give_synchronous_fedavg(server):
    """M = C = K, identical clients: every step uses all K with staleness 0 and ends when
    the synchronous simulator's round ends."""
    k = 5
    system = SystemConfig.model_validate({
        "clients": {"downlink": "20 Mbps", "uplink": "5 Mbps", "rtt": "80 ms", "speed": 1.3},
        "server": {**server, "aggregation": "0.7 s"},
    })
    s = simulate_async(system, AsyncConfig(concurrency=k, buffer_size=k), client_samples=np.full(k, 300),
                       payload=MB, work_fraction=0.6, steps=4, seed=3)
    sync = simulate(system, client_samples=np.full(k, 300), payload=MB, work_fraction=0.6, rounds=4, seed=3)
    assert s.steps["updates"].tolist() == [k] * 4
    assert s.steps["max_staleness"].tolist() == [0] * 4
    assert s.steps["time_s"].to_numpy() == pytest.approx(sync.rounds["end_s"].to_numpy(), rel=1e-12)
    assert [sorted(c for c, _, _ in step) for step in s.step_plan()] == [list(range(k))] * 4
    kept = sync.timeline[sync.timeline["kept"]]
    used = s.updates[s.updates["step"] >= 1]
    assert used["up_bytes"].sum() == kept["up_bytes"].sum()
    assert used["compute_s"].sum() == pytest.approx(kept["compute_s"].sum())
    assert len(s.updates) == len(used)  # nothing left running after the last step
    sync_j = energy_frame(sync.timeline, system.energy)["energy_j"].sum()
    assert s.updates["energy_j"].sum() == pytest.approx(sync_j, rel=1e-12)  # same transfers, same tails


# ------------------------------------------------------------------ invariants

def random_case(i):
    stream = seeding.rng(i, "async-case")
    k = int(stream.integers(2, 9))
    c = int(stream.integers(1, k + 1))
    m = int(stream.integers(1, 5))
    raw = {
        "clients": {"downlink": {"dist": "lognormal", "median": "20 Mbps", "sigma": 0.7},
                    "uplink": {"dist": "lognormal", "median": "5 Mbps", "sigma": 0.7},
                    "rtt": {"dist": "uniform", "low": "10 ms", "high": "200 ms"},
                    "speed": {"dist": "uniform", "low": 0.3, "high": 3.0}},
        "server": {"aggregation": f"{float(stream.choice([0.0, 0.5]))} s"},
        "rounds": {"dropout": float(stream.choice([0.0, 0.2]))},
    }
    if stream.random() < 0.5:
        raw["server"].update({"downlink": "30 Mbps", "uplink": "8 Mbps"})
    if stream.random() < 0.3:
        raw["rounds"]["deadline"] = "14 s"
    if stream.random() < 0.3:
        raw["clients"]["availability"] = 0.7
    cfg = AsyncConfig(concurrency=c, buffer_size=m, max_staleness=None if stream.random() < 0.7 else 1)
    return SystemConfig.model_validate(raw), cfg, k


@pytest.mark.parametrize("case", range(24))
def test_schedule_invariants(case):
    system, cfg, k = random_case(case)
    samples = seeding.rng(case, "samples").integers(100, 800, k)
    s = simulate_async(system, cfg, client_samples=samples, payload=MB, work_fraction=0.5, steps=6, seed=case)
    u, st = s.updates, s.steps
    assert list(u.columns) == list(UPDATE_COLUMNS) and list(st.columns) == list(STEP_COLUMNS)
    assert set(u["reason"]) <= set(ASYNC_REASONS)
    assert st["step"].tolist() == list(range(1, 7))
    assert (st["updates"] == cfg.buffer_size).all()
    used = u[u["step"] >= 1]
    assert (used.groupby("step").size() == cfg.buffer_size).all()
    assert (used["reason"] == "ok").all() and (u[u["step"] < 1]["reason"] != "ok").all()
    step_time = st.set_index("step")["time_s"]
    assert (used["arrive_s"].to_numpy() <= step_time[used["step"]].to_numpy()).all()  # not used before it arrives
    # the version a client downloads: the steps done by its start; staleness: those done since, before its step
    done_by_start = np.searchsorted(st["time_s"].to_numpy(), u["start_s"].to_numpy(), side="right")
    assert (u["start_version"].to_numpy() == done_by_start).all()
    between = [int(((st["time_s"] > r.start_s) & (st["step"] < r.step)).sum()) for r in used.itertuples()]
    assert used["staleness"].tolist() == between
    assert (used["staleness"] == used["step"] - 1 - used["start_version"]).all()
    if cfg.max_staleness is not None:
        assert (used["staleness"] <= cfg.max_staleness).all()
    # at most C clients train at once, and a client never twice at once
    times = np.concatenate([u["start_s"], u["end_s"]])
    delta = np.concatenate([np.ones(len(u)), -np.ones(len(u))])
    order = np.lexsort((delta, times))  # at one instant, ends before starts
    assert np.cumsum(delta[order]).max() <= cfg.concurrency
    for _, rows in u.sort_values("start_s").groupby("client_id"):
        assert (rows["start_s"].to_numpy()[1:] >= rows["end_s"].to_numpy()[:-1]).all()
    assert (u["end_s"] <= st["time_s"].iloc[-1]).all()
    assert (u["down_bytes"] <= MB.down_bytes).all() and (u["up_bytes"] <= MB.up_bytes).all()
    assert (u["compute_s"] >= 0).all() and (u["energy_j"] > 0).all()
    again = simulate_async(system, cfg, client_samples=samples, payload=MB, work_fraction=0.5, steps=6, seed=case)
    pd.testing.assert_frame_equal(again.updates, u)
    pd.testing.assert_frame_equal(again.steps, st)


@pytest.mark.parametrize("case", range(12))
def test_event_driver_matches_closed_form(case):
    """Where no link is ever a bottleneck both drivers apply; they agree."""
    system, cfg, k = random_case(100 + case)
    raw = system.model_dump()
    raw["server"].update({"downlink": math.inf, "uplink": math.inf})
    plain = SystemConfig.model_validate(raw)
    cells = SystemConfig.model_validate({**raw, **BIG_CELL})
    samples = np.full(k, 400)
    a = simulate_async(plain, cfg, client_samples=samples, payload=MB, work_fraction=0.5, steps=5, seed=case)
    b = simulate_async(cells, cfg, client_samples=samples, payload=MB, work_fraction=0.5, steps=5, seed=case)
    pd.testing.assert_frame_equal(a.steps, b.steps, rtol=1e-9)
    pd.testing.assert_frame_equal(a.updates, b.updates, rtol=1e-9)


def test_sessions_drop_offline_clients(tmp_path):
    """Client 1 is online only in [0, 5) s: its first update (6 s) is dropped ``offline``
    at 5 s, and it is never selected again; client 0 carries every step."""
    system = trace_system(tmp_path, [("8 Mbps", "8 Mbps", 0, 2), ("8 Mbps", "8 Mbps", 0, 2)])
    (tmp_path / "sessions.csv").write_text("client_id,start_s,end_s\n0,0,1000\n1,0,5\n")
    raw = system.model_dump()
    raw["clients"]["sessions"] = "sessions.csv"
    system = SystemConfig.model_validate(raw)
    s = run(system, AsyncConfig(concurrency=2, buffer_size=1), 2, 3, tmp_path)
    c1 = s.updates[s.updates["client_id"] == 1]
    assert c1["reason"].tolist() == ["offline"] and c1["end_s"].tolist() == [5.0]
    assert c1["compute_s"].tolist() == [4.0]
    assert s.steps["time_s"].tolist() == [6.0, 12.0, 18.0]


# ------------------------------------------------------------------ config and errors

def test_config_and_weights():
    assert staleness_weight(3, "fedbuff") == 0.5 and staleness_weight(7, "constant") == 1.0
    with pytest.raises(ValueError, match="staleness"):
        staleness_weight(-1, "fedbuff")
    assert MethodConfig(kind="original").asynchronous is None
    method = MethodConfig.model_validate({"kind": "original", "asynchronous": {"concurrency": 20, "buffer_size": 10}})
    assert method.asynchronous == AsyncConfig(concurrency=20, buffer_size=10, staleness="fedbuff", server_lr=1.0)
    for bad in ({"concurrency": 0, "buffer_size": 1}, {"concurrency": 2, "buffer_size": 1, "staleness": "poly"},
                {"concurrency": 2}, {"concurrency": 2, "buffer_size": 1, "server_lr": 0},
                {"concurrency": 2.5, "buffer_size": 1}, {"concurrency": 2, "buffer_size": 1, "extra": 1}):
        with pytest.raises(ValueError):
            AsyncConfig.model_validate(bad)


def test_scenario_error_names_the_key(tmp_path):
    from fedsim import config
    from fedsim.errors import InputError

    path = tmp_path / "s.yaml"
    path.write_text("methods:\n  fedbuff:\n    kind: original\n    asynchronous: {concurrency: 0, buffer_size: 2}\n")
    with pytest.raises(InputError, match=r"methods\.fedbuff\.asynchronous\.concurrency"):
        config.load(path)


def test_bad_arguments():
    system = SystemConfig()
    with pytest.raises(ValueError, match="concurrency: 4 exceeds the 3 clients"):
        simulate_async(system, AsyncConfig(concurrency=4, buffer_size=1), client_samples=np.full(3, 10),
                       payload=MB, work_fraction=1.0, steps=1, seed=0)
    deadline = SystemConfig.model_validate({"rounds": {"deadline": "1 s"}})
    with pytest.raises(ValueError, match="without a server step"):
        simulate_async(deadline, AsyncConfig(concurrency=1, buffer_size=1), client_samples=np.full(2, 400),
                       payload=MB, work_fraction=1.0, steps=1, seed=0)


def test_bench_async_figures():
    """The bench runs (tiny scale, two repeats) and reports, per case, the best
    and the median steady-state rate (best >= median > 0), the set-up cost and
    the updates; no speed is asserted here (targets belong to ``fedsim bench``,
    whose figures docs/performance.md quotes)."""
    from fedsim.bench.asynchronous import bench_async

    figures = bench_async(scale=0.002, repeats=2)
    names = ("async", "async_contended", "async_dynamic")
    rates = [f"{name}_updates_per_{unit}" for name in names for unit in ("s", "cpu_s")]
    assert set(figures) == ({*rates, *(f"{rate}_median" for rate in rates)}
                            | {f"{name}_{what}" for name in names for what in ("setup_ms", "updates")})
    for rate in rates:
        assert figures[rate] >= figures[f"{rate}_median"] > 0
    for name in names:
        assert figures[f"{name}_setup_ms"] >= 0 and figures[f"{name}_updates"] >= 20


def test_steady_rate_removes_the_fixed_cost():
    """Two runs of 0.3 s + 1 µs per update: the difference gives 1e6 updates/s
    and the short run's remainder the 0.3 s set-up; a long run that is not
    longer is refused."""
    from fedsim.bench.asynchronous import steady_rate

    wall, cpu, setup = steady_rate((0.3 + 100_000e-6, 0.3 + 100_000e-6, 100_000), (0.3 + 1_000e-6, 0.3 + 1_000e-6,
                                                                                  1_000))
    assert wall == pytest.approx(1e6) and cpu == pytest.approx(1e6) and setup == pytest.approx(0.3)
    with pytest.raises(ValueError, match="more updates"):
        steady_rate((1.0, 1.0, 10), (0.5, 0.5, 10))


def test_time_varying_link(tmp_path):
    """A bandwidth trace: 8 Mbps, from 0.5 s on 4 Mbps down (docs/network-model.md's
    example): the first 1 MB download ends at 1.5 s, compute 8 s, upload 1 s at 8 Mbps:
    step 1 at 10.5 s. The next download, at 4 Mbps throughout, takes 2 s: step 2 at 21.5 s."""
    (tmp_path / "bw.csv").write_text("client_id,t_s,downlink_mbps,uplink_mbps\n0,0,8,8\n0,0.5,4,8\n")
    system = SystemConfig.model_validate({
        "clients": {"dynamics": {"model": "trace", "trace": "bw.csv"}},
        "compute": {"t_comp_full": "8 s", "reference_samples": 400}})
    s = run(system, AsyncConfig(concurrency=1, buffer_size=1), 1, 2, tmp_path)
    assert s.updates["download_end_s"].tolist() == pytest.approx([1.5, 12.5])
    assert s.steps["time_s"].tolist() == pytest.approx([10.5, 21.5])


def test_max_staleness_discards(tmp_path):
    """Clients of 4 s and 10 s updates (see the three-client case), C = 2, M = 1,
    max_staleness 1: the slow client's v0 update arrives at 10 s after steps at 4 and 8
    (it would have staleness 2) and is discarded as ``stale``; its v2 update, started
    at 10 s, arrives at 20 s after steps at 12, 16 and 20: staleness 2 again -> stale."""
    system = trace_system(tmp_path, [("8 Mbps", "8 Mbps", 0, 1), ("8 Mbps", "8 Mbps", 0, 4)])
    s = run(system, AsyncConfig(concurrency=2, buffer_size=1, max_staleness=1), 2, 5, tmp_path)
    slow = s.updates[s.updates["client_id"] == 0]
    assert slow["reason"].tolist() == ["stale", "stale"]
    assert slow["arrive_s"].tolist() == [10.0, 20.0] and slow["step"].tolist() == [-1, -1]
    assert s.steps["time_s"].tolist() == [4.0, 8.0, 12.0, 16.0, 20.0]


def test_scenario_refuses_more_concurrency_than_clients(tmp_path):
    from fedsim import config
    from fedsim.errors import InputError

    path = tmp_path / "s.yaml"
    path.write_text("data:\n  partition: {scheme: iid, num_clients: 10}\nmethods:\n  fedbuff:\n"
                    "    kind: original\n    asynchronous: {concurrency: 11, buffer_size: 2}\n")
    with pytest.raises(InputError, match=r"s\.yaml.*methods\.fedbuff\.asynchronous\.concurrency: 11 exceeds "
                                         r"the 10 clients"):
        config.load(path)
    path.write_text(path.read_text().replace("concurrency: 11", "concurrency: 10"))
    assert config.load(path).methods["fedbuff"].asynchronous.concurrency == 10
