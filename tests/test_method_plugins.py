"""Method plugins (`fedsim.learn.plugins`): ``kind: "module:object"`` and the
``fedsim.methods`` entry points, checked without import at validation, imported
at the run's start; bad plugins exit 2 naming ``methods.<label>.kind`` and the
module, a failing hook exits 1; examples/custom_method runs from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pandas as pd
import pytest
import torch

from fedsim import config, store
from fedsim.cli import main
from fedsim.errors import InputError
from fedsim.learn import methods, plugins
from fedsim.learn.masks import Mask
from fedsim.learn.model import encoder, init_dae
from fedsim.learn.spec import MethodConfig
from fedsim.pipeline import keys

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "custom_method"
TINY = Path(__file__).parent / "scenarios" / "tiny.yaml"


@pytest.fixture(autouse=True)
def _fresh_plugins():
    """Each test imports its own modules: no plugin or module carried over."""
    before = set(sys.modules)
    plugins.forget()
    yield
    plugins.forget()
    for name in set(sys.modules) - before:
        if name.startswith("plug_") or name == "my_method":
            del sys.modules[name]


def _scenario(tmp_path: Path, module: str | None, source: str, methods_yaml: str) -> Path:
    """tiny.yaml with ``methods_yaml``, next to ``module``.py holding ``source``."""
    if module is not None:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    text = TINY.read_text().split("methods:")[0] + "methods:\n" + textwrap.indent(methods_yaml, "  ")
    text += "\n" + TINY.read_text().split("system:", 1)[1].join(["system:", ""])
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path


GOOD = """
    from fedsim.learn.methods import Start
    from fedsim.learn.masks import Mask

    class Dense:
        proximal_mu = 0.3
        version = "2"
        def start(self, ticket, cfg, seed):
            return Start(ticket.theta0_encoder, Mask.dense_like(ticket.theta0_encoder))

    METHOD = Dense()
    NOT_A_METHOD = 42
    def RAISES_start(ticket, cfg, seed):
        raise ZeroDivisionError("boom")
    class RAISES:
        start = staticmethod(RAISES_start)
    class WRONG:
        @staticmethod
        def start(ticket, cfg, seed):
            return ticket.theta0_encoder
    class BAD_MU:
        proximal_mu = -1
        start = staticmethod(RAISES_start)
"""


# -- validation: syntax only, nothing imported -------------------------------------------


def test_validation_imports_neither_the_plugin_nor_torch(tmp_path: Path) -> None:
    (tmp_path / "plug_loud.py").write_text("raise SystemExit('imported at validation')\n")
    path = _scenario(tmp_path, None, "", "original: {}\nloud: {kind: 'plug_loud:METHOD', proximal_mu: 0.1}\n")
    code = (f"from fedsim import config\ns = config.load({str(path)!r})\n"
            "import json, sys\nprint(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "torch" not in loaded and "plug_loud" not in loaded


@pytest.mark.parametrize(("kind", "message"), [
    ("nope", "unknown method 'nope'"),
    ("a:b:c", "unknown method 'a:b:c'"),
    ("pkg.mod:", "unknown method"),
])
def test_a_kind_that_is_no_method_nor_plugin_is_refused_at_validation(kind: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        MethodConfig(kind=kind)
    assert "package.module:object" in str(info.value)  # says how to name a plugin


# -- at the run's start: import and check, exit 2 ---------------------------------------


@pytest.mark.parametrize(("kind", "message"), [
    ("plug_missing:METHOD", "methods.mine.kind: cannot import module 'plug_missing'"),
    ("plug_good:NOPE", "methods.mine.kind: module 'plug_good' has no attribute 'NOPE'"),
    ("plug_good:NOT_A_METHOD", "methods.mine.kind: 'plug_good:NOT_A_METHOD' in module 'plug_good' has no "
                               "callable start"),
    ("plug_good:BAD_MU", "proximal_mu=-1 is not a number >= 0"),
])
def test_a_bad_plugin_exits_2_naming_the_key_and_module(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch, kind: str,
                                                        message: str) -> None:
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    path = _scenario(tmp_path, "plug_good", GOOD, f"mine: {{kind: '{kind}'}}\n")
    assert main(["validate", str(path)]) == 0  # the syntax is fine
    assert main(["scenario", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err
    if "cannot import" in message:
        assert str(tmp_path) in err and "PYTHONPATH" in err  # where it was looked for
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").glob("train/*"))


def test_a_pruned_plugin_needs_a_level(tmp_path: Path) -> None:
    source = GOOD + "\n    class PRUNED(Dense):\n        pruned = True\n"
    path = _scenario(tmp_path, "plug_pruned", source, "mine: {kind: 'plug_pruned:PRUNED'}\n")
    with pytest.raises(InputError, match=r"methods.mine: method 'plug_pruned:PRUNED' needs exactly one of "
                                         r"remaining_rate, level \(plugin module 'plug_pruned'\)"):
        plugins.check_methods(config.load(path), tmp_path)


def test_a_plugins_defaults_and_version_enter_training_and_keys(tmp_path: Path) -> None:
    path = _scenario(tmp_path, "plug_good", GOOD,
                     "own: {kind: 'plug_good:METHOD'}\nmu0: {kind: 'plug_good:METHOD', proximal_mu: 0}\n")
    scenario = config.load(path)
    plugins.check_methods(scenario, tmp_path)
    assert methods.effective_fl(scenario.fl, scenario.methods["own"]).proximal_mu == 0.3  # the plugin's default
    assert methods.effective_fl(scenario.fl, scenario.methods["mu0"]) is scenario.fl  # the section wins
    assert keys.method_key(scenario, scenario.methods["own"])["version"] == "2"
    cpu = torch.device("cpu")
    assert (keys.train_key(scenario, scenario.methods["own"], None, cpu)
            != keys.train_key(scenario, scenario.methods["mu0"], None, cpu))


def test_an_entry_point_names_a_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(name="magprox", value="my_method:METHOD", group=plugins.METHOD_ENTRY_POINTS)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [ep] if group == ep.group else [])
    monkeypatch.syspath_prepend(str(EXAMPLE))
    assert methods.is_plugin("magprox") and not methods.is_plugin("hp-fl")
    MethodConfig(kind="magprox")  # validates by the entry point's name (nothing imported)
    entry = methods.get("magprox")
    assert entry.module == "my_method" and entry.proximal_mu == 0.01 and not entry.pruned
    theta = encoder(init_dae("glorot_uniform", 0))

    class Ticket:  # what start reads of a ticket
        theta0_encoder = theta

    start = methods.build(MethodConfig(kind="magprox"), Ticket(), seed=0)
    assert start.mask.remaining_rate == pytest.approx(0.5, abs=1e-5)
    assert start.params.equal(start.mask.apply(theta))
    kept = start.params.weights[0].abs()[start.mask.layers[0]].min()
    assert kept >= theta.weights[0].abs()[~start.mask.layers[0]].max()  # the largest magnitudes


# -- hooks that fail at run time: exit 1, earlier stages kept ---------------------------------


@pytest.mark.parametrize(("obj", "message"), [
    ("RAISES", "start hook raised ZeroDivisionError: boom"),
    ("WRONG", "start hook returned a Params, not a Start(params: Params, mask: Mask)"),
])
def test_a_failing_hook_exits_1_and_keeps_the_checkpoints(tmp_path: Path, cache_root: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          obj: str, message: str) -> None:
    path = _scenario(tmp_path, "plug_good", GOOD, f"original: {{}}\nbroken: {{kind: 'plug_good:{obj}'}}\n")
    status = main(["scenario", str(path), "--out", str(tmp_path / "out"), "--rounds", "2", "--quiet"])
    err = capsys.readouterr().err
    assert status == 1
    assert f"methods.broken: method 'plug_good:{obj}' (module 'plug_good'): {message}" in err
    trained = [e for e in (cache_root / "train").iterdir() if store.CacheEntry("train", e.name).valid()]
    assert len(trained) == 1  # original's run, trained before the plugin's start failed, is kept


def test_build_checks_the_start_it_returns() -> None:
    theta = encoder(init_dae("glorot_uniform", 0))
    bad = Mask(tuple(torch.ones(2, 2, dtype=torch.bool) for _ in theta.weights))

    class Mismatch:
        @staticmethod
        def start(source, cfg, seed):
            return methods.Start(theta, bad)

    plugins._LOADED["x:Y"] = plugins.as_method("x:Y", Mismatch(), "x")
    with pytest.raises(plugins.MethodHookError, match="its mask does not fit its params"):
        methods.build(MethodConfig(kind="x:Y"), None, seed=0)


# -- the example, end to end through the CLI --------------------------------------------------


def test_the_custom_method_example_runs_from_the_cli(cache_root: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`fedsim scenario examples/custom_method/scenario.yaml --rounds 2`: my_method.py
    is found in the scenario's folder (the repository root is the working
    directory, not on the path for it), and metrics.csv reports the plugin's
    mask: half of every layer's weights, with every bias, sent each way."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    assert main(["scenario", "examples/custom_method/scenario.yaml", "--rounds", "2", "--out", str(out),
                 "--quiet"]) == 0
    table = pd.read_csv(out / "metrics.csv").set_index("method")
    weights = [784 * 300, 300 * 100, 100 * 10]
    sent = sum(round(0.5 * w) for w in weights) + 410
    for label in ("magnitude-prox", "magnitude-prox-8bit"):
        row = table.loc[label]
        assert row["remaining_rate"] == pytest.approx(0.5, abs=1e-4)
        assert row["params"] == sent
        assert row["rounds_run"] == 2
        assert 0.1 < row["final_accuracy"] <= 1.0  # it trained past chance
    clients = 10
    assert table.loc["magnitude-prox", "comm_bytes_per_round"] == clients * 2 * 4 * sent
    assert table.loc["magnitude-prox-8bit", "comm_bytes_per_round"] == clients * (4 * sent + (8 * sent + 32) // 8)
    assert table.loc["original", "params"] == 266_610


def test_a_plugin_starts_from_another_models_own_parameters(cache_root: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """On a model other than LeNet-300-100 the start hook gets that model's
    dense `Start` (its initial parameters), and its mask reaches the payload."""
    (tmp_path / "plug_mlp.py").write_text("from torch import nn\n\ndef mlp():\n"
                                          "    return nn.Sequential(nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the factory: on the Python path
    (tmp_path / "my_method.py").write_text((EXAMPLE / "my_method.py").read_text())  # the plugin: beside it
    path = _scenario(tmp_path, None, "", "original: {}\nmag: {kind: 'my_method:METHOD'}\n")
    scenario = config.load(path, ["model={factory: 'plug_mlp:mlp', input_shape: [784]}", "data.unlabeled=0",
                                  "pretrain.iterations=0", "rounds.max=2"])
    from fedsim import pipeline

    result = pipeline.compute(scenario, base_dir=tmp_path)
    mag = result.methods["mag"]
    assert mag.mask.shapes == ((784, 16), (16, 10))
    assert mag.mask.remaining_rate == pytest.approx(0.5, abs=1e-3)
    assert mag.payload.sent_params == (784 * 16 + 16 * 10) // 2 + 26
    assert mag.trace.num_rounds == 2


def test_a_study_imports_plugins_from_its_base_scenarios_folder(tmp_path: Path, cache_root: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = _scenario(tmp_path, "plug_good", GOOD, "original: {}\nmine: {kind: 'plug_good:METHOD'}\n")
    study = tmp_path / "study.yaml"
    study.write_text("study:\n  name: s\n  base: scenario.yaml\n  axes:\n    methods.mine.proximal_mu: [0.1, 1.0]\n")
    assert main(["sweep", str(study), "--plan"]) == 0
    assert "2 cells" in capsys.readouterr().out
    path.write_text(path.read_text().replace("plug_good:METHOD", "plug_gone:METHOD"))
    plugins.forget()
    assert main(["sweep", str(study), "--plan"]) == 2
    assert "methods.mine.kind: cannot import module 'plug_gone'" in capsys.readouterr().err
