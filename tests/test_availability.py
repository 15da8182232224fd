"""Availability from on/off sessions: the CSV reader, the diurnal generator, the
simulation's ``offline`` drops (hand-computed), the cache keys, and bad input."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
import pytest

from fedsim import cli, config
from fedsim.errors import InputError
from fedsim.pipeline import keys
from fedsim.system import Payload, SystemConfig, simulate
from fedsim.system.availability import (
    Sessions,
    generate_diurnal,
    online_probability,
    read_sessions,
    stop_flows,
)
from fedsim.system.availability_spec import DiurnalSpec
from fedsim.system.links import fluid_schedule

MB = Payload(down_bytes=1_000_000, up_bytes=1_000_000)  # 8 Mbit each way
TINY = Path(__file__).parent / "scenarios" / "tiny.yaml"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the table and the reader


def test_reader_queries_and_joins(tmp_path):
    path = write(tmp_path / "s.csv", "end_s,client_id,start_s\n10,0,0\n20 s,0,10\n1 min,0,50\n"
                                     "\n2 h,2,1 h\n")
    sessions = read_sessions(path, 3)
    # client 0: [0,10) and [10,20) touch, so one session [0, 20); then [50, 60)
    assert sessions.frame_rows() == [(0, 0.0, 20.0), (0, 50.0, 60.0), (2, 3600.0, 7200.0)]
    assert sessions.online(0.0).tolist() == [True, False, False]
    assert sessions.online(20.0).tolist() == [False, False, False]  # intervals are [start, end)
    assert sessions.online(3600.0).tolist() == [False, False, True]
    assert sessions.session_end(5.0, np.array([0, 1])).tolist() == [20.0, 5.0]  # 1 is offline
    assert sessions.session_end(55.0, np.array([0])).tolist() == [60.0]
    assert not sessions.online(1e9).any()  # after the trace: offline


@pytest.mark.parametrize(("rows", "where"), [
    ("0,10,20\n0,15,30\n", "line 3, column start_s: client 0's interval starts at 15 s, before its "
                           "interval of line 2 ends (20 s)"),
    ("0,10,20\n0,0,5\n", "line 3, column start_s"),  # out of order
    ("0,-1,5\n", "line 2, column start_s: '-1' must be a finite time >= 0 s"),
    ("1,0,nan\n", "line 2, column end_s"),
    ("0,5,5\n", "line 2, column end_s: '5' must be after start_s '5'"),
    ("7,0,5\n", "line 2, column client_id: unknown client 7; the scenario has clients 0..3"),
    ("x,0,5\n", "line 2, column client_id: 'x' is not an integer"),
    ("0,0,5 Mbps\n", "line 2, column end_s"),
    ("0,0\n", "line 2: 2 cells, expected 3"),
])
def test_reader_names_file_line_and_column(tmp_path, rows, where):
    path = write(tmp_path / "bad.csv", "client_id,start_s,end_s\n" + rows)
    with pytest.raises(InputError) as err:
        read_sessions(path, 4)
    assert f"system.clients.sessions {str(path)!r} {where}" in str(err.value)


def test_reader_header_and_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"line 1: header 'client,start_s,end_s'"):
        read_sessions(write(tmp_path / "h.csv", "client,start_s,end_s\n"), 2)
    with pytest.raises(InputError, match="cannot read the file"):
        read_sessions(tmp_path / "none.csv", 2)


# --------------------------------------------------------------------------- the diurnal generator


def test_diurnal_follows_the_time_of_day():
    """Online fractions of 3000 clients track p(t) = 0.5 + 0.3 cos(2 pi t / day):
    the chain's stationary probability, lagging a little where p moves fastest."""
    spec = DiurnalSpec(mean=0.5, amplitude=0.3, session="30 min")
    sessions = generate_diurnal(spec, 3000, seed=1)
    for hours in (0, 6, 12, 18, 24, 36):
        p = float(online_probability(spec, np.array([hours * 3600.0]), np.zeros(1))[0])
        assert abs(sessions.online(hours * 3600.0).mean() - p) < 0.04, hours
    lengths = sessions.end_s - sessions.start_s
    finished = lengths[sessions.end_s < sessions.horizon_s]
    assert 1500 < finished.mean() < 1900  # exponential sessions of mean 1800 s


def test_diurnal_is_seeded_and_independent_of_how_far_ahead():
    spec = DiurnalSpec(mean=0.4, amplitude=0.2, session="1 h", spread="24 h")
    a, b = generate_diurnal(spec, 50, seed=3), generate_diurnal(spec, 50, seed=3)
    for t in (0.0, 5e3, 9e4, 2e5):  # a step by step, b at the end at once
        a.online(t)
    b.online(2e5)
    assert a.frame_rows() == b.frame_rows()
    assert generate_diurnal(spec, 50, seed=4).frame_rows() != a.frame_rows()
    # a session that runs past the generated days is followed into the next ones
    on = np.flatnonzero(b.online(1000.0))
    ends = b.session_end(1000.0, on)
    assert (ends > 1000.0).all() and not b.online(float(ends.max())).tolist()[on[ends.argmax()]]


def test_diurnal_settings_are_checked():
    with pytest.raises(ValueError, match="mean - amplitude >= 0 and mean \\+ amplitude < 1"):
        DiurnalSpec(mean=0.8, amplitude=0.2)
    with pytest.raises(ValueError, match="peak"):
        DiurnalSpec(peak="25 h")
    with pytest.raises(ValueError, match="model: 'weekly' is unknown"):
        SystemConfig.model_validate({"clients": {"sessions": {"model": "weekly"}}})


# --------------------------------------------------------------------------- simulation, by hand


def two_clients(tmp_path, sessions: str, rounds: int = 1):
    """Two clients with 20 Mbps down / 1 Mbps up links, rtt 0, 10 s of compute,
    a 10 Mbps egress; 1 MB each way."""
    write(tmp_path / "sessions.csv", "client_id,start_s,end_s\n" + sessions)
    system = SystemConfig.model_validate({
        "clients": {"downlink": "20 Mbps", "uplink": "1 Mbps", "sessions": "sessions.csv"},
        "server": {"downlink": "10 Mbps"},
    })
    return simulate(system, client_samples=np.array([400, 400]), payload=MB, work_fraction=1.0,
                    rounds=rounds, seed=0, base_dir=tmp_path)


def row(result, client, round_num=1):
    t = result.timeline
    return t[(t["round"] == round_num) & (t["client_id"] == client)].iloc[0]


def test_offline_during_download_frees_the_link(tmp_path):
    # both download at 5 Mbps (L = 5); client 1 leaves at 0.8 s having 4 Mbit = 500 kB;
    # client 0 then runs alone at 10 Mbps: 4 Mbit in 0.4 s -> holds the model at 1.2 s,
    # computes to 11.2 s, uploads 8 Mbit at 1 Mbps -> 19.2 s.
    result = two_clients(tmp_path, "0,0,100\n1,0,0.8\n1,19.2,30\n", rounds=2)
    c0, c1 = row(result, 0), row(result, 1)
    assert (c0.drop_reason, c0.kept) == ("", True)
    assert c0.download_end_s == pytest.approx(1.2) and c0.upload_end_s == pytest.approx(19.2)
    assert (c1.drop_reason, c1.kept, c1.selected) == ("offline", False, True)
    assert c1.download_end_s == pytest.approx(0.8) and c1.down_bytes == pytest.approx(500_000)
    assert c1.compute_s == 0 and math.isnan(c1.compute_start_s) and c1.up_bytes == 0
    first = result.rounds.iloc[0]
    assert first.duration_s == pytest.approx(19.2) and first.participants == 1
    assert first.round_bytes == pytest.approx(2_000_000 + 500_000)
    # round 2 starts at 19.2 s, when client 1's next session [19.2, 30) begins: both
    # download at 5 Mbps to 20.8 s; client 1 leaves at 30 s, 9.2 s into its computation
    second = result.rounds.iloc[1]
    assert second.available == 2 and second.participants == 1
    assert row(result, 1, 2).drop_reason == "offline"
    assert row(result, 1, 2).compute_s == pytest.approx(9.2)
    assert second.duration_s == pytest.approx(1.6 + 10 + 8)


def test_offline_during_compute_and_upload(tmp_path):
    # both download at 5 Mbps to 1.6 s; client 0 computes to 11.6 s and leaves at 15 s
    # while uploading: 3.4 Mbit = 425 kB sent,
    # all 10 s of compute spent; client 1 leaves at 5 s, 3.4 s into its computation
    result = two_clients(tmp_path, "0,0,15\n1,0,5\n")
    c0, c1 = row(result, 0), row(result, 1)
    assert (c0.drop_reason, c1.drop_reason) == ("offline", "offline")
    assert c0.compute_s == pytest.approx(10.0) and c0.up_bytes == pytest.approx(425_000)
    assert c0.upload_end_s == pytest.approx(15.0)
    assert c1.compute_s == pytest.approx(3.4) and c1.compute_end_s == pytest.approx(5.0)
    assert c1.download_end_s == pytest.approx(1.6) and c1.up_bytes == 0
    first = result.rounds.iloc[0]
    assert first.participants == 0 and first.duration_s == pytest.approx(15.0)
    assert result.participation[0].tolist() == []


def test_offline_at_the_round_start_is_unavailable(tmp_path):
    result = two_clients(tmp_path, "0,0,100\n")  # client 1 is never online
    assert row(result, 1).drop_reason == "unavailable" and not row(result, 1).selected
    assert result.rounds.iloc[0].available == 1
    assert row(result, 0).download_end_s == pytest.approx(0.8)  # alone: 10 Mbps


def test_stop_flows_matches_a_hand_schedule():
    # 3 flows of 8 Mbit on 12 Mbps: 4 Mbps each; flow 2 stops at 1 s (4 Mbit sent), the
    # other two then get 6 Mbps: 4 Mbit left at 6 Mbps -> end at 1 + 2/3 s
    start, size, cap = np.zeros(3), np.full(3, 1e6), np.full(3, 1e9)
    sched = fluid_schedule(start, size, cap, 12e6)
    cut, stopped = stop_flows(sched, np.array([math.inf, 5.0, 1.0]),
                              lambda s: fluid_schedule(start, s, cap, 12e6))
    assert stopped.tolist() == [False, False, True]
    assert cut.end_s.tolist() == pytest.approx([1 + 2 / 3, 1 + 2 / 3, 1.0])
    assert cut.size_bytes[2] == pytest.approx(500_000)


def test_no_sessions_draws_nothing_new():
    table = Sessions(2, np.array([0]), np.array([0.0]), np.array([1.0]))
    assert table.online(0.5).tolist() == [True, False]
    system = SystemConfig.model_validate({"clients": {"downlink": "20 Mbps"}})
    assert system.clients.sessions is None and not system.timing_decides_participation()


# --------------------------------------------------------------------------- keys and the command line


def test_keys_follow_the_session_file(tmp_path):
    scenario = config.load(TINY)
    before = keys.system_facts(scenario, TINY.parent)
    assert "sessions_sha256" not in before  # no sessions: the facts of today
    write(tmp_path / "s.csv", "client_id,start_s,end_s\n0,0,100\n")
    with_file = config.load(TINY, ["system.clients.sessions=s.csv"])
    facts = keys.system_facts(with_file, tmp_path)
    assert len(facts["sessions_sha256"]) == 64
    assert not keys.everyone_every_round(with_file)
    assert keys.participation_facts(with_file, tmp_path)["system"] == facts
    write(tmp_path / "s.csv", "client_id,start_s,end_s\n0,0,101\n")
    assert keys.system_facts(with_file, tmp_path)["sessions_sha256"] != facts["sessions_sha256"]
    diurnal = config.load(TINY, ["system.clients.sessions.model=diurnal"])
    assert config.section_key(diurnal.system)["clients"]["sessions"] == {"model": "diurnal"}


def test_bad_session_file_exits_2_before_any_stage(tmp_path, monkeypatch, capsys):
    run = importlib.import_module("fedsim.pipeline.runner")  # a lazy package: load it here

    def no_stage(*args, **kwargs):
        raise AssertionError("a stage ran")

    monkeypatch.setattr(run, "prepare_data", no_stage)
    scenario = write(tmp_path / "tiny.yaml", TINY.read_text())
    write(tmp_path / "s.csv", "client_id,start_s,end_s\n0,5,1\n")
    code = cli.main(["scenario", str(scenario), "--out", str(tmp_path / "out"), "--quiet",
                     "--set", "system.clients.sessions=s.csv"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"'{tmp_path / 's.csv'}' line 2, column end_s: '1' must be after start_s '5'" in err
