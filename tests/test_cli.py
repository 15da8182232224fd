"""The command line, called in-process: exit statuses, messages, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsim.cli import main

SCENARIOS = Path(__file__).parents[1] / "scenarios"


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(SCENARIOS / "paper.yaml")]) == 0
    out = capsys.readouterr().out
    assert "valid scenario 'paper'" in out and "hp-fl-0.41" in out


def test_bad_scenario_exits_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nmethods:\n  original: {}\nsystem:\n  clients:\n    uplink: '-3 Mbps'\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: system.clients.uplink" in err and "> 0" in err
    assert "Traceback" not in err


def test_debug_shows_the_exception(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nmethods: {}\n")
    from fedsim.errors import InputError

    with pytest.raises(InputError):
        main(["validate", str(path), "--debug"])


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario"]) == 2
    assert "path" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2


def test_force_and_cached_only_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario", str(SCENARIOS / "quickstart.yaml"), "--force", "--cached-only"]) == 2
    assert "not allowed with argument --force" in capsys.readouterr().err


def test_continue_from_the_same_device_is_an_input_error(capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path) -> None:
    assert main(["scenario", str(SCENARIOS / "quickstart.yaml"), "--device", "cpu", "--continue-from", "cpu",
                 "--out", str(tmp_path / "out")]) == 2
    assert "--continue-from cpu: the scenario runs on cpu already" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_set_override_error_names_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(SCENARIOS / "quickstart.yaml"), "--set", "fl.lrr=1"]) == 2
    assert "fl.lrr: unknown key" in capsys.readouterr().err


def test_data_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "fetch", "mnist"]) == 0
    capsys.readouterr()
    assert main(["data", "info", "mnist", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    counts = facts["splits"]["train"]["label_counts"]
    assert [counts[str(d)] for d in range(10)] == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert facts["splits"]["test"]["count"] == 10000


def test_unknown_dataset_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "fetch", "cifar-1000"]) == 2
    assert "mnist" in capsys.readouterr().err


def test_scenario_runs_and_writes_report(tiny_path: Path, cache_root: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    status = main(["scenario", str(tiny_path), "--out", str(out), "--quiet", "--methods", "original",
                   "--rounds", "2", "--set", "system.clients.uplink=2 Mbps"])
    assert status == 0
    assert "report written" in capsys.readouterr().out
    resolved = (out / "scenario.resolved.yaml").read_text()
    assert "uplink" in resolved and "2000000.0" in resolved
    metrics = (out / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 2  # one method x two targets
    provenance = json.loads((out / "provenance.json").read_text())
    assert "--methods original" in provenance["command"]


def test_unknown_method_selection_exits_2(tiny_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario", str(tiny_path), "--methods", "nope"]) == 2
    assert "unknown method" in capsys.readouterr().err


# A `fedsim scenario` process whose training, once round STOP_AFTER is finished
# (and handed to the pipeline), marks it in a file and waits to be killed: the
# test sends SIGTERM on that condition, so the round reached is known exactly.
_STOPPING_RUN = """
import sys, time
from pathlib import Path
from fedsim import cli
from fedsim.pipeline import training

marker, stop_after = Path(sys.argv[1]), int(sys.argv[2])
real_train = training.train

def train(*args, on_round, **kwargs):
    def on_round_then_wait(round_num, params, record):
        on_round(round_num, params, record)
        if round_num == stop_after:
            marker.touch()
            while True:  # until SIGTERM
                time.sleep(0.05)
    return real_train(*args, on_round=on_round_then_wait, **kwargs)

training.train = train
sys.exit(cli.main(sys.argv[3:]))
"""


def test_sigterm_stops_a_run_like_ctrl_c_and_keeps_every_finished_round(
        tiny_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """`kill PID` on a running `fedsim scenario`: exit status 130, the
    interruption message, and a checkpoint at the last finished round (3, past
    the periodic one at 2), from which the run resumes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cache = tmp_path / "cache"
    marker = tmp_path / "round-3-finished"
    env = {**os.environ, "FEDSIM_CACHE": str(cache)}
    cmd = [sys.executable, "-c", _STOPPING_RUN, str(marker), "3",
           "scenario", str(tiny_path), "--out", str(tmp_path / "out"), "--quiet",
           "--set", "methods={original: {}}", "--set", "rounds.max=100", "--set", "rounds.checkpoint_every=2"]
    log = tmp_path / "stderr.txt"
    with log.open("w") as err_file:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err_file, text=True)
        deadline = time.monotonic() + 300  # a limit against a hang, not a timing assumption
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), log.read_text()[-2000:]
        [manifest] = list(cache.glob("train/*/manifest.json"))
        assert json.loads(manifest.read_text())["info"]["rounds"] == 2  # the periodic checkpoint
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    err = log.read_text()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: finished stages and checkpoints are kept" in err
    assert json.loads(manifest.read_text())["info"]["rounds"] == 3, "round 3 was kept"
    assert sorted(p.name for p in manifest.parent.glob("trace.r*.npz")) == ["trace.r000003.npz"]
    assert not (tmp_path / "out" / "metrics.csv").exists()
    # the run resumes from round 3: rounds 1..3 come from the checkpoint, not from training
    import logging

    from fedsim import config, pipeline

    monkeypatch.setenv("FEDSIM_CACHE", str(cache))
    scenario = config.load(tiny_path, ["methods={original: {}}", "rounds.max=4"])
    with caplog.at_level(logging.INFO, logger="fedsim"):
        resumed = pipeline.compute(scenario, base_dir=tiny_path.parent)
    assert "original: resuming after round 3 of 4" in caplog.text
    assert resumed.rounds["round"].tolist() == list(range(1, 5))
    assert json.loads(manifest.read_text())["info"]["rounds"] == 4
