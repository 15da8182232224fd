"""The SimPy rounds: the worked example of docs/network-model.md, dropout,
availability, selection, and the timeline's contract."""

import math

import numpy as np
import pandas as pd
import pytest

from fedsim import seeding
from fedsim.system import (
    SIM_ROUND_COLUMNS,
    TIMELINE_COLUMNS,
    Payload,
    SystemConfig,
    load_result,
    save_result,
    simulate,
)

TRACE = """client_id,downlink,uplink,rtt,speed,availability
0,2 Mbps,1 Mbps,100 ms,1,1
1,20 Mbps,5 Mbps,200 ms,2,1
2,20 Mbps,5 Mbps,0 ms,1,1
"""
MB = Payload(down_bytes=1_000_000, up_bytes=1_000_000)  # 8 Mbit each way


def worked_example(tmp_path, **rounds):
    """docs/network-model.md: 3 clients, 10 Mbps egress, 5 Mbps ingress."""
    (tmp_path / "profiles.csv").write_text(TRACE)
    system = SystemConfig.model_validate({
        "clients": {"trace": "profiles.csv"},
        "server": {"downlink": "10 Mbps", "uplink": "5 Mbps", "aggregation": "0.5 s"},
        "rounds": rounds,
        "compute": {"t_comp_full": "10 s", "reference_samples": 400},
    })
    return simulate(system, client_samples=np.array([400, 400, 800]), payload=MB,
                    work_fraction=0.5, rounds=2, seed=0, base_dir=tmp_path)


def phases(result, round_num=1):
    """(client, reason, download_end, compute_end, upload_end, up_bytes) of a round."""
    rows = result.timeline[result.timeline["round"] == round_num]
    return [
        (r.client_id, r.drop_reason, round(r.download_end_s, 9), round(r.compute_end_s, 9),
         round(r.upload_end_s, 9), round(r.up_bytes, 6))
        for r in rows.itertuples()
    ]


def test_worked_example_without_deadline(tmp_path):
    result = worked_example(tmp_path)
    # downloads: 2 + 2L = 10 -> L = 4 Mbps; clients 1, 2 done at 8/4 = 2 s, client 0 keeps
    # its 2 Mbps cap to 8/2 = 4 s; + rtt/2. compute = 10 s * 0.5 * samples/400 / speed.
    # uploads reach the ingress rtt/2 after the computation ends: client 1 alone 4.7-6.3
    # at its 5 Mbps cap; client 0 from 9.1 at its 1 Mbps cap to 17.1; client 2 (rtt 0)
    # from 12.0 shares 5 Mbps with it: 1 + L = 5, 4 Mbps, 8 Mbit in 2 s.
    assert phases(result) == [
        (0, "", 4.05, 9.05, 17.1, 1e6),
        (1, "", 2.1, 4.6, 6.3, 1e6),
        (2, "", 2.0, 12.0, 14.0, 1e6),
    ]
    first = result.rounds.iloc[0]
    assert (first["start_s"], first["end_s"]) == (0.0, pytest.approx(17.6))
    assert result.rounds["start_s"].iloc[1] == first["end_s"]
    assert first["round_bytes"] == 6e6
    assert first["mean_compute_s"] == pytest.approx(17.5 / 3)
    assert first["max_compute_s"] == 10.0
    assert first["mean_download_s"] == pytest.approx(8.15 / 3)
    assert first["mean_upload_s"] == pytest.approx(11.75 / 3)
    assert first["mean_wait_s"] == pytest.approx((0.5 + 11.3 + 3.6) / 3)
    assert [ids.tolist() for ids in result.participation] == [[0, 1, 2], [0, 1, 2]]


def test_a_deadline_drops_the_straggler_and_counts_its_partial_upload(tmp_path):
    result = worked_example(tmp_path, deadline="15 s")
    # client 0's upload reaches the ingress at 9.05 + 0.05 s: it has crossed it for
    # (15 - 9.1) s * 1 Mbps = 5.9 Mbit = 737,500 B when the deadline cuts it
    assert phases(result) == [
        (0, "deadline", 4.05, 9.05, 15.0, 737_500.0),
        (1, "", 2.1, 4.6, 6.3, 1e6),
        (2, "", 2.0, 12.0, 14.0, 1e6),
    ]
    first = result.rounds.iloc[0]
    assert first["end_s"] == pytest.approx(15.5)  # the deadline + aggregation
    assert first["round_bytes"] == 3e6 + 2e6 + 737_500
    assert first["participants"] == 2 and first["selected"] == 3
    assert first["mean_compute_s"] == 6.25  # over the participants only
    assert [ids.tolist() for ids in result.participation] == [[1, 2], [1, 2]]
    assert result.rounds["start_s"].iloc[1] == pytest.approx(15.5)


def test_overcommit_keeps_the_first_to_deliver(tmp_path):
    # m = 2, select ceil(2 * 1.5) = 3: clients 1 (6.3 s) and 2 (14.0 s) deliver first
    result = worked_example(tmp_path, participation=2, overcommit=0.5)
    assert phases(result) == [
        (0, "overcommit", 4.05, 9.05, 14.0, 612_500.0),  # (14 - 9.1) Mbit on the ingress when cut
        (1, "", 2.1, 4.6, 6.3, 1e6),
        (2, "", 2.0, 12.0, 14.0, 1e6),
    ]
    assert result.rounds["end_s"].iloc[0] == pytest.approx(14.5)
    assert [ids.tolist() for ids in result.participation] == [[1, 2], [1, 2]]


def test_a_deadline_during_the_download_cuts_it(tmp_path):
    # at 3 s client 0 has 6 of its 8 Mbit (2 Mbps); the others are computing
    result = worked_example(tmp_path, deadline="3 s")
    rows = result.timeline[result.timeline["round"] == 1].set_index("client_id")
    assert rows.loc[0, "down_bytes"] == 750_000.0
    assert rows.loc[0, "download_end_s"] == 3.0
    assert math.isnan(rows.loc[0, "compute_start_s"]) and rows.loc[0, "compute_s"] == 0.0
    assert rows.loc[1, "compute_s"] == pytest.approx(0.9)  # from 2.1 s to 3 s
    assert rows.loc[2, "compute_s"] == pytest.approx(1.0)
    assert rows["drop_reason"].tolist() == ["deadline"] * 3
    assert math.isnan(rows.loc[1, "upload_start_s"])
    assert result.participation[0].size == 0
    first = result.rounds.iloc[0]
    assert first["participants"] == 0 and first["duration_s"] == pytest.approx(3.5)
    assert (first["mean_compute_s"], first["mean_wait_s"]) == (0.0, first["duration_s"])


def uniform_clients(n_clients, **rounds):
    return SystemConfig.model_validate({
        "clients": {"downlink": "20 Mbps", "uplink": "5 Mbps", "rtt": "40 ms"},
        "server": {"downlink": "50 Mbps", "uplink": "20 Mbps"},
        "rounds": rounds,
    })


def test_dropouts_quit_during_training_at_the_drawn_moment():
    n, seed = 8, 3
    result = simulate(uniform_clients(n, dropout=0.4), client_samples=np.full(n, 400), payload=MB,
                      work_fraction=0.25, rounds=3, seed=seed)
    for round_num in (1, 2, 3):
        stream = seeding.rng(seed, "round", round_num, "dropout")
        quits = stream.random(n) < 0.4
        moment = stream.random(n)
        rows = result.timeline[result.timeline["round"] == round_num]
        assert (rows["drop_reason"] == "dropout").tolist() == quits.tolist()
        dropped = rows[quits]
        assert dropped["compute_s"].to_numpy() == pytest.approx(moment[quits] * 2.5)
        assert (dropped["up_bytes"] == 0).all() and dropped["upload_start_s"].isna().all()
        assert (dropped["down_bytes"] == 1e6).all()
        assert result.participation[round_num - 1].tolist() == np.flatnonzero(~quits).tolist()


def test_availability_and_selection_draws():
    n, seed = 20, 11
    system = SystemConfig.model_validate({
        "clients": {"availability": {"dist": "uniform", "low": 0.3, "high": 0.9}},
        "rounds": {"participation": 0.25},
    })
    result = simulate(system, client_samples=np.full(n, 400), payload=MB, work_fraction=1.0,
                      rounds=4, seed=seed)
    availability = seeding.rng(seed, "profile", "availability").uniform(0.3, 0.9, n)
    assert result.profiles.availability.tolist() == availability.tolist()
    for round_num in range(1, 5):
        available = seeding.rng(seed, "round", round_num, "availability").random(n) < availability
        rows = result.timeline[result.timeline["round"] == round_num]
        assert (rows["drop_reason"] == "unavailable").tolist() == (~available).tolist()
        assert not rows.loc[rows["drop_reason"] == "unavailable", "selected"].any()
        selected = rows[rows["selected"]]
        assert len(selected) == min(5, available.sum())
        assert available[selected["client_id"]].all()
        assert selected["kept"].all()  # infinite links, no deadline: all selected are kept
        assert (rows.loc[~rows["selected"], ["down_bytes", "up_bytes", "compute_s"]] == 0).all().all()
        assert result.rounds["available"].iloc[round_num - 1] == available.sum()


def test_paper_idealised_round_is_compute_only():
    # infinite links, no latency, identical devices: every round lasts t_comp * P_R
    result = simulate(SystemConfig(), client_samples=np.full(100, 400), payload=MB,
                      work_fraction=0.107, rounds=3, seed=0)
    assert result.rounds["duration_s"].tolist() == [10 * 0.107] * 3
    assert result.rounds["round_bytes"].tolist() == [2e8] * 3
    assert (result.timeline["kept"]).all() and len(result.timeline) == 300


def test_first_round_carries_the_mask():
    payload = Payload(down_bytes=1000, up_bytes=1000, first_round_extra_bytes=250)
    result = simulate(SystemConfig(), client_samples=np.full(4, 400), payload=payload,
                      work_fraction=1.0, rounds=2, seed=0)
    assert result.rounds["down_bytes"].tolist() == [4 * 1250.0, 4 * 1000.0]
    assert result.rounds["up_bytes"].tolist() == [4000.0, 4000.0]


def test_columns_dtypes_and_save_load_round_trip(tmp_path):
    result = simulate(uniform_clients(5, dropout=0.3, deadline="9 s"), client_samples=np.full(5, 300),
                      payload=MB, work_fraction=0.5, rounds=3, seed=1)
    assert tuple(result.timeline.columns) == TIMELINE_COLUMNS
    assert tuple(result.rounds.columns) == SIM_ROUND_COLUMNS
    timeline = result.timeline
    assert timeline["round"].dtype == np.int64 and timeline["client_id"].dtype == np.int64
    assert timeline["selected"].dtype == bool and timeline["kept"].dtype == bool
    assert set(timeline["drop_reason"]) <= {"", "unavailable", "dropout", "deadline", "overcommit"}
    save_result(result, tmp_path / "system")
    loaded = load_result(tmp_path / "system")
    pd.testing.assert_frame_equal(loaded.timeline, result.timeline, check_dtype=False)
    pd.testing.assert_frame_equal(loaded.rounds, result.rounds)
    assert [p.tolist() for p in loaded.participation] == [p.tolist() for p in result.participation]
    assert loaded.profiles.uplink_bps.tolist() == result.profiles.uplink_bps.tolist()


def test_bad_arguments():
    with pytest.raises(ValueError, match="client_samples"):
        simulate(SystemConfig(), client_samples=np.array([]), payload=MB, work_fraction=1.0,
                 rounds=1, seed=0)
    with pytest.raises(ValueError, match="rounds"):
        simulate(SystemConfig(), client_samples=np.full(2, 1), payload=MB, work_fraction=1.0,
                 rounds=0, seed=0)
    with pytest.raises(ValueError, match="work_fraction"):
        simulate(SystemConfig(), client_samples=np.full(2, 1), payload=MB, work_fraction=-0.1,
                 rounds=1, seed=0)
