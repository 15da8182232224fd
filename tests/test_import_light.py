"""The edge does not import the engine: loading and validating a scenario or a
study, ``fedsim validate``, and the light modules of the pipeline and the study
(`fedsim.pipeline.keys`, `fedsim.study.spec`) import neither torch nor simpy
(docs/performance.md).

Each check runs in a fresh interpreter, since this test process has imported
everything already. Times are not asserted (they depend on the machine); this
fails when someone adds a heavy import on the way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
HEAVY = ("torch", "simpy")


def _heavy_modules_after(code: str) -> list[str]:
    """The heavy top-level packages in sys.modules after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    return [name for name in HEAVY if name in loaded]


def test_import_config_is_light():
    assert _heavy_modules_after("import fedsim.config") == []


@pytest.mark.parametrize("scenario", ["scenarios/paper.yaml", "scenarios/mobile.yaml",
                                      "tests/scenarios/tiny.yaml"])
def test_load_and_validate_a_scenario_is_light(scenario):
    code = f"""
from fedsim import config
s = config.load({scenario!r}, ["system.rounds.deadline=600 s"])  # runs the deadline check
s = config.select_methods(s, list(s.methods)[:1])
config.resolved_yaml(s)
[config.section_key(getattr(s, name)) for name in ("data", "pretrain", "system")]
"""
    assert _heavy_modules_after(code) == []


def test_validate_command_is_light():
    code = """
from fedsim.cli import main
assert main(["validate", "scenarios/paper.yaml"]) == 0
assert main(["validate", "scenarios/paper.yaml", "--set", "methods.hp-fl.level=99"]) == 2
"""
    assert _heavy_modules_after(code) == []


def test_validate_a_study_is_light():
    """``fedsim validate STUDY.yaml`` loads the study and its base scenario,
    expands every cell, and rejects a bad override, all without torch."""
    code = """
from fedsim.cli import main
assert main(["validate", "scenarios/studies/link_vs_pruning.yaml"]) == 0
assert main(["validate", "scenarios/studies/link_vs_pruning.yaml", "--set", "study.seeds=x"]) == 2
"""
    assert _heavy_modules_after(code) == []


@pytest.mark.parametrize("code", [
    "from fedsim.pipeline import keys",
    "from fedsim.study import spec",
    "from fedsim import pipeline, study",
    "from fedsim.study import load; load('scenarios/studies/link_vs_pruning.yaml')",
])
def test_pipeline_and_study_imports_are_light(code):
    """The pipeline's and the study's package ``__init__`` load nothing until
    a name is used, so their light submodules stay light."""
    assert _heavy_modules_after(code) == []


def test_no_submodule_is_named_like_an_export():
    """Importing ``fedsim.pipeline.run`` would set ``pipeline.run`` to the
    module and hide the function (hence `runner`, `planner`)."""
    import pkgutil

    from fedsim import data, learn, pipeline, study, system

    for package in (data, learn, pipeline, study, system):
        names = {info.name for info in pkgutil.iter_modules(package.__path__)}
        assert names.isdisjoint(package.__all__), (package.__name__, names & set(package.__all__))


def test_the_packages_still_export_their_names():
    """The lazy package namespaces give the same objects as their modules."""
    import importlib

    from fedsim import data, learn, pipeline, study, system
    from fedsim.data import datasets
    from fedsim.learn import federated, model
    from fedsim.system import sim

    assert learn.train is federated.train and learn.LENET_SIZES is model.LENET_SIZES
    assert system.simulate is sim.simulate and data.DATASETS is datasets.DATASETS
    runner = importlib.import_module("fedsim.pipeline.runner")
    study_runner = importlib.import_module("fedsim.study.runner")
    planner = importlib.import_module("fedsim.study.planner")
    assert pipeline.run is runner.run and pipeline.compute is runner.compute
    assert study.run is study_runner.run and study.plan is planner.plan
    assert callable(pipeline.run) and callable(study.run) and callable(study.plan)
    training = importlib.import_module("fedsim.pipeline.training")
    assert pipeline._load_checkpoint is training.load_checkpoint  # the older private name
    assert study.OUTPUTS is importlib.import_module("fedsim.store.artifacts").STUDY_OUTPUTS
    assert pipeline.PAPER_REFERENCE is importlib.import_module("fedsim.report.reference").PAPER_REFERENCE
    for package in (data, learn, pipeline, study, system):
        assert all(hasattr(package, name) for name in package.__all__), package.__name__
        assert set(package.__all__) <= set(dir(package))
        with pytest.raises(AttributeError):
            package.no_such_name  # noqa: B018
