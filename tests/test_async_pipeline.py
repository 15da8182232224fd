"""Asynchronous (FedBuff) methods through the whole pipeline: the command line,
the cache, an interrupted run, the study plan, bad configs, and the report's
asynchronous parts (summary.md: a round is a server step; C, M, staleness; a
staleness figure per asynchronous method; synchronous reports unchanged)."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fedsim import config, pipeline
from fedsim.cli import main

TINY_ASYNC = {
    "name": "tiny_async",
    "seed": 0,
    "data": {"dataset": "mnist", "unlabeled": 1000,
             "partition": {"scheme": "shards", "num_clients": 4, "shard_size": 10, "shards_per_client": 10}},
    "pretrain": {"epochs": 1, "iterations": 1},
    "fl": {"local_epochs": 1},
    "methods": {
        "original": {},
        "fedbuff": {"kind": "original", "asynchronous": {"concurrency": 3, "buffer_size": 2}},
    },
    "system": {
        "clients": {"downlink": {"dist": "lognormal", "median": "20 Mbps", "sigma": 0.5},
                    "uplink": {"dist": "lognormal", "median": "5 Mbps", "sigma": 0.5},
                    "rtt": "50 ms", "speed": {"dist": "lognormal", "median": 1.0, "sigma": 0.8}},
        "server": {"downlink": "50 Mbps", "uplink": "50 Mbps"},
    },
    "targets": [0.5],
    "rounds": {"max": 5, "checkpoint_every": 2},
    "device": "cpu",
    "report": {"formats": ["png"]},
}


def _write(tmp_path: Path, scenario: dict, name: str = "tiny_async.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    return path


@pytest.fixture
def tiny_async(tmp_path: Path, cache_root: Path) -> Path:
    return _write(tmp_path, TINY_ASYNC)


def _run(path: Path, out: Path, *extra: str) -> int:
    return main(["scenario", str(path), "--out", str(out), "--quiet", "--workers", "1", *extra])


def test_the_cli_runs_an_async_scenario_with_server_steps_as_rounds(tiny_async: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(tiny_async, out) == 0
    rounds = pd.read_csv(out / "rounds.csv")
    steps = rounds[rounds["method"] == "fedbuff"]
    assert steps["round"].tolist() == [1, 2, 3, 4, 5]  # one row per server step
    assert (steps["participants"] == 2).all()  # each step aggregates the buffer, M = 2
    summary = (out / "summary.md").read_text()
    assert "## Asynchronous methods (FedBuff)" in summary
    assert "a **round is a server step**" in summary
    # the row of fedbuff: C 3, M 2, FedBuff weighting, lr 1, no discard, 5 steps, 10 updates used
    section = summary.split("## Asynchronous methods (FedBuff)")[1].split("## Definitions")[0]
    row = next(line for line in section.splitlines() if line.startswith("| fedbuff |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:8] == ["fedbuff", "3", "2", "1/sqrt(1+s)", "1", "none", "5", "10"]
    assert "| original |" not in section
    assert (out / "figures" / "staleness_fedbuff.png").is_file()
    assert not (out / "figures" / "staleness_original.png").exists()
    assert "figures/staleness_fedbuff.png" in summary


def test_the_staleness_in_the_report_is_the_schedules(tiny_async: Path, tmp_path: Path) -> None:
    from fedsim.pipeline.asynchronous import async_summaries

    result = pipeline.run(config.load(tiny_async), out_dir=tmp_path / "out", base_dir=tmp_path)
    assert result.methods["original"].schedule is None
    schedule = result.methods["fedbuff"].schedule
    assert schedule is not None
    (summary,) = async_summaries(result)
    used = schedule.updates[schedule.updates["step"] >= 1]
    assert summary.used == len(used) == 10
    assert summary.max_staleness_seen == int(schedule.steps["max_staleness"].max())
    assert summary.mean_staleness == pytest.approx(float(used["staleness"].mean()))
    # the schedule's per-step mean staleness, weighted by the updates of each step, is the same mean
    steps = schedule.steps
    assert summary.mean_staleness == pytest.approx(
        float(np.average(steps["mean_staleness"], weights=steps["updates"])))


def test_a_synchronous_report_has_no_asynchronous_parts(tmp_path: Path, cache_root: Path) -> None:
    sync = {**TINY_ASYNC, "name": "tiny_sync", "methods": {"original": {}}}
    out = tmp_path / "out"
    assert _run(_write(tmp_path, sync), out) == 0
    summary = (out / "summary.md").read_text()
    assert "Asynchronous" not in summary and "server step" not in summary
    assert not list((out / "figures").glob("staleness_*"))


def test_a_second_run_simulates_and_trains_nothing(tiny_async: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import fedsim.learn.asynchronous as learn_async
    import fedsim.system.asynchronous as system_async

    assert _run(tiny_async, tmp_path / "a") == 0

    def refuse(*args, **kwargs):
        raise AssertionError("a cached asynchronous stage was computed again")

    monkeypatch.setattr(learn_async, "train_async", refuse)
    monkeypatch.setattr(system_async, "simulate_async", refuse)
    assert _run(tiny_async, tmp_path / "b") == 0
    first, second = pd.read_csv(tmp_path / "a" / "rounds.csv"), pd.read_csv(tmp_path / "b" / "rounds.csv")
    pd.testing.assert_frame_equal(first, second)


def test_an_interrupted_async_training_resumes_to_the_same_trace(tiny_async: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import fedsim.learn.asynchronous as learn_async

    scenario = config.load(tiny_async, ["methods={fedbuff: {kind: original, asynchronous: "
                                        "{concurrency: 3, buffer_size: 2}}}"])
    reference = pipeline.run(scenario, out_dir=tmp_path / "ref", base_dir=tmp_path).rounds

    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache2"))
    real = learn_async.train_async

    def interrupted(*args, **kwargs):
        on_step = kwargs["on_step"]

        def hook(step, state, record):
            on_step(step, state, record)
            if step == 3:
                raise KeyboardInterrupt

        return real(*args, **{**kwargs, "on_step": hook})

    monkeypatch.setattr(learn_async, "train_async", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(scenario, out_dir=tmp_path / "out", base_dir=tmp_path)
    assert not (tmp_path / "out" / "rounds.csv").exists()

    started = []

    def resumed(*args, **kwargs):
        started.append(kwargs["start"].step if kwargs.get("start") is not None else 0)
        return real(*args, **kwargs)

    monkeypatch.setattr(learn_async, "train_async", resumed)
    again = pipeline.run(scenario, out_dir=tmp_path / "out", base_dir=tmp_path).rounds
    assert started and started[0] in (2, 3), started  # from a checkpoint, not from step 0
    pd.testing.assert_frame_equal(reference, again)


def test_the_study_plan_finds_the_async_stages(tmp_path: Path, cache_root: Path) -> None:
    from fedsim.study import load as load_study
    from fedsim.study.planner import plan

    base = _write(tmp_path, {**TINY_ASYNC, "rounds": {"max": 3, "checkpoint_every": 2}})
    study_path = tmp_path / "study.yaml"
    study_path.write_text(yaml.safe_dump({"study": {
        "name": "async_sweep", "base": base.name,
        "axes": {"methods.fedbuff.asynchronous.concurrency": [2, 3]}}}))
    study = load_study(study_path)
    before = plan(study, workers=1)
    # a FedBuff step is estimated as M of a round's K client updates (M 2 of K 4)
    train_s = {t.label: next(c for k, c in t.costs_s.items() if k[0] == "train") for t in before.tasks[:2]}
    assert train_s["fedbuff"] == pytest.approx(train_s["original"] * 2 / 4)
    # original: 1 simulation, 1 training shared by both cells; fedbuff: one of each per concurrency
    assert before.stage_counts["system"] == (3, 0)
    assert before.stage_counts["train"] == (3, 0)
    for cell in study.cells:
        pipeline.compute(cell.scenario, base_dir=tmp_path)
    after = plan(study, workers=1)
    assert after.stage_counts["system"] == (3, 3)
    assert after.stage_counts["train"] == (3, 3)


@pytest.mark.parametrize(("override", "key"), [
    ("methods.fedbuff.asynchronous.concurrency=0", "methods.fedbuff.asynchronous.concurrency"),
    ("methods.fedbuff.asynchronous.concurrency=9", "methods.fedbuff.asynchronous.concurrency: 9 exceeds"),
    ("methods.fedbuff.asynchronous.buffer_size=0", "methods.fedbuff.asynchronous.buffer_size"),
    ("methods.fedbuff.asynchronous.server_lr=0", "methods.fedbuff.asynchronous.server_lr"),
    ("methods.fedbuff.asynchronous.staleness=poly", "methods.fedbuff.asynchronous.staleness"),
    ("methods.fedbuff.compression={kind: qsgd, bits: 4}", "methods.fedbuff.asynchronous: does not combine"),
    ("fl.server={optimizer: fedadam}", "methods.fedbuff.asynchronous: does not combine"),
])
def test_a_bad_async_config_exits_2_naming_the_key(tiny_async: Path, tmp_path: Path, override: str, key: str,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run_module = importlib.import_module("fedsim.pipeline.runner")  # the package exports run(), a function

    monkeypatch.setattr(run_module, "prepare_data", lambda *a, **k: pytest.fail("a stage ran"))
    assert _run(tiny_async, tmp_path / "out", "--set", override) == 2
    err = capsys.readouterr().err
    assert "tiny_async.yaml" in err and key in err, err


def test_a_buffer_larger_than_the_concurrency_is_valid(tiny_async: Path) -> None:
    """M > C is FedBuff's buffer filled over several rounds of the C clients:
    every used update is then stale, but the schedule is well defined."""
    scenario = config.load(tiny_async, ["methods.fedbuff.asynchronous.buffer_size=5"])
    assert scenario.methods["fedbuff"].asynchronous.buffer_size == 5


def test_an_async_summary_counts_the_used_updates_by_hand() -> None:
    from fedsim.report.methods import MethodStyle
    from fedsim.report.scenario.asynchronous import AsyncSummary, async_markdown, staleness_figure
    from fedsim.system.async_spec import AsyncConfig

    # six updates: used by steps 1, 1, 2, 3 with staleness 0, 0, 1, 2; one dropped, one unused
    updates = pd.DataFrame({"step": [1, 1, 2, -1, 3, -1], "staleness": [0, 0, 1, -1, 2, -1]})
    cfg = AsyncConfig(concurrency=4, buffer_size=2, staleness="constant", server_lr=0.5, max_staleness=3)
    full = AsyncSummary.from_updates("fb", cfg, updates, steps=3)
    assert full.counts == (2, 1, 1) and full.used == 4
    assert full.mean_staleness == pytest.approx(0.75) and full.max_staleness_seen == 2
    cut = AsyncSummary.from_updates("fb", cfg, updates, steps=2)  # a trace stopped after step 2
    assert cut.counts == (2, 1) and cut.mean_staleness == pytest.approx(1 / 3)
    lines = async_markdown([full])
    assert lines[0] == "## Asynchronous methods (FedBuff)"
    assert "| fb | 4 | 2 | constant | 0.5 | 3 | 3 | 4 | 0.75 | 2 |" in lines[4]
    assert async_markdown([]) == []
    none = AsyncSummary.from_updates("fb", cfg, updates, steps=0)
    assert none.used == 0 and none.max_staleness_seen is None
    assert "| n/a | n/a |" in async_markdown([none])[4]
    style = MethodStyle.build({"methods": ["fb"]}, ["fb"])
    for summary in (full, none):  # an empty distribution still draws its axes
        assert staleness_figure(summary, style).axes


def test_the_training_throughput_bench_times_the_plans_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedsim import bench
    from fedsim.bench import async_training, learn

    out = async_training.bench_async_training(clients=8, concurrency=8, buffer_size=2, sync_rounds=1,
                                              warm=2, window=3, repeats=1, local_epochs=1)
    plan = async_training.fedbuff_plan(8, 8, 2, 2 + 3 + 4)
    from fedsim.learn.asynchronous import training_batches

    assert out["async_train_timed_updates"] == sum(len(b.members) for b in training_batches(plan) if 2 < b.step <= 5)
    assert out["sync_train_updates_per_s"] > 0 and out["async_train_updates_per_s"] > 0
    assert out["async_over_sync_train"] == pytest.approx(
        out["sync_train_updates_per_s"] / out["async_train_updates_per_s"], rel=0.01)
    # wired into `fedsim bench`'s learn part
    monkeypatch.setattr(learn, "bench_round", lambda progress=False: {"round_s": 1.0})
    monkeypatch.setattr(async_training, "bench_async_training", lambda progress=False: {"async_over_sync_train": 1.2})
    assert bench.PARTS["learn"](False) == {"round_s": 1.0, "async_over_sync_train": 1.2}
