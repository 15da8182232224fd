"""The examples under examples/ run end to end through the command line.

examples/custom_model: a 784-64-10 perceptron of the user's (custom_mlp.py)
named by ``model.factory`` in scenario.yaml, run on a tiny partition (2
clients x 40 MNIST images, 2 rounds) as its README says, without
``PYTHONPATH``: the factory's module is found in the scenario's folder
(`fedsim.learn.locate`); and via `fedsim.api.run`. (examples/custom_method
has its tests in tests/test_method_plugins.py.)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fedsim.cli import main
from fedsim.store.artifacts import SCENARIO_OUTPUTS, SUMMARY

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_model"
SCENARIO = EXAMPLE / "scenario.yaml"
#: The tiny partition and report of the tests: 2 clients x 2 shards of 20 images, no figures.
OVERRIDES = ["data.partition.num_clients=2", "data.partition.shard_size=20", "report.formats=[]"]
TINY = ["--rounds", "2", *[arg for text in OVERRIDES for arg in ("--set", text)]]
#: 784-64-10: (784 + 1) x 64 + (64 + 1) x 10 parameters.
PARAMS = 785 * 64 + 65 * 10


@pytest.fixture
def fresh_import() -> Iterator[None]:
    """custom_mlp imported anew (and forgotten afterwards); the example's folder
    is not on the Python path, before or after."""
    sys.modules.pop("custom_mlp", None)
    assert str(EXAMPLE) not in sys.path
    yield
    assert str(EXAMPLE) not in sys.path
    sys.modules.pop("custom_mlp", None)


def check_report(out: Path) -> None:
    """What the tiny run's report must hold (numbers computed by hand)."""
    rounds = pd.read_csv(out / SCENARIO_OUTPUTS["rounds"])
    assert rounds["round"].tolist() == [1, 2] and set(rounds["method"]) == {"original"}
    assert (rounds["participants"] == 2).all()
    assert rounds["accuracy"].iloc[-1] > 0.2  # 10 classes: chance is 0.1
    metrics = pd.read_csv(out / SCENARIO_OUTPUTS["metrics"])
    assert metrics["params"].tolist() == [PARAMS, PARAMS]
    # 2 clients, each downloading and uploading all 50,890 float32 parameters
    assert metrics["comm_bytes_per_round"].tolist() == [2 * 2 * 4 * PARAMS] * 2
    resolved = yaml.safe_load((out / SCENARIO_OUTPUTS["resolved"]).read_text())
    assert resolved["model"]["factory"] == "custom_mlp:mlp" and resolved["model"]["kwargs"] == {"hidden": 64}
    assert (out / SUMMARY).is_file()


def test_the_custom_model_example_runs_from_the_cli(tmp_path: Path, cache_root: Path,
                                                     fresh_import: None) -> None:
    assert main(["validate", str(SCENARIO)]) == 0
    out = tmp_path / "out"
    assert main(["scenario", str(SCENARIO), *TINY, "--out", str(out), "--quiet"]) == 0
    check_report(out)


def test_the_custom_model_example_runs_from_python(tmp_path: Path, cache_root: Path,
                                                   fresh_import: None) -> None:
    from fedsim import api

    result = api.run(SCENARIO, rounds=2, out=tmp_path / "out", overrides=OVERRIDES)
    check_report(tmp_path / "out")
    assert result.metrics["params"].iloc[0] == PARAMS


def test_a_copy_of_the_scenario_without_the_module_says_where_it_looked(
        tmp_path: Path, cache_root: Path, fresh_import: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "scenario.yaml"
    copy.write_text(SCENARIO.read_text())  # custom_mlp.py stays behind
    assert main(["scenario", str(copy), *TINY, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model.factory: cannot import module 'custom_mlp'" in err
    assert f"looked in the scenario's folder {tmp_path}, then the Python path" in err
    assert not (tmp_path / "out").exists()


def test_the_example_model_has_the_documented_size(fresh_import: None) -> None:
    from fedsim.learn.locate import import_target

    mlp = import_target("custom_mlp:mlp", EXAMPLE)

    assert sum(p.numel() for p in mlp().parameters()) == PARAMS == 50_890
    assert sum(p.numel() for p in mlp(hidden=32).parameters()) == 25_450
