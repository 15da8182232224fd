"""Parameter studies: expansion, key-path validation, planning, executors, resume.

The end-to-end studies use tests/scenarios/tiny.yaml reduced to one method
(hp-fl) and 2 rounds: 3 uplinks x 2 remaining rates = 6 cells, which share one
pre-training and 2 trainings and need 6 simulations.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fedsim import pipeline, study
from fedsim.bench import sweep as bench_sweep
from fedsim.errors import InputError
from fedsim.pipeline import keys, training
from fedsim.study import executors

TINY = Path(__file__).parent / "scenarios" / "tiny.yaml"

GRID = {
    "name": "tiny_grid",
    "description": "3 uplinks x 2 rates on the tiny scenario",
    "base": str(TINY),
    "set": {"rounds.max": 2, "targets": [0.2], "methods": {"hp-fl": {"remaining_rate": 0.8}}},
    "axes": {
        "system.clients.uplink": {"geometric": {"start": "1 Mbps", "stop": "100 Mbps", "num": 3}},
        "methods.hp-fl.remaining_rate": [1.0, 0.8],
    },
    "seeds": [0],
}


def write_study(directory: Path, **changes: object) -> Path:
    spec = {**GRID, **changes}
    spec = {k: v for k, v in spec.items() if v is not None}
    path = directory / "study.yaml"
    path.write_text(yaml.safe_dump({"study": spec}, sort_keys=False))
    return path


def cache_entries(root: Path) -> dict[str, int]:
    """Every sealed cache entry -> the mtime (ns) of its manifest."""
    return {str(p.parent.relative_to(root)): p.stat().st_mtime_ns
            for p in root.glob("*/*/manifest.json")}


# --------------------------------------------------------------------------- values


def test_geometric_range_by_hand() -> None:
    values, labels = study.expand_range(
        study.AxisRange(geometric={"start": "1 Mbps", "stop": "100 Mbps", "num": 3}))
    assert values == [1e6, 1e7, 1e8]
    assert labels == ["1 Mbps", "10 Mbps", "100 Mbps"]
    values, labels = study.expand_range(
        study.AxisRange(geometric={"start": "0.5 Mbps", "stop": "50 Mbps", "num": 7}))
    # ratio 100^(1/6) = 2.1544...: 0.5, 1.077, 2.321, 5, 10.77, 23.21, 50 Mbps
    assert values[3] == pytest.approx(5e6, rel=1e-12)
    assert values[1] == pytest.approx(0.5e6 * 100 ** (1 / 6), rel=1e-11)  # 12 digits kept
    assert labels == ["0.5 Mbps", "1.08 Mbps", "2.32 Mbps", "5 Mbps", "10.8 Mbps", "23.2 Mbps",
                      "50 Mbps"]
    # P_R = 0.8^k from 1 down to 0.8^10 = 0.107: the ratio is 0.8
    values, _ = study.expand_range(
        study.AxisRange(geometric={"start": 1.0, "stop": 0.8**10, "num": 11}))
    assert values == pytest.approx([0.8**k for k in range(11)], rel=1e-11)


def test_linear_range_and_units() -> None:
    values, labels = study.expand_range(study.AxisRange(linear={"start": 0, "stop": 1, "num": 5}))
    assert values == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert labels == ["0", "0.25", "0.5", "0.75", "1"]
    values, labels = study.expand_range(
        study.AxisRange(linear={"start": "10 ms", "stop": "50 ms", "num": 3}))
    assert values == pytest.approx([0.01, 0.03, 0.05])
    assert labels == ["10 ms", "30 ms", "50 ms"]
    with pytest.raises(InputError, match="same kind"):
        study.expand_range(study.AxisRange(linear={"start": "1 Mbps", "stop": "1 s", "num": 2}))
    with pytest.raises(InputError, match="must be > 0"):
        study.expand_range(study.AxisRange(geometric={"start": 0, "stop": 1, "num": 2}))


# --------------------------------------------------------------------------- loading


def test_grid_expansion(tmp_path: Path) -> None:
    spec = study.load(write_study(tmp_path, seeds=[0, 3]))
    assert [c.id for c in spec.cells] == [f"c{i:03d}" for i in range(12)]
    # first axis outermost, seeds innermost
    got = [(c.labels["system.clients.uplink"], c.values["methods.hp-fl.remaining_rate"], c.seed)
           for c in spec.cells[:5]]
    assert got == [("1 Mbps", 1.0, 0), ("1 Mbps", 1.0, 3), ("1 Mbps", 0.8, 0),
                   ("1 Mbps", 0.8, 3), ("10 Mbps", 1.0, 0)]
    cell = spec.cells[4]
    assert cell.scenario.seed == 0
    assert cell.scenario.system.clients.uplink.value == 1e7  # a constant, in bit/s
    assert cell.scenario.methods["hp-fl"].remaining_rate == 1.0
    assert cell.scenario.rounds.max == 2  # study.set applies to every cell
    assert cell.numbers == {"system.clients.uplink": 1e7, "methods.hp-fl.remaining_rate": 1.0}


def test_zip_expansion(tmp_path: Path) -> None:
    axes = {"system.clients.uplink": ["1 Mbps", "2 Mbps", "4 Mbps"],
            "system.clients.rtt": ["10 ms", "20 ms", "40 ms"]}
    spec = study.load(write_study(tmp_path, axes=axes, mode="zip"))
    assert [(c.labels["system.clients.uplink"], c.labels["system.clients.rtt"])
            for c in spec.cells] == [("1 Mbps", "10 ms"), ("2 Mbps", "20 ms"), ("4 Mbps", "40 ms")]
    assert [c.numbers["system.clients.rtt"] for c in spec.cells] == pytest.approx([0.01, 0.02, 0.04])
    axes["system.clients.rtt"] = ["10 ms", "20 ms"]
    with pytest.raises(InputError, match=r"zip needs axes of equal length.*uplink: 3.*rtt: 2"):
        study.load(write_study(tmp_path, axes=axes, mode="zip"))


def test_axis_typo_names_the_valid_keys(tmp_path: Path) -> None:
    path = write_study(tmp_path, axes={"system.clients.uplnk": ["1 Mbps"]})
    with pytest.raises(InputError) as err:
        study.load(path)
    message = str(err.value)
    assert str(path) in message and "study.axes.system.clients.uplnk" in message
    assert "unknown key 'uplnk' under system.clients" in message
    assert "downlink, dynamics, rtt, sessions, speed, trace, uplink" in message
    with pytest.raises(InputError, match=r"unknown key 'rond' at the top level; valid keys: .*rounds"):
        study.load(write_study(tmp_path, set={"rond.max": 3}))


def test_axes_say_what_they_set(tmp_path: Path) -> None:
    """An axis' quantity comes from the unit written (a range, or a list of
    quantities) or else from the scenario field; never from its name."""
    spec = study.load(write_study(tmp_path, axis_titles={"system.clients.uplink": "client uplink"}))
    uplink, rate = spec.axes.values()
    assert (uplink.path, uplink.quantity, uplink.unit, uplink.si_unit) == (
        "system.clients.uplink", "bandwidth", "Mbps", "bit/s")
    assert uplink.values == [1e6, 1e7, 1e8] and uplink.labels == ["1 Mbps", "10 Mbps", "100 Mbps"]
    assert uplink.title == "client uplink" and uplink.is_bandwidth and not uplink.is_remaining_rate
    assert (rate.quantity, rate.unit, rate.title) == (None, None, "methods.hp-fl.remaining_rate")
    assert rate.is_remaining_rate and not rate.is_bandwidth
    assert spec.axis_labels["methods.hp-fl.remaining_rate"] == ["1", "0.8"]
    # bare numbers in SI units: the field says bit/s; a list of durations: the unit
    spec = study.load(write_study(tmp_path, axes={
        "system.server.downlink": [1e8, 1e9], "system.clients.rtt": ["10 ms", "20 ms"],
        "system.rounds.deadline": [60, 120], "fl.lr": [0.1, 0.05]}))
    assert {a.path: (a.quantity, a.unit) for a in spec.axes.values()} == {
        "system.server.downlink": ("bandwidth", None), "system.clients.rtt": ("duration", "ms"),
        "system.rounds.deadline": ("duration", None), "fl.lr": (None, None)}


def test_method_label_axes(tmp_path: Path) -> None:
    # a key of a method needs the label in the base scenario ...
    with pytest.raises(InputError, match=r"no methods entry 'hp-fl2' \(it has: hp-fl\)"):
        study.load(write_study(tmp_path, axes={"methods.hp-fl2.remaining_rate": [0.8]}))
    # ... a whole method mapping may be new; its values are not numbers, so the
    # sweep gets their positions
    spec = study.load(write_study(tmp_path, axes={
        "methods.rp": [{"kind": "random-pruning", "remaining_rate": 0.8},
                       {"kind": "random-pruning", "level": 0}]}))
    assert [c.numbers["methods.rp"] for c in spec.cells] == [0.0, 1.0]
    assert spec.cells[1].labels["methods.rp"] == "{kind: random-pruning, level: 0}"
    assert list(spec.cells[0].scenario.methods) == ["hp-fl", "rp"]


def test_study_file_errors(tmp_path: Path) -> None:
    path = write_study(tmp_path, axis={"seed": [0]})
    with pytest.raises(InputError, match=r"study.axis: unknown key 'axis'; valid keys here: name, "):
        study.load(path)
    with pytest.raises(InputError, match=r"study.axes: .*axis 'seed'.*unknown range kind 'geometrc'"):
        study.load(write_study(tmp_path, axes={"seed": {"geometrc": {"start": 1, "stop": 2}}}))
    with pytest.raises(InputError, match=r"study\.base: 'missing\.yaml'.*does not exist"):
        study.load(write_study(tmp_path, base="missing.yaml"))
    # a cell that the scenario schema rejects names the cell and the key
    with pytest.raises(InputError, match=r"cell c001 \(methods.hp-fl.remaining_rate=0.5\).*"
                                         r"methods.hp-fl.remaining_rate: no pruning level"):
        study.load(write_study(tmp_path, axes={"methods.hp-fl.remaining_rate": [0.8, 0.5]}))


# --------------------------------------------------------------------------- planning


def test_plan_shares_stages(tmp_path: Path, cache_root: Path) -> None:
    spec = study.load(write_study(tmp_path))
    plan = study.plan(spec, workers=2)
    # 3 uplinks x 2 rates: one pre-training, one training per rate, a simulation per cell
    assert plan.stage_counts == {"pretrain": (1, 0), "train": (2, 0), "system": (6, 0)}
    roles = sorted(plan.roles.values())
    assert roles == ["pre-train", "simulate", "simulate", "simulate", "simulate", "train"]
    assert plan.estimate_s > 0
    text = plan.describe()
    assert "6 cells = 3 system.clients.uplink x 2 methods.hp-fl.remaining_rate (grid)" in text
    assert "trainings          2   (0 cached, 2 to run)" in text
    assert not list(cache_root.glob("*/*"))  # planning writes nothing


def test_training_groups_follow_participation(tmp_path: Path, cache_root: Path) -> None:
    """Bandwidths change the training key only when participation can depend on them."""
    spec = study.load(write_study(tmp_path))
    groups = {keys.train_group(c.scenario, "hp-fl", spec.base_dir) for c in spec.cells}
    assert len(groups) == 2  # one per rate
    deadline = study.load(write_study(tmp_path, set={**GRID["set"], "system.rounds.deadline": "60 s"}))
    groups = {keys.train_group(c.scenario, "hp-fl", spec.base_dir) for c in deadline.cells}
    assert len(groups) == 6  # timing decides who is aggregated: every cell trains


# --------------------------------------------------------------------------- running


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[study.StudyResult, Path]]:
    """The tiny grid run in this process (workers=1) on a cold cache."""
    directory = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEDSIM_CACHE", str(directory / "cache"))
        spec = study.load(write_study(directory))
        yield study.run(spec, out_dir=directory / "out", workers=1), directory / "cache"


def test_local_in_process_end_to_end(local_run: tuple[study.StudyResult, Path],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    result, cache = local_run
    assert not result.failed
    sweep = result.sweep
    assert len(sweep) == 6  # 6 cells x 1 method x 1 target
    assert list(sweep.columns[:6]) == ["cell", "seed", "system.clients.uplink",
                                       "methods.hp-fl.remaining_rate",
                                       "system.clients.uplink_label",
                                       "methods.hp-fl.remaining_rate_label"]
    assert sweep["system.clients.uplink"].tolist() == [1e6, 1e6, 1e7, 1e7, 1e8, 1e8]
    assert sweep["remaining_rate"].round(3).tolist() == [1.0, 0.8] * 3
    # a cell's metrics are those of its scenario run through the pipeline (from the cache)
    monkeypatch.setenv("FEDSIM_CACHE", str(cache))
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("training ran"))
    for cell in (result.study.cells[0], result.study.cells[5]):  # 1 Mbps at P_R 1, 100 Mbps at 0.8
        alone = pipeline.compute(cell.scenario, base_dir=result.study.base_dir).metrics
        rows = sweep[sweep["cell"] == cell.id]
        for column in ("remaining_rate", "nra", "cca_bytes", "cta_s", "tta_s", "final_accuracy"):
            assert rows[column].tolist() == alone[column].tolist(), (cell.id, column)
    # every cell reaches its target; faster uplinks shorten the time to it and
    # change neither rounds, traffic nor compute; sparser models send fewer bytes
    assert sweep["nra"].notna().all()
    by_rate = sweep.sort_values("system.clients.uplink").groupby("methods.hp-fl.remaining_rate")
    for rate, rows in by_rate:
        assert rows["tta_s"].is_monotonic_decreasing and rows["tta_s"].nunique() == 3, rate
        for column in ("nra", "cca_bytes", "cta_s"):
            assert rows[column].nunique() == 1, (rate, column)
    per_round = sweep.groupby("methods.hp-fl.remaining_rate")["comm_bytes_per_round"].first()
    assert per_round[0.8] < per_round[1.0]
    # the 3 caches: 1 ticket, 2 traces, 6 simulations
    stages = [key.split("/")[0] for key in cache_entries(cache)]
    assert sorted(stages) == ["pretrain"] + ["system"] * 6 + ["train"] * 2
    out = result.out_dir
    for name in ("sweep.csv", "sweep.parquet", "study.resolved.yaml", "summary.md",
                 "figures/heatmap_tta_20.png"):
        assert (out / name).is_file(), name
    assert not (out / "failures.csv").exists()
    assert pd.read_parquet(out / "sweep.parquet").equals(sweep)
    resolved = yaml.safe_load((out / "study.resolved.yaml").read_text())
    assert resolved["study"]["axes"]["system.clients.uplink"] == [1e6, 1e7, 1e8]
    assert resolved["cells"][0]["methods"] == {"hp-fl": "ok"}


def test_sweep_rows_equal_a_scenario_run(local_run: tuple[study.StudyResult, Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A cell's rows are the metrics.csv of its scenario run on its own."""
    result, cache = local_run
    monkeypatch.setenv("FEDSIM_CACHE", str(cache))
    cell = result.study.cells[3]
    metrics = pipeline.compute(cell.scenario, base_dir=result.study.base_dir).metrics
    rows = result.sweep[result.sweep["cell"] == cell.id][list(metrics.columns)]
    pd.testing.assert_frame_equal(rows.reset_index(drop=True), metrics.reset_index(drop=True))
    # everything is cached now: the plan says so
    plan = study.plan(result.study)
    assert plan.stage_counts == {"pretrain": (1, 1), "train": (2, 2), "system": (6, 6)}
    assert set(plan.roles.values()) == {"cached"}


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition``; the 120 s limit only turns a broken handshake into a
    failure instead of a hang (nothing depends on how long anything takes)."""
    deadline = time.monotonic() + 120.0
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"test hook: gave up waiting for {what}")
        time.sleep(0.02)


def _fail_two(task_id: str) -> None:
    """Test hook, run in the worker before a task, with a file handshake and no
    timing: the first time, c000/hp-fl (training the rate-1 trace) marks that it
    runs and then blocks until the broken pool terminates its worker;
    c005/hp-fl (scheduled beside it once the rate-0.8 trace exists) waits for
    that mark and kills its own worker; c004/hp-fl raises."""
    flags = Path(os.environ["FEDSIM_CACHE"]).parent
    if task_id == "c000/hp-fl" and not (flags / "c000-ran").exists():
        (flags / "c000-ran").touch()
        _wait_for(lambda: False, "the pool to terminate this worker")
    if task_id == "c005/hp-fl":
        _wait_for((flags / "c000-ran").exists, "c000/hp-fl to start")
        os._exit(3)
    if task_id == "c004/hp-fl":
        raise RuntimeError("injected failure")


def test_pool_failures_then_resume(local_run: tuple[study.StudyResult, Path], tmp_path: Path,
                                   cache_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two spawned workers on a cold cache: a task that raises and a worker that
    dies lose nothing else, the pool's rows equal the in-process ones, and a
    rerun computes only the missing stages."""
    result, _ = local_run
    spec = result.study
    first = study.run(spec, out_dir=tmp_path / "out", workers=2, before_task=_fail_two)
    errors = {o.task_id: o.error for o in first.failed}
    assert list(errors) == ["c004/hp-fl", "c005/hp-fl"]
    assert errors["c005/hp-fl"].startswith("worker process died")
    assert errors["c004/hp-fl"] == "RuntimeError: injected failure"
    # c000 was running when c005 killed the pool: it ran again and succeeded
    assert "running 2 task(s) again one at a time" in caplog.text
    assert first.outcomes["c000/hp-fl"].ok
    assert {o.worker for o in first.outcomes.values()} != {result.outcomes["c000/hp-fl"].worker}
    kept = result.sweep[result.sweep["cell"].isin(["c000", "c001", "c002", "c003"])]
    pd.testing.assert_frame_equal(first.sweep, kept.reset_index(drop=True))
    failures = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert failures[["cell", "method"]].values.tolist() == [["c004", "hp-fl"], ["c005", "hp-fl"]]
    assert "injected failure" in failures["traceback"][0]
    before = cache_entries(cache_root)
    # c004 and c005 (100 Mbps, rates 1 and 0.8) had their own simulations
    assert sorted(k.split("/")[0] for k in before) == ["pretrain"] + ["system"] * 4 + ["train"] * 2

    second = study.run(spec, out_dir=tmp_path / "out", workers=1)
    assert not second.failed
    after = cache_entries(cache_root)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing recomputed
    assert sorted(k.split("/")[0] for k in set(after) - set(before)) == ["system", "system"]
    assert not (tmp_path / "out" / "failures.csv").exists()
    pd.testing.assert_frame_equal(second.sweep, result.sweep)


def test_cached_only_reports_the_cache_and_fails_what_is_not_there(
        local_run: tuple[study.StudyResult, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--cached-only trains nothing: on a warm cache it gives the same rows;
    with rounds.max raised, each task ends at its last cached round; a study
    whose trainings are not cached fails every task, naming the stage."""
    result, cache = local_run
    monkeypatch.setenv("FEDSIM_CACHE", str(cache))
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("training ran"))
    again = study.run(result.study, out_dir=tmp_path / "again", workers=1, cached_only=True)
    assert not again.failed
    pd.testing.assert_frame_equal(again.sweep, result.sweep)
    longer = study.run(study.load(write_study(tmp_path, set={**GRID["set"], "rounds.max": 5})),
                       out_dir=tmp_path / "longer", workers=1, cached_only=True)
    assert not longer.failed
    assert set(longer.sweep["rounds_run"]) == {2}
    (tmp_path / "other").mkdir()
    other = study.run(study.load(write_study(tmp_path / "other", seeds=[7])), out_dir=tmp_path / "other" / "out",
                      workers=1, cached_only=True)
    assert len(other.failed) == 6
    assert all("is not in the cache, and --cached-only computes nothing" in o.error for o in other.failed)


def test_bad_executor_arguments(local_run: tuple[study.StudyResult, Path]) -> None:
    result, _ = local_run
    with pytest.raises(InputError, match="unknown executor 'dask'"):
        study.run(result.study, executor="dask")
    with pytest.raises(InputError, match="--address applies only to --executor ray"):
        study.run(result.study, address="auto")


@pytest.mark.ray
def test_ray_executor_matches_local(local_run: tuple[study.StudyResult, Path], tmp_path: Path,
                                    cache_root: Path) -> None:
    """A local Ray runtime on a cold cache gives the local executor's frame."""
    pytest.importorskip("ray")
    result, _ = local_run
    on_ray = study.run(result.study, out_dir=tmp_path / "out", executor="ray", workers=2)
    assert not on_ray.failed
    pd.testing.assert_frame_equal(on_ray.sweep, result.sweep)
    assert len(cache_entries(cache_root)) == 9  # the workers wrote into FEDSIM_CACHE


def test_ray_missing_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(InputError, match=r"pip install 'fedsim-cost\[ray\]'"):
        executors.import_ray()


def test_synthetic_trace_is_labelled() -> None:
    trace = bench_sweep.synthetic_trace(300, 4, 400, 60, 5)
    assert trace.num_rounds == 300 and len(trace.client_rounds) == 1200
    assert trace.meta["synthetic"]
    assert int(trace.client_rounds["local_steps"][0]) == 35  # ceil(400 / 60) x 5 epochs
    first = int((trace.accuracy >= 0.95).argmax()) + 1
    assert first == math.ceil(40 * math.log(0.876 / 0.026))  # 141


def test_cli_plan_and_validate(tmp_path: Path, cache_root: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    from fedsim import cli

    path = write_study(tmp_path)
    assert cli.main(["sweep", str(path), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "6 cells" in out and "pre-trainings      1   (0 cached, 1 to run)" in out
    assert cli.main(["validate", str(path)]) == 0
    assert "valid study 'tiny_grid' with 6 cells" in capsys.readouterr().out
    bad = write_study(tmp_path, axes={"system.clients.uplnk": ["1 Mbps"]})
    assert cli.main(["sweep", str(bad)]) == 2
    assert "unknown key 'uplnk'" in capsys.readouterr().err


def test_bench_sweep_reports_its_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """The figures describe the study that ran: every cell simulated from the
    injected trace (training never runs), counts from its cells and rounds,
    rates = count / the reported seconds, parts within the whole. No speed is
    asserted here: targets belong to `fedsim bench`."""
    runs: list[study.StudyResult] = []
    real_run = study.run

    def spy(*args: object, **kwargs: object) -> study.StudyResult:
        runs.append(real_run(*args, **kwargs))
        return runs[-1]

    monkeypatch.setattr(study, "run", spy)
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("training ran"))
    figures = bench_sweep.bench_sweep(cells=2, rounds=20, workers=1)
    [result] = runs
    cells = len(result.study.cells)
    assert cells == 2 and len(result.outcomes) == cells and not result.failed
    assert figures["sweep_workers"] == result.plan.workers == 1
    assert set(result.sweep["rounds_run"]) == {20}
    clients = {c.scenario.data.partition.num_clients for c in result.study.cells}
    assert [figures["sweep_client_rounds_per_cell"]] == [20 * k for k in clients]
    total_s = figures[f"sweep_{cells}_cells_s"]  # rounded to 0.01 s, the rate to 0.001/s
    assert figures["sweep_cells_per_s"] == pytest.approx(cells / total_s,
                                                         abs=5e-4 + cells * 0.005 / total_s**2)
    for part in ("plan", "tasks", "outputs"):
        assert figures[f"sweep_{part}_s"] == round(result.seconds[f"{part}_s"], 2)
    rounding_s = 0.005
    parts_s = figures["sweep_plan_s"] + figures["sweep_tasks_s"] + figures["sweep_outputs_s"]
    assert parts_s <= total_s + 4 * rounding_s
    # one worker runs the cells one after another, inside the tasks' time
    assert cells * figures["sweep_cell_mean_s"] <= figures["sweep_tasks_s"] + (cells + 1) * rounding_s
    stages_s = sum(v for k, v in figures.items() if k.startswith("sweep_cell_") and k != "sweep_cell_mean_s")
    assert stages_s <= figures["sweep_cell_mean_s"] + 0.01
    assert {"sweep_cell_train_s", "sweep_cell_system_s"} <= set(figures)
    assert "synthetic" in figures["sweep_trace"]
