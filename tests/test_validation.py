"""Bad input ends in exit status 2, before any stage runs, with one line per
problem naming the file, the key path and the value (issue 12).

Each class of bad input is run through the command line in-process: ``fedsim
validate`` and ``fedsim scenario``; for ``scenario`` the test also checks that
nothing was written (no dataset download, no cache entry, no report).
"""

from __future__ import annotations

import copy
import math
import os
import stat
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedsim import config, study
from fedsim.cli import main
from fedsim.errors import InputError
from fedsim.learn import counts as learn_counts
from fedsim.learn import methods as learn_methods
from fedsim.learn import pretrain as learn_pretrain
from fedsim.learn.masks import level_counts
from fedsim.learn.model import LENET_SIZES, layer_shapes
from fedsim.learn.spec import MethodConfig, PretrainConfig

#: A small valid scenario of its own (tests/scenarios/tiny.yaml may change):
#: the numbers of test_deadline_bound_is_the_fastest_possible_transfer rest on it.
BASE = """\
name: tiny
data:
  unlabeled: 1000
  partition: {scheme: shards, num_clients: 4, shard_size: 50, shards_per_client: 2}
pretrain:
  epochs: 1
  iterations: 1
fl:
  local_epochs: 1
methods:
  original: {}
  hp-fl: {remaining_rate: 0.8}
system:
  clients:
    downlink: {dist: lognormal, median: "20 Mbps", sigma: 0.5}
    uplink: {dist: lognormal, median: "5 Mbps", sigma: 0.5}
    rtt: "50 ms"
  server:
    downlink: "50 Mbps"
    uplink: "50 Mbps"
rounds:
  max: 3
device: cpu
report:
  formats: [png]
"""


@pytest.fixture
def base_path(tmp_path: Path) -> Path:
    return write(tmp_path, BASE, "base.yaml")


def tiny(**edits: Any) -> dict[str, Any]:
    """`BASE` with ``a__b__c=value`` edits (``a.b.c`` set to value)."""
    raw = copy.deepcopy(yaml.safe_load(BASE))
    for key, value in edits.items():
        node = raw
        *parents, last = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


def write(tmp_path: Path, raw: dict[str, Any] | str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


def names(message: str, path: Path, key: str) -> bool:
    """True if ``message`` names ``path`` and the dotted ``key`` (a distribution's
    sub-key may come as ``system.clients.speed: std:``)."""
    parent, _, leaf = key.rpartition(".")
    return f"{path}: {key}:" in message or f"{path}: {parent}: {leaf}:" in message


def nothing_written(root: Path) -> bool:
    return not any(p.is_file() for p in root.rglob("*"))


def refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            path: Path, *args: str, scenario: bool = True) -> str:
    """Run ``fedsim validate PATH ARGS`` (and ``fedsim scenario``), check that both
    exit 2 and that the scenario run wrote nothing; return validate's stderr."""
    capsys.readouterr()
    assert main(["validate", str(path), *args]) == 2
    message = capsys.readouterr().err
    assert message.startswith("error: ") and "Traceback" not in message
    if scenario:
        run_root = tmp_path / "run"
        monkeypatch.setenv("FEDSIM_CACHE", str(run_root / "cache"))
        monkeypatch.setenv("FEDSIM_DATA", str(run_root / "data"))
        out = run_root / "out"
        assert main(["scenario", str(path), "--out", str(out), "--quiet", *args]) == 2
        assert capsys.readouterr().err.strip() == message.strip()
        assert nothing_written(run_root), sorted(run_root.rglob("*"))
    return message


# --------------------------------------------------------------------------- non-finite numbers


@pytest.mark.parametrize(("edits", "key", "value"), [
    ({"fl__lr": math.inf}, "fl.lr", "inf"),
    ({"fl__lr": math.nan}, "fl.lr", "nan"),
    ({"pretrain__lr": math.inf}, "pretrain.lr", "inf"),
    ({"pretrain__noise_mean": math.inf}, "pretrain.noise_mean", "inf"),
    ({"pretrain__noise_var": math.inf}, "pretrain.noise_var", "inf"),
    ({"pretrain__prune_fraction": math.nan}, "pretrain.prune_fraction", "nan"),
    ({"system__clients__downlink": {"dist": "lognormal", "median": "20 Mbps", "sigma": math.inf}},
     "system.clients.downlink.sigma", "inf"),
    ({"system__clients__uplink": {"dist": "uniform", "low": "1 Mbps", "high": math.inf}},
     "system.clients.uplink.high", "inf"),
    ({"system__clients__speed": {"dist": "normal", "mean": 1.0, "std": math.nan, "min": 0.1}},
     "system.clients.speed.std", "nan"),
    ({"system__clients__speed": {"dist": "normal", "mean": math.inf, "std": 0.1, "min": 0.1}},
     "system.clients.speed.mean", "inf"),
    ({"system__compute__t_comp_full": math.inf}, "system.compute.t_comp_full", "inf"),
    ({"targets": [0.5, math.nan]}, "targets[1]", "nan"),
])
def test_non_finite_numbers_are_refused(tmp_path, monkeypatch, capsys, edits, key, value):
    path = write(tmp_path, tiny(**edits))
    message = refused(tmp_path, monkeypatch, capsys, path)
    assert names(message, path, key) and value in message
    assert len(message.strip().splitlines()) == 1


def test_infinity_where_it_means_an_unlimited_link_is_accepted(tmp_path, capsys):
    raw = tiny(system__server={"downlink": "inf", "uplink": math.inf},
               system__clients__downlink="inf",
               system__clients__uplink={"dist": "lognormal", "median": "5 Mbps", "sigma": 0.5,
                                        "max": math.inf})
    assert main(["validate", str(write(tmp_path, raw))]) == 0
    scenario = config.load(write(tmp_path, raw))
    assert scenario.system.server.uplink == math.inf
    assert scenario.system.clients.uplink.max == math.inf


@pytest.mark.parametrize(("start", "shown"), [(".inf", "inf"), ("1e400 Mbps", "1e400 Mbps"),
                                              (".nan", "nan")])
def test_study_range_endpoints_must_be_finite(tmp_path, capsys, start, shown):
    base = write(tmp_path, tiny(), "base.yaml")
    text = (f"study:\n  name: s\n  base: {base.name}\n  axes:\n"
            f"    system.clients.uplink.median: {{geometric: {{start: {start}, stop: 2 Mbps, num: 3}}}}\n")
    path = write(tmp_path, text, "study.yaml")
    assert main(["validate", str(path)]) == 2
    message = capsys.readouterr().err
    assert f"{path}: study.axes.system.clients.uplink.median" in message and shown in message


# --------------------------------------------------------------------------- nothing can train


@pytest.mark.parametrize(("edits", "key"), [
    ({"system__clients__availability": 0.0}, "system.clients.availability"),
    ({"system__clients__availability": {"dist": "uniform", "low": 0.0, "high": 0.0}},
     "system.clients.availability"),
    ({"system__rounds__participation": 0}, "system.rounds.participation"),
    ({"system__rounds__participation": 0.0}, "system.rounds.participation"),
    ({"system__rounds__dropout": 1.0}, "system.rounds.dropout"),
    ({"system__rounds__deadline": "1 ms"}, "system.rounds.deadline"),
])
def test_scenarios_where_nothing_can_train_are_refused(tmp_path, monkeypatch, capsys, edits, key):
    path = write(tmp_path, tiny(**edits))
    message = refused(tmp_path, monkeypatch, capsys, path)
    assert names(message, path, key)


def test_deadline_bound_is_the_fastest_possible_transfer(tmp_path, capsys):
    # tiny: hp-fl at P_R 0.8 sends 0.8 of the 266,200 weights + 410 biases at
    # 32 bits = 853,480 B each way; client links are lognormal without max (no
    # bound), so the 50 Mbps server links cap them; RTT 50 ms:
    # 0.05 + 2 * 853,480 * 8 / 50e6 = 0.3231 s. original sends more.
    fastest = 0.05 + 2 * 853_480 * 8 / 50e6
    accepted = main(["validate", str(write(tmp_path, tiny(system__rounds__deadline=fastest * 1.01)))])
    assert accepted == 0
    path = write(tmp_path, tiny(system__rounds__deadline=fastest * 0.99))
    assert main(["validate", str(path)]) == 2
    message = capsys.readouterr().err
    assert "hp-fl: 853,480 B down at 50 Mbps" in message and "0.323 s" in message
    # a bounded client link is the cap when slower than the server's
    raw = tiny(system__rounds__deadline=fastest * 1.01,
               system__clients__uplink={"dist": "uniform", "low": "1 Mbps", "high": "10 Mbps"})
    assert main(["validate", str(write(tmp_path, raw))]) == 2
    assert "at 10 Mbps" in capsys.readouterr().err


# --------------------------------------------------------------------------- YAML itself


def test_duplicate_keys_are_refused_with_their_lines(tmp_path, monkeypatch, capsys):
    text = BASE + "methods:\n  original: {}\n"
    first = 1 + BASE.splitlines().index("methods:")
    path = write(tmp_path, text)
    message = refused(tmp_path, monkeypatch, capsys, path)
    last = len(text.splitlines()) - 1
    assert f"{path}: line {last}, column 1:" in message
    assert f"duplicate key 'methods' (first on line {first})" in message


def test_duplicate_keys_in_a_nested_flow_mapping(tmp_path, capsys):
    path = write(tmp_path, BASE.replace("fl:\n  local_epochs: 1",
                                                    "fl: {lr: 0.1, local_epochs: 1, lr: 0.2}"))
    assert main(["validate", str(path)]) == 2
    assert "duplicate key 'lr'" in capsys.readouterr().err


def test_merge_keys_may_be_overridden(tmp_path, capsys):
    text = BASE.replace(
        "fl:\n  local_epochs: 1",
        "fl_defaults: &fl {lr: 0.1, local_epochs: 2}\nfl: {<<: *fl, local_epochs: 1}")
    raw = config.read_yaml(write(tmp_path, text))
    assert raw["fl"] == {"lr": 0.1, "local_epochs": 1}


def _alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for k in range(1, levels):
        lines.append(f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("kind", "expected"), [
    ("directory", "is a directory"),
    ("fifo", "is a FIFO"),
    ("device", "is a device"),
    ("latin-1", "not UTF-8 text (byte 0xe9 at offset"),
    ("huge", f"larger than {config.MAX_FILE_BYTES:,} bytes"),
    ("deep", f"nesting deeper than {config.MAX_DEPTH} levels"),
    ("alias bomb", f"expands to more than {config.MAX_NODES:,} values"),
    ("recursive alias", "an alias refers to a node that contains it"),
    ("missing", "cannot read scenario file (No such file or directory)"),
])
def test_unreadable_inputs_end_in_a_clear_error(tmp_path, monkeypatch, capsys, kind, expected):
    path = tmp_path / "bad.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs on this platform")
        os.mkfifo(path)  # nobody writes to it: opening it must not block
    elif kind == "device":
        path = Path("/dev/zero")  # endless input
        if not path.exists():
            pytest.skip("no /dev/zero")
    elif kind == "latin-1":
        path.write_bytes("name: café\n".encode("latin-1"))
    elif kind == "huge":
        path.write_text("# " + "x" * config.MAX_FILE_BYTES + "\nname: x\n")
    elif kind == "deep":
        path.write_text("name: " + "[" * 100_000 + "]" * 100_000 + "\n")
    elif kind == "alias bomb":
        path.write_text(_alias_bomb(9))  # 10^9 values if expanded
    elif kind == "recursive alias":
        path.write_text("a: &a [*a]\n")
    message = refused(tmp_path, monkeypatch, capsys, path)
    assert message.startswith(f"error: {path}") and expected in message
    assert len(message) < 300


def test_small_alias_use_is_still_fine(tmp_path):
    assert config.read_yaml(write(tmp_path, _alias_bomb(4)))["a3"][9][9][9][9] == "x"  # 10^4 values


def test_quoted_values_are_cut(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, tiny(name="x" * 100_000, system__clients__uplink="9" * 50_000 + " Zbps"))
    message = refused(tmp_path, monkeypatch, capsys, path)
    assert f"{path}: name:" in message and "system.clients.uplink" in message
    assert "(100002 characters)" in message
    assert max(len(line) for line in message.splitlines()) <= 600


# --------------------------------------------------------------------------- settings found late


def test_out_that_is_a_file(tmp_path, monkeypatch, capsys, base_path):
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FEDSIM_DATA", str(tmp_path / "data"))
    target = tmp_path / "taken"
    target.write_text("a file")
    for out in (target, target / "sub"):
        assert main(["scenario", str(base_path), "--out", str(out), "--quiet"]) == 2
        assert f"--out '{out}': {target} is a file, not a directory" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "data").exists()


def test_out_that_is_not_writable(tmp_path, monkeypatch, capsys, base_path):
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FEDSIM_DATA", str(tmp_path / "data"))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        probe_ok = os.access(locked, os.W_OK)  # root may write anyway
        out = Path("/sys/fedsim-test-out") if probe_ok else locked / "out"
        if probe_ok and not Path("/sys").is_dir():
            pytest.skip("running as root without a read-only /sys")
        assert main(["scenario", str(base_path), "--out", str(out), "--quiet"]) == 2
        assert f"--out '{out}': cannot write in {out.parent}" in capsys.readouterr().err
    finally:
        locked.chmod(stat.S_IRWXU)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "data").exists()


def test_out_name_too_long(tmp_path, monkeypatch, capsys, base_path):
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / ("n" * 300)
    assert main(["scenario", str(base_path), "--out", str(out), "--quiet"]) == 2
    assert "is longer than the" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(("edits", "key", "expected"), [
    ({"name": "n" * 300}, "name", f"at most {config.MAX_NAME_CHARS} characters"),
    ({"report__gantt_rounds": []}, "report.gantt_rounds", "at least 1 item"),
    ({"report__gantt_rounds": [0]}, "report.gantt_rounds[0]", "greater than or equal to 1"),
    ({"report__gantt_rounds": [1, 4]}, "report.gantt_rounds", "round 4 is beyond rounds.max 3"),
    ({"data__partition": {"scheme": "dirichlet", "num_clients": 100, "min_size": 600}},
     "data.partition", "needs 60000 labeled samples"),
    ({"data__unlabeled": 0}, "methods.hp-fl", "data.unlabeled is 0"),
    ({"methods": {"hp-fl": {"level": 2}}}, "methods.hp-fl.level",
     "level 2 is beyond pretrain.iterations 1"),
    ({"methods": {"pretrained": {}}, "pretrain__iterations": 0}, "methods.pretrained",
     "needs pretrain.iterations >= 1 (got 0)"),
    ({"methods": {"hp-fl": {"remaining_rate": 0.5}}}, "methods.hp-fl.remaining_rate",
     "no pruning level up to pretrain.iterations 1 has remaining_rate 0.5"),
])
def test_settings_that_would_fail_late_are_refused(tmp_path, monkeypatch, capsys, edits, key, expected):
    path = write(tmp_path, tiny(**edits))
    message = refused(tmp_path, monkeypatch, capsys, path)
    assert names(message, path, key) and expected in message


def test_svg_is_a_report_format(tmp_path, capsys):
    from fedsim.report.pages import IMAGE_FORMATS

    formats = typing.get_args(config.ReportConfig.model_fields["formats"].annotation)[0]
    assert set(typing.get_args(formats)) == set(IMAGE_FORMATS)
    assert main(["validate", str(write(tmp_path, tiny(report__formats=["svg"])))]) == 0


# --------------------------------------------------------------------------- validation time


def test_validation_work_does_not_grow_with_pretrain_iterations(monkeypatch):
    """Checking a rate walks levels only until it is matched or passed: the
    number of pruning steps is the same for 10^3 and 10^7 iterations (the old
    code took O(iterations^2) steps: over a minute for 10^6)."""
    steps = []
    real = learn_counts.prune_count
    monkeypatch.setattr(learn_counts, "prune_count", lambda c, f: steps.append(1) or real(c, f))
    counts = {}
    for iterations in (10**3, 10**7):
        steps.clear()
        for method in (MethodConfig(kind="hp-fl", remaining_rate=0.41),
                       MethodConfig(kind="hp-fl", remaining_rate=0.003),  # a level near the floor
                       MethodConfig(kind="original")):
            learn_methods.required_iterations(method, PretrainConfig(iterations=iterations))
        raw = tiny(pretrain__iterations=iterations, methods={"hp-fl": {"level": 300}},
                   system__rounds__deadline="1 s")
        config.from_dict(raw)  # the deadline check walks to level 300 (or the fixed point)
        counts[iterations] = len(steps)
    assert counts[10**3] == counts[10**7] < 3 * 400


def test_incremental_levels_match_level_counts():
    cfg = PretrainConfig(iterations=40, prune_fraction=0.3)
    shapes = layer_shapes(LENET_SIZES)
    total = sum(i * o for i, o in shapes)
    walked = learn_pretrain.iter_level_counts(cfg)
    for k in range(41):
        counts = next(walked)
        assert counts == level_counts(shapes, 0.3, k)
    assert learn_pretrain.expected_levels(cfg) == [
        (k, sum(level_counts(shapes, 0.3, k)) / total) for k in range(41)]


def test_huge_iterations_validate_like_a_normal_scenario(tmp_path, capsys):
    path = write(tmp_path, tiny(pretrain__iterations=10**6))
    assert main(["validate", str(path)]) == 0
    # a rate between levels 5 (0.3277) and 6 (0.2621): the walk stops at level 6
    with pytest.raises(InputError, match=r"up to pretrain.iterations 1000000 has remaining_rate 0.3; "
                                         r"available: 1.0000 \(level 0\), .*, 0.2621 \(level 6\)$"):
        config.from_dict(tiny(pretrain__iterations=10**6, methods={"hp-fl": {"remaining_rate": 0.3}}))


# --------------------------------------------------------------------------- the right command


def _study(tmp_path: Path, axes: str = "    rounds.max: [2, 3]\n") -> Path:
    write(tmp_path, tiny(), "base.yaml")
    return write(tmp_path, f"study:\n  name: s\n  base: base.yaml\n  axes:\n{axes}", "study.yaml")


def test_a_study_given_to_scenario_names_sweep(tmp_path, monkeypatch, capsys):
    path = _study(tmp_path)
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    assert main(["scenario", str(path), "--out", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    assert message == f"error: {path}: is a study file (top-level 'study' key); run it with " \
                      f"`fedsim sweep {path}`\n"
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_a_scenario_given_to_sweep_names_scenario(tmp_path, capsys):
    path = write(tmp_path, tiny())
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"error: {path}: is a scenario file (no top-level 'study' "
                                       f"key); run it with `fedsim scenario {path}`\n")
    assert not (tmp_path / "out").exists()


def test_validate_study_honours_set(tmp_path, capsys):
    path = _study(tmp_path)
    assert main(["validate", str(path), "--set", "fl.lr=0.05"]) == 0
    assert main(["validate", str(path), "--set", "fl.lr=.inf"]) == 2
    message = capsys.readouterr().err
    assert f"{path}: study.set and --set): fl.lr: Input should be a finite number (got inf)" in message
    loaded = study.load(path, overrides=["fl.lr=0.05", "study.name=renamed"])
    assert loaded.name == "renamed" and {c.scenario.fl.lr for c in loaded.cells} == {0.05}
    unequal = _study(tmp_path, "    rounds.max: [2, 3]\n    fl.batch_size: [10, 20, 30]\n")
    assert main(["validate", str(unequal)]) == 0
    assert main(["validate", str(unequal), "--set", "study.mode=zip"]) == 2
    assert "zip needs axes of equal length" in capsys.readouterr().err


def test_a_study_of_too_many_cells_is_refused(tmp_path, capsys):
    path = _study(tmp_path, "    rounds.max: {linear: {start: 1, stop: 1000, num: 1000}}\n"
                            "    fl.lr: {geometric: {start: 0.001, stop: 1, num: 1000}}\n")
    assert main(["validate", str(path)]) == 2
    assert f"1,000,000 cells (with seeds) exceed the {study.MAX_CELLS:,}" in capsys.readouterr().err
