"""Cache keys that record which engine or batching computed an entry: a
change that alters results must reach the keys of the entries it alters, and
only those."""

from pathlib import Path

import torch

from fedsim import config
from fedsim.learn.asynchronous import BATCHING
from fedsim.pipeline import keys
from fedsim.pipeline.asynchronous import async_train_entry

ROOT = Path(__file__).parents[1]


def test_fluid_engine_version_keys_dynamic_and_cell_systems_only():
    static = config.load(ROOT / "scenarios" / "mobile.yaml")
    dynamic = config.load(ROOT / "scenarios" / "mobile_dynamic.yaml")
    assert "fluid_engine" not in keys.system_facts(static, ROOT / "scenarios")
    facts = keys.system_facts(dynamic, ROOT / "scenarios")
    assert facts["fluid_engine"] == keys.FLUID_ENGINE_VERSION
    cells_only = config.load(ROOT / "scenarios" / "mobile.yaml",
                             ["system.cells={a: {capacity_down: 50 Mbps, capacity_up: 20 Mbps}}"])
    assert "fluid_engine" in keys.system_facts(cells_only, ROOT / "scenarios")


def test_async_training_key_names_the_batching(monkeypatch):
    from fedsim.learn.asynchronous import AsyncUpdate

    scenario = config.load(ROOT / "scenarios" / "mobile_async.yaml")
    label = next(k for k, m in scenario.methods.items() if m.asynchronous is not None)
    plan = [[AsyncUpdate(0, 0, 1.0), AsyncUpdate(1, 0, 1.0)]]
    method = scenario.methods[label]
    before = async_train_entry(scenario, method, plan, torch.device("cpu"))
    monkeypatch.setattr("fedsim.learn.asynchronous.BATCHING", BATCHING + "-other")
    after = async_train_entry(scenario, method, plan, torch.device("cpu"))
    assert before.key != after.key
