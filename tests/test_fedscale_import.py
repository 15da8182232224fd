"""`fedsim data import-traces`: FedScale-format pickles (made here, no download)
become fedsim's CSVs; a malicious or malformed pickle exits 2 and runs nothing;
the tiny scenario runs on the imported traces."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fedsim import cli
from fedsim.data.fedscale import REFERENCE_MS_PER_SAMPLE
from fedsim.system.availability import read_sessions
from fedsim.system.profiles import read_trace

TINY = Path(__file__).parent / "scenarios" / "tiny.yaml"
# FedScale's format: ms per sample (inference), kbit/s; online [active[i], inactive[i]]
DEVICE = {1: {"computation": 10.0, "communication": 2000.0},
          2: {"computation": 2.5, "communication": 10000.0}}
BEHAVE = {1: {"active": [0, 500], "inactive": [300, 900], "finish_time": 1000, "model": "x"},
          2: {"active": [100], "inactive": [2000], "finish_time": 1500}}


def dump(path: Path, data) -> Path:
    path.write_bytes(pickle.dumps(data))
    return path


def test_import_maps_fields_by_hand(tmp_path, capsys):
    device, behave = dump(tmp_path / "dev.pkl", DEVICE), dump(tmp_path / "beh.pkl", BEHAVE)
    code = cli.main(["data", "import-traces", "--device", str(device), "--behave", str(behave),
                     "--out", str(tmp_path / "out"), "--clients", "3", "--horizon", "2000 s"])
    assert code == 0, capsys.readouterr().err
    profiles = pd.read_csv(tmp_path / "out" / "profiles.csv")
    # client 2 reuses key 1 (round-robin); kbit = 1024 bits; speed = 5 ms / (3 x ms per sample)
    assert profiles["downlink"].tolist() == [2000 * 1024, 10000 * 1024, 2000 * 1024]
    assert profiles["uplink"].tolist() == profiles["downlink"].tolist()
    assert profiles["speed"].tolist() == pytest.approx([5 / 30, 5 / 7.5, 5 / 30])
    assert pytest.approx(5.0) == REFERENCE_MS_PER_SAMPLE
    assert (profiles["rtt"] == 0).all() and (profiles["availability"] == 1).all()
    sessions = pd.read_csv(tmp_path / "out" / "sessions.csv")
    # key 1 repeats every 1000 s up to 2000 s; key 2's [100, 2000] is clipped to F = 1500
    assert sessions.values.tolist() == [
        [0, 0, 300], [0, 500, 900], [0, 1000, 1300], [0, 1500, 1900],
        [1, 100, 1500], [1, 1600, 2000],
        [2, 0, 300], [2, 500, 900], [2, 1000, 1300], [2, 1500, 1900],
    ]
    # both files read back with fedsim's own readers
    assert read_trace(tmp_path / "out" / "profiles.csv", 3).downlink_bps[1] == 10000 * 1024
    assert read_sessions(tmp_path / "out" / "sessions.csv", 3).online(1550.0).tolist() == [True, False, True]


def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({1: {"computation": Evil(), "communication": 1.0}}))
    code = cli.main(["data", "import-traces", "--device", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert f"--device {str(bad)!r}: refused: the pickle names" in err and "system" in err
    assert not (tmp_path / "o" / "profiles.csv").exists()


@pytest.mark.parametrize(("which", "data", "message"), [
    ("--device", {1: {"computation": 1.0}}, "client 1: no field 'communication'"),
    ("--device", {1: {"computation": -1.0, "communication": 5.0}},
     "client 1, field 'computation': -1.0 must be > 0"),
    ("--device", [1, 2], "expected a non-empty dict"),
    ("--behave", {3: {"active": [0, 5], "inactive": [10, 20], "finish_time": 30}},
     "client 3, field 'active'[1]: 5 s is before 'inactive'[0] 10 s"),
    ("--behave", {3: {"active": [-1], "inactive": [10], "finish_time": 30}},
     "client 3, field 'active'[0]: -1.0 must be >= 0"),
    ("--behave", {3: {"active": [0], "inactive": [10, 20], "finish_time": 30}},
     "client 3: 1 'active' times but 2 'inactive' ones"),
    ("--behave", {3: {"active": [0], "inactive": ["x"], "finish_time": 30}},
     "client 3, field 'inactive'[0]: 'x' is not a number"),
])
def test_malformed_data_names_file_key_and_field(tmp_path, capsys, which, data, message):
    path = dump(tmp_path / "f.pkl", data)
    code = cli.main(["data", "import-traces", which, str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{which} {str(path)!r}, {message}" in err or f"{which} {str(path)!r}: {message}" in err


def test_not_a_pickle(tmp_path, capsys):
    path = tmp_path / "trunc.pkl"
    path.write_bytes(pickle.dumps(DEVICE)[:-5])
    assert cli.main(["data", "import-traces", "--device", str(path), "--out", str(tmp_path)]) == 2
    assert f"--device {str(path)!r}: not a readable pickle" in capsys.readouterr().err
    assert cli.main(["data", "import-traces", "--out", str(tmp_path)]) == 2
    assert "give --device, --behave or both" in capsys.readouterr().err


def test_tiny_scenario_runs_on_imported_traces(tmp_path, cache_root, tiny_path, capsys):
    device, behave = dump(tmp_path / "dev.pkl", DEVICE), dump(tmp_path / "beh.pkl", BEHAVE)
    assert cli.main(["data", "import-traces", "--device", str(device), "--behave", str(behave),
                     "--out", str(tmp_path), "--clients", "4", "--horizon", "1 d"]) == 0
    scenario = yaml.safe_load(tiny_path.read_text())
    scenario["system"]["clients"] = {"trace": "profiles.csv", "sessions": "sessions.csv"}
    scenario["methods"] = {"original": {}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(scenario))
    code = cli.main(["scenario", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "report"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    timeline = pd.read_parquet(tmp_path / "report" / "timeline.parquet")
    assert set(timeline["drop_reason"]) <= {"", "unavailable", "offline"}
    # clients 0 and 2 (key 1) are offline between 300 and 500 s of each 1000 s
    assert (timeline["selected"].sum() >= 1) and (timeline["round"].max() == 3)
