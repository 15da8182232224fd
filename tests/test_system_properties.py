"""Invariants of the simulated rounds over random profiles and policies (hypothesis)."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.system import Payload, SystemConfig, simulate

bandwidths = st.one_of(
    st.just("inf"),
    st.builds(lambda mbps: f"{mbps} Mbps", st.floats(0.5, 50).map(lambda x: round(x, 2))),
    st.builds(
        lambda mbps, sigma: {"dist": "lognormal", "median": f"{mbps} Mbps", "sigma": sigma},
        st.floats(0.5, 50).map(lambda x: round(x, 2)),
        st.floats(0, 1.5),
    ),
)
capacities = st.one_of(st.just("inf"), st.floats(1, 100).map(lambda x: f"{round(x, 2)} Mbps"))
scenarios = st.fixed_dictionaries({
    "clients": st.fixed_dictionaries({
        "downlink": bandwidths,
        "uplink": bandwidths,
        "rtt": st.one_of(st.just("0 s"), st.builds(
            lambda lo, extra: {"dist": "uniform", "low": f"{lo} ms", "high": f"{lo + extra} ms"},
            st.integers(0, 100), st.integers(0, 200))),
        "speed": st.one_of(st.just(1.0), st.builds(
            lambda std: {"dist": "normal", "mean": 1.0, "std": std, "min": 0.2, "max": 3.0},
            st.floats(0, 0.8))),
        "availability": st.sampled_from([1.0, 0.9, 0.5]),
    }),
    "server": st.fixed_dictionaries({
        "downlink": capacities, "uplink": capacities,
        "aggregation": st.sampled_from(["0 s", "0.5 s"]),
    }),
    "rounds": st.fixed_dictionaries({
        "participation": st.sampled_from([1.0, 0.5, 2]),
        "overcommit": st.sampled_from([0.0, 0.5]),
        "deadline": st.sampled_from([None, "2 s", "8 s", "30 s"]),
        "dropout": st.sampled_from([0.0, 0.2]),
    }),
})
cases = st.tuples(
    scenarios,
    st.integers(1, 6),  # clients
    st.integers(1, 3),  # rounds
    st.integers(0, 2**16),  # seed
    st.sampled_from([(250_000, 250_000, 0), (1_066_440, 1_066_440, 33_275), (0, 10, 0)]),
)


def run(case):
    raw, n_clients, rounds, seed, (down, up, extra) = case
    system = SystemConfig.model_validate(raw)
    payload = Payload(down_bytes=down, up_bytes=up, first_round_extra_bytes=extra)
    samples = np.arange(n_clients) * 100 + 200
    result = simulate(system, client_samples=samples, payload=payload, work_fraction=0.3,
                      rounds=rounds, seed=seed)
    return system, payload, samples, result


@settings(max_examples=80, deadline=None)
@given(cases)
def test_bytes_are_conserved(case):
    _, payload, _, result = run(case)
    timeline, rounds = result.timeline, result.rounds
    per_round = timeline.groupby("round")[["down_bytes", "up_bytes"]].sum()
    assert np.allclose(per_round["down_bytes"].to_numpy(), rounds["down_bytes"].to_numpy())
    assert np.allclose(per_round["up_bytes"].to_numpy(), rounds["up_bytes"].to_numpy())
    assert (rounds["round_bytes"] == rounds["down_bytes"] + rounds["up_bytes"]).all()
    full_down = np.where(timeline["round"] == 1, payload.down_bytes_in_round(1), payload.down_bytes)
    kept = timeline["kept"].to_numpy()
    assert (timeline["down_bytes"].to_numpy()[kept] == full_down[kept]).all()
    assert (timeline.loc[kept, "up_bytes"] == payload.up_bytes).all()
    assert (timeline["down_bytes"] <= full_down * (1 + 1e-12)).all()
    assert (timeline["up_bytes"] <= payload.up_bytes * (1 + 1e-12)).all()
    assert (timeline[["down_bytes", "up_bytes", "compute_s"]] >= 0).all().all()
    idle = ~timeline["selected"]
    assert (timeline.loc[idle, ["down_bytes", "up_bytes", "compute_s"]] == 0).all().all()


@settings(max_examples=80, deadline=None)
@given(cases)
def test_the_clock_never_goes_back(case):
    _, _, _, result = run(case)
    rounds = result.rounds
    assert rounds["start_s"].iloc[0] == 0.0
    assert (rounds["start_s"].to_numpy()[1:] == rounds["end_s"].to_numpy()[:-1]).all()
    assert (rounds["duration_s"] >= 0).all()
    assert np.allclose(rounds["end_s"], rounds["start_s"] + rounds["duration_s"], rtol=1e-12)
    timeline = result.timeline.merge(rounds[["round", "start_s", "end_s"]], on="round")
    order = ["start_s", "download_start_s", "download_end_s", "compute_start_s", "compute_end_s",
             "upload_start_s", "upload_end_s", "end_s"]
    times = timeline[order].to_numpy()
    for row in times[timeline["selected"].to_numpy()]:
        reached = row[~np.isnan(row)]
        assert (np.diff(reached) >= -1e-9).all(), row


@settings(max_examples=80, deadline=None)
@given(cases)
def test_a_round_lasts_at_least_its_slowest_kept_client_alone(case):
    system, payload, samples, result = run(case)
    profiles = result.profiles
    compute_s = (system.compute.t_comp_full * 0.3 * samples / system.compute.reference_samples
                 / profiles.speed)
    for round_num, ids in enumerate(result.participation, start=1):
        duration = result.rounds["duration_s"].iloc[round_num - 1]
        down = payload.down_bytes_in_round(round_num) * 8
        with np.errstate(divide="ignore"):
            alone = (down / profiles.downlink_bps[ids] + payload.up_bytes * 8 / profiles.uplink_bps[ids]
                     + profiles.rtt_s[ids] + compute_s[ids] + system.server.aggregation)
        assert (alone <= duration * (1 + 1e-9) + 1e-9).all()


@settings(max_examples=60, deadline=None)
@given(cases)
def test_policy_and_breakdown(case):
    system, _, samples, result = run(case)
    timeline, rounds = result.timeline, result.rounds
    m = system.rounds.kept_count(samples.size)
    for round_num, ids in enumerate(result.participation, start=1):
        rows = timeline[timeline["round"] == round_num]
        assert ids.tolist() == rows.loc[rows["kept"], "client_id"].tolist()
        assert len(ids) <= m
        assert rows.loc[rows["kept"], "drop_reason"].eq("").all()
        assert rows.loc[rows["selected"] & ~rows["kept"], "drop_reason"].ne("").all()
        if system.rounds.deadline is None:
            assert not rows["drop_reason"].eq("deadline").any()
        if system.rounds.overcommit == 0 and system.rounds.deadline is None:
            # without a cut, every selected client that did not quit is kept
            assert rows.loc[rows["selected"], "drop_reason"].isin(["", "dropout"]).all()
    parts = rounds[["mean_download_s", "mean_compute_s", "mean_upload_s", "mean_wait_s"]].sum(axis=1)
    assert np.allclose(parts, rounds["duration_s"], rtol=1e-9, atol=1e-9)
    assert (rounds["participants"] == [len(ids) for ids in result.participation]).all()


@settings(max_examples=25, deadline=None)
@given(cases)
def test_same_seed_same_timeline(case):
    first = run(case)[3]
    second = run(case)[3]
    pd.testing.assert_frame_equal(first.timeline, second.timeline)
    pd.testing.assert_frame_equal(first.rounds, second.rounds)


def test_infinite_everything_is_compute_only():
    # a sanity anchor for the properties above: infinite links, so the slowest
    # client's computation (400 samples: 10 s * 0.3 * 400 / 400) is the round
    _, _, samples, result = run(({}, 3, 2, 0, (100, 100, 0)))
    assert samples.tolist() == [200, 300, 400]
    assert result.rounds["duration_s"].tolist() == [3.0, 3.0]
