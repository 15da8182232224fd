"""The edge does not import the engine: loading and validating a scenario, and
``fedsim validate``, import neither torch nor simpy (docs/performance.md).

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


def test_the_packages_still_export_their_names():
    """The lazy package namespaces give the same objects as their modules."""
    from fedsim import data, learn, system
    from fedsim.data import datasets
    from fedsim.learn import federated, model
    from fedsim.system import sim

    assert learn.train is federated.train and learn.LENET_SIZES is model.LENET_SIZES
    assert system.simulate is sim.simulate and data.DATASETS is datasets.DATASETS
    for package in (data, learn, system):
        assert all(hasattr(package, name) for name in package.__all__), package.__name__
        assert set(package.__all__) <= set(dir(package))
        with pytest.raises(AttributeError):
            package.no_such_name  # noqa: B018
