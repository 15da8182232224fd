"""`fedsim replay`: a run trained elsewhere, costed on a scenario's network.

The done-when check: replaying a fedsim run's own rounds.csv reproduces its
metrics.csv exactly. Then the run-file layouts (per round with participants
and sizes, per client) against hand-computed bytes, and every malformed
input: exit 2 naming the file, line and column, before any stage runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsim.cli import main
from fedsim.errors import InputError
from fedsim.replay.runfile import read_run

ROOT = Path(__file__).resolve().parents[1]
METRIC_COLUMNS = ["method", "target_accuracy", "nra", "cca_bytes", "cta_s", "tta_s",
                  "remaining_rate", "params", "final_accuracy", "rounds_run"]


def _write(tmp_path: Path, text: str, name: str = "run.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the done-when check


def test_replaying_a_fedsim_rounds_csv_reproduces_its_metrics_exactly(
        tiny_path: Path, cache_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["scenario", str(tiny_path), "--out", str(run), "--quiet"]) == 0
    original = pd.read_csv(run / "metrics.csv")
    assert set(original["method"]) == {"original", "hp-fl"}
    for method in ("original", "hp-fl"):
        out = tmp_path / f"replay-{method}"
        assert main(["replay", str(run / "rounds.csv"), "--system", str(tiny_path),
                     "--method", method, "--out", str(out), "--quiet"]) == 0
        replayed = pd.read_csv(out / "metrics.csv")
        expected = original[original["method"] == method].reset_index(drop=True)
        pd.testing.assert_frame_equal(replayed[METRIC_COLUMNS], expected[METRIC_COLUMNS],
                                      check_exact=True)
        rounds = pd.read_csv(out / "rounds.csv")
        want = pd.read_csv(run / "rounds.csv").query("method == @method").reset_index(drop=True)
        pd.testing.assert_frame_equal(rounds, want, check_exact=True)
        for name in ("summary.md", "timeline.parquet", "scenario.resolved.yaml", "provenance.json"):
            assert (out / name).is_file(), name
        assert list((out / "figures").glob("*gantt*.png")), "the Gantt chart is drawn"
    # the pruned method's mask came from the scenario (its ticket, from the cache)
    assert replayed["remaining_rate"].iloc[0] == pytest.approx(0.8, abs=0.01)


# --------------------------------------------------------------------------- layouts, by hand


def test_given_participants_and_sizes_are_what_the_network_carries(
        tiny_path: Path, cache_root: Path, tmp_path: Path) -> None:
    csv = _write(tmp_path, "round,accuracy,participants,down_bytes,up_bytes\n"
                           "1,0.40,0 1,1000,500\n"
                           "2,0.55,2;3;0,2000,100\n"
                           "3,0.70,3,10,20\n", "flower.csv")
    out = tmp_path / "out"
    assert main(["replay", str(csv), "--system", str(tiny_path), "--out", str(out), "--quiet"]) == 0
    rounds = pd.read_csv(out / "rounds.csv")
    assert rounds["method"].unique().tolist() == ["flower"]  # named after the file
    # tiny has no deadline: every given client is kept and sends all its bytes
    assert rounds["participants"].tolist() == [2, 3, 1]
    assert rounds["round_bytes"].tolist() == [2 * 1500, 3 * 2100, 30]
    timeline = pd.read_parquet(out / "timeline.parquet")
    selected = timeline[timeline["selected"]].groupby("round")["client_id"].apply(list).to_dict()
    assert selected == {1: [0, 1], 2: [0, 2, 3], 3: [3]}
    assert timeline[timeline["selected"]]["drop_reason"].eq("").all()
    metrics = pd.read_csv(out / "metrics.csv").set_index("target_accuracy")
    assert metrics.loc[0.5, "nra"] == 2 and metrics.loc[0.5, "cca_bytes"] == 3000 + 6300
    # a label the scenario lacks replays the dense model: LeNet-300-100's parameters
    assert metrics["params"].iloc[0] == 266_610 and metrics["remaining_rate"].iloc[0] == 1.0


def test_per_client_rows_equal_the_per_round_layout(tiny_path: Path, cache_root: Path,
                                                     tmp_path: Path) -> None:
    per_round = _write(tmp_path, "round,accuracy,loss,participants,down_bytes,up_bytes\n"
                                 "1,0.3,2.0,1 3,800,400\n2,0.6,1.5,0,800,400\n")
    per_client = _write(tmp_path, "round,client_id,accuracy,loss,down_bytes,up_bytes\n"
                                  "1,3,0.3,2.0,800,400\n1,1,0.3,2.0,800,400\n"
                                  "2,0,0.6,1.5,800,400\n", "clients.csv")
    frames = []
    for i, path in enumerate((per_round, per_client)):
        out = tmp_path / f"out{i}"
        assert main(["replay", str(path), "--system", str(tiny_path), "--method", "x",
                     "--out", str(out), "--quiet"]) == 0
        frames.append(pd.read_csv(out / "rounds.csv"))
    pd.testing.assert_frame_equal(frames[0], frames[1], check_exact=True)
    assert frames[0]["loss"].tolist() == [2.0, 1.5]


def test_without_participants_or_sizes_the_scenarios_payload_and_selection_apply(tmp_path: Path) -> None:
    run = read_run(_write(tmp_path, "round,accuracy\n1,0.5\n2,0.25\n"), num_clients=4)
    assert run.participants is None and run.down_bytes is None
    assert run.accuracy.tolist() == [0.5, 0.25] and np.isnan(run.loss).all()


def test_a_file_with_several_methods_needs_one_chosen(tmp_path: Path) -> None:
    path = _write(tmp_path, "method,round,accuracy\na,1,0.1\nb,1,0.2\nb,2,0.3\n")
    with pytest.raises(InputError, match=r"run.csv: column 'method': holds several methods \(a, b\)"):
        read_run(path, num_clients=4)
    assert read_run(path, num_clients=4, method="b").accuracy.tolist() == [0.2, 0.3]
    with pytest.raises(InputError, match="no rows of method 'c'"):
        read_run(path, num_clients=4, method="c")


# --------------------------------------------------------------------------- malformed input


BAD = [
    ("round,acc\n1,0.5\n", r"column 'accuracy': missing; the run file needs the columns round, accuracy"),
    ("accuracy\n0.5\n", r"column 'round': missing"),
    ("round,accuracy\n2,0.5\n1,0.6\n", r"line 2, column 'round': round 2 where round 1 was expected"),
    ("round,accuracy\n1,0.5\n3,0.6\n2,0.7\n", r"line 3, column 'round': round 3 where round 2"),
    ("round,accuracy\n1,0.5\n2,0.6\n1,0.7\n", r"line 4, column 'round': round 1 repeated \(first on line 2"),
    ("round,accuracy\n1,0.5\n2,0.6\n2,0.7\n", r"line 4, column 'round': round 2 repeated \(first on line 3"),
    ("round,accuracy\n1,0.5\n2,97.1\n", r"line 3, column 'accuracy': '97.1' is not in \[0, 1\] "
                                        r"\(accuracy is a fraction"),
    ("round,accuracy\n1,-0.1\n", r"line 2, column 'accuracy': '-0.1' is not in \[0, 1\]"),
    ("round,accuracy\n1,nan\n", r"line 2, column 'accuracy': 'nan' is not a finite number"),
    ("round,accuracy\n1,\n", r"line 2, column 'accuracy': empty cell"),
    ("round,accuracy\n1,0.5\ntwo,0.6\n", r"line 3, column 'round': 'two' is not a number"),
    ("round,accuracy\n1.5,0.5\n", r"line 2, column 'round': '1.5' is not an integer"),
    ("round,accuracy\n0,0.5\n", r"line 2, column 'round': '0' must be >= 1"),
    ("round,accuracy,participants\n1,0.5,0 1\n2,0.6,1 4\n",
     r"line 3, column 'participants': unknown client id 4: the scenario has 4 clients, ids 0..3"),
    ("round,accuracy,participants\n1,0.5,0 x\n", r"line 2, column 'participants': 'x' is not a client id"),
    ("round,accuracy,participants\n1,0.5,1;1\n", r"line 2, column 'participants': client 1 is listed twice"),
    ("round,accuracy,participants\n1,0.5,\n", r"line 2, column 'participants': empty cell"),
    ("round,accuracy,down_bytes\n1,0.5,10\n", r"column 'up_bytes': missing: give both"),
    ("round,accuracy,down_bytes,up_bytes\n1,0.5,10,-1\n", r"line 2, column 'up_bytes': '-1' must be >= 0"),
    ("round,accuracy,down_bytes,up_bytes\n1,0.5,10,1e3x\n", r"line 2, column 'up_bytes': '1e3x' is not a number"),
    ("round,accuracy,loss\n1,0.5,abc\n", r"line 2, column 'loss': 'abc' is not a number"),
    ("round,client_id,accuracy\n1,0,0.5\n1,7,0.5\n", r"line 3, column 'client_id': unknown client id 7"),
    ("round,client_id,accuracy\n1,0,0.5\n1,0,0.5\n", r"line 3, column 'client_id': client 0 appears twice in round 1"),
    ("round,client_id,accuracy\n1,0,0.5\n1,1,0.6\n", r"line 3, column 'accuracy': 0.6 differs from 0.5 on line 2"),
    ("round,client_id,accuracy\n1,0,0.5\n2,1,0.6\n1,2,0.5\n", r"line 4, column 'round': round 1 repeated \(first on line 2"),
    ("round,client_id,accuracy,down_bytes,up_bytes\n1,0,0.5,10,5\n1,1,0.5,11,5\n",
     r"line 3, column 'down_bytes': 11 differs from 10 on line 2 of the same round \(fedsim sends one"),
    ("", r"run.csv: not a readable CSV"),
    ("round,accuracy\n", r"run.csv: no rows"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_malformed_run_file_names_the_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InputError, match=message) as err:
        read_run(path, num_clients=4)
    assert str(err.value).startswith(str(path))


def test_a_missing_run_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such run file"):
        read_run(tmp_path / "nope.csv", num_clients=4)


def test_cli_exits_2_before_any_stage_runs(tiny_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    csv = _write(tmp_path, "round,accuracy,participants\n1,0.5,0 1\n2,0.6,9\n")
    out = tmp_path / "out"
    assert main(["replay", str(csv), "--system", str(tiny_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {csv}: line 3, column 'participants': unknown client id 9")
    assert "Traceback" not in err
    assert not (tmp_path / "cache").exists() and not out.exists()
    assert main(["replay", str(csv)]) == 2  # --system is required
    assert "--system" in capsys.readouterr().err


def test_reading_a_run_file_imports_no_torch(tmp_path: Path) -> None:
    path = _write(tmp_path, "round,accuracy\n1,0.5\n")
    code = ("import sys; from fedsim.replay import read_run; "
            f"read_run({str(path)!r}, 4); print(sorted(m for m in ('torch', 'simpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_given_participants_select_exactly_those_clients(tiny_path: Path) -> None:
    """``simulate(given_participants=...)``: round r selects exactly the given
    clients, all available and kept, none dropping out, even where the
    scenario's own policy would select others and drop some."""
    from fedsim import config
    from fedsim.system import sim
    from fedsim.system.payload import Payload

    scenario = config.load(tiny_path, overrides=["system.rounds.participation=0.5",
                                                 "system.rounds.dropout=0.5"])
    n = scenario.data.partition.num_clients
    given = [np.array([0]), np.arange(n), np.array([1, n - 1])]
    result = sim.simulate(scenario.system, client_samples=np.full(n, 10), payload=Payload(
        down_bytes=1000, up_bytes=1000, sent_params=250, total_params=250),
        work_fraction=1.0, rounds=3, seed=0, given_participants=given)
    assert [p.tolist() for p in result.participation] == [g.tolist() for g in given]
    timeline = result.timeline
    for r, g in enumerate(given, start=1):
        rows = timeline[timeline["round"] == r]
        assert sorted(rows.loc[rows["selected"], "client_id"]) == sorted(g.tolist())
        assert (rows.loc[rows["selected"], "drop_reason"] == "").all()
        assert (rows["drop_reason"] != "unavailable").all()
    with pytest.raises(ValueError, match="given_participants holds 1 rounds, not 3"):
        sim.simulate(scenario.system, client_samples=np.full(n, 10), payload=Payload(
            down_bytes=1000, up_bytes=1000, sent_params=250, total_params=250),
            work_fraction=1.0, rounds=3, seed=0, given_participants=given[:1])
