"""A scenario's stages on the parallel schedule (fedsim.pipeline.parallel):
the same tables as the sequential schedule, resume after an interrupt or a
killed worker, a failing method named, the schedule choice, the progress line.

The end-to-end tests start worker processes (spawn + import torch: seconds
each, more on a loaded machine): the byte-identity test runs by default, the
failure, killed-worker and SIGINT ones are marked slow; the unit tests below
them take milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from fedsim import config, pipeline, store
from fedsim.errors import InputError
from fedsim.pipeline import threads
from fedsim.progress import Progress, running_status
from fedsim.study.schedule import Scheduler

SEQUENTIAL = ["parallel.workers=1", "parallel.threads=1"]
PARALLEL = ["parallel.workers=2", "parallel.threads=1"]
TABLES = ("metrics.csv", "rounds.csv")


def _run(tiny_path: Path, cache: Path, out: Path, overrides: list[str],
         monkeypatch: pytest.MonkeyPatch, **kwargs: object) -> pipeline.ScenarioResult:
    monkeypatch.setenv("FEDSIM_CACHE", str(cache))  # the workers inherit it at spawn
    scenario = config.load(tiny_path, overrides)
    return pipeline.run(scenario, out_dir=out, base_dir=tiny_path.parent, **kwargs)  # type: ignore[arg-type]


def _same_tables(a: Path, b: Path) -> None:
    for name in TABLES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> Path:
    """The tiny scenario on the sequential schedule with 1 torch thread (the reference)."""
    tmp = tmp_path_factory.mktemp("sequential")
    with pytest.MonkeyPatch.context() as mp:
        result = _run(Path(__file__).parent / "scenarios" / "tiny.yaml", tmp / "cache", tmp / "out",
                      SEQUENTIAL, mp)
    assert result.schedule["workers"] == 1 and result.schedule["threads"] == 1
    return tmp / "out"


def test_a_fresh_sequential_run_records_the_threads_that_trained_each_method(sequential: Path) -> None:
    """The traces a run has just trained carry the checkpoint's meta, so
    provenance names their torch threads as a run served from the cache does."""
    provenance = json.loads((sequential / "provenance.json").read_text())
    assert provenance["training_torch_threads"] == {"original": 1, "hp-fl": 1}


def test_parallel_run_gives_the_sequential_tables_byte_for_byte(
        sequential: Path, tiny_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2 workers x 1 thread: original starts at once beside the pre-training,
    hp-fl after it; metrics.csv and rounds.csv equal the sequential run's with
    1 thread, and provenance says who trained what on how many threads."""
    result = _run(tiny_path, tmp_path / "cache", tmp_path / "out", PARALLEL, monkeypatch)
    _same_tables(sequential, tmp_path / "out")
    schedule = result.schedule
    assert schedule["workers"] == 2 and schedule["threads"] == 1
    assert set(schedule["tasks"]) == {"pretrain", "original", "hp-fl"}
    assert all(t["torch_threads"] == 1 for t in schedule["tasks"].values())
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["schedule"]["workers"] == 2
    assert provenance["training_torch_threads"] == {"original": 1, "hp-fl": 1}
    assert "parallel" in provenance["stage_seconds"]
    # a second run finds everything cached: no worker is started
    again = _run(tiny_path, tmp_path / "cache", tmp_path / "again", PARALLEL, monkeypatch)
    assert "tasks" not in again.schedule
    _same_tables(sequential, tmp_path / "again")


_HOOKS = '''
import os, signal, sys
from pathlib import Path
from fedsim import store

def fail_hp_fl(task_id):
    if task_id == "hp-fl":
        raise ValueError("boom in hp-fl")

def kill_original_once(task_id):
    marker = store.cache_dir() / "killed-once"
    if task_id == "original" and not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.fixture
def hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """Test hooks in an importable module (spawned workers unpickle them by name)."""
    (tmp_path / "parallel_hooks.py").write_text(_HOOKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    import importlib

    return importlib.import_module("parallel_hooks")


def _parallel_compute(tiny_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                      before_task: object) -> pipeline.ScenarioResult:
    from fedsim.pipeline import parallel

    monkeypatch.setenv("FEDSIM_CACHE", str(cache))
    scenario = config.load(tiny_path, PARALLEL)
    real = parallel.run_parallel

    def with_hook(*args: object, **kwargs: object) -> dict:
        return real(*args, **kwargs, before_task=before_task)  # type: ignore[arg-type]

    monkeypatch.setattr(parallel, "run_parallel", with_hook)
    return pipeline.compute(scenario, base_dir=tiny_path.parent)


@pytest.mark.slow
def test_a_failing_method_is_named_and_the_others_keep_their_stages(
        tiny_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hooks: object) -> None:
    with pytest.raises(RuntimeError, match=r"method 'hp-fl': ValueError: boom in hp-fl"):
        _parallel_compute(tiny_path, tmp_path / "cache", monkeypatch, hooks.fail_hp_fl)  # type: ignore[attr-defined]
    assert list((tmp_path / "cache").glob("pretrain/*/manifest.json")), "the pre-training is kept"


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_the_result_is_unchanged(
        sequential: Path, tiny_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        hooks: object) -> None:
    result = _parallel_compute(tiny_path, tmp_path / "cache", monkeypatch,
                               hooks.kill_original_once)  # type: ignore[attr-defined]
    assert (tmp_path / "cache" / "killed-once").exists()
    assert result.schedule["tasks"]["original"]["torch_threads"] == 1  # rerun with its threads
    from fedsim.pipeline.outputs import write_outputs

    write_outputs(result, tmp_path / "out", None, False)
    _same_tables(sequential, tmp_path / "out")


def _default_sigint() -> None:
    """In the child before exec: SIGINT's default action (Python then raises
    KeyboardInterrupt on it), whatever the test runner inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_sigint_to_the_parent_checkpoints_and_a_rerun_gives_the_uninterrupted_tables(
        tiny_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT to `fedsim scenario` on 2 workers: exit 130 once a method has
    a checkpoint; the rerun resumes and its tables equal a sequential run's.
    The child gets SIGINT's default action back: launched from a background
    job of a non-interactive shell (as CI may be), it would inherit SIGINT
    ignored, as such jobs do (cli.py), and finish with 0."""
    rounds = ["rounds.max=6", "rounds.checkpoint_every=1"]
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "fedsim", "scenario", str(tiny_path), "--out", str(tmp_path / "out"),
           "--quiet", "--workers", "2", *[a for o in ["parallel.threads=1", *rounds] for a in ("--set", o)]]
    env = {**os.environ, "FEDSIM_CACHE": str(cache)}
    log = tmp_path / "stderr.txt"
    with log.open("w") as err_file:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err_file,
                                preexec_fn=_default_sigint)
        deadline = time.monotonic() + 600  # against a hang, not a timing assumption

        def checkpointed() -> bool:
            for manifest in cache.glob("train/*/manifest.json"):
                try:
                    if json.loads(manifest.read_text())["info"]["rounds"] >= 1:
                        return True
                except (OSError, ValueError, KeyError):
                    pass
            return False

        while not checkpointed() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text()[-2000:]
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    assert proc.returncode == 130, log.read_text()[-2000:]
    assert not (tmp_path / "out" / "metrics.csv").exists()
    infos = [json.loads(m.read_text())["info"]["rounds"] for m in cache.glob("train/*/manifest.json")]
    assert infos and min(infos) < 6, "stopped before the end"
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _run(tiny_path, tmp_path / "ref-cache", tmp_path / "ref", [*SEQUENTIAL, *rounds], monkeypatch)
    _same_tables(tmp_path / "ref", tmp_path / "out")


# ------------------------------------------------------------------ unit tests (fast)


def _task(task_id: str, index: int, demands: dict, after: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(id=task_id, order=(0, index), demands=demands,
                           costs_s={k: 1.0 for k in demands}, after=after or {})


def test_scheduler_starts_a_task_only_after_the_stages_it_waits_for() -> None:
    pre, t1, t2 = ("pretrain", "p"), ("train", "a"), ("train", "b")
    p = _task("pretrain", 0, {pre: 3})
    original = _task("original", 1, {t1: 10}, {pre: 0})
    hp_fl = _task("hp-fl", 2, {t2: 10}, {pre: 3})
    scheduler = Scheduler([p, original, hp_fl], {pre: 0})  # θ0 (level 0) written first
    assert [scheduler.next_ready().id, scheduler.next_ready().id] == ["pretrain", "original"]  # ties: task order
    assert scheduler.next_ready() is None  # hp-fl waits for level 3
    scheduler.finish(p, ok=True)
    assert scheduler.next_ready().id == "hp-fl"


def test_scheduler_never_starts_a_task_whose_awaited_stage_failed() -> None:
    pre = ("pretrain", "p")
    p, m = _task("pretrain", 0, {pre: 2}), _task("m", 1, {("train", "a"): 5}, {pre: 2})
    scheduler = Scheduler([p, m], {})
    assert scheduler.next_ready() is p
    scheduler.finish(p, ok=False)
    assert scheduler.next_ready() is None  # m never starts on a stage that failed
    assert scheduler.pending == [m]  # (the scenario's run ends with the failure)


def test_choose_explicit_auto_and_small_runs() -> None:
    assert threads.choose(1, "auto", 3, 1e6, cpus=8) == threads.Schedule(
        1, None, "workers 1 (scenario or --workers)")  # today's schedule, torch's threads
    assert threads.choose(3, "auto", 5, 1e6, cpus=8).threads == 2
    assert threads.choose(2, 3, 5, 1e6, cpus=8).threads == 3
    small = threads.choose("auto", "auto", 4, 10.0, cpus=8)
    assert small.workers == 1 and "under 60 s" in small.reason
    assert threads.choose("auto", "auto", 1, 1e6, cpus=8).workers == 1
    assert threads.choose("auto", 2, 3, 1e6, cpus=8).workers == 3  # 8 // 2, capped by 3 tasks


def test_auto_takes_the_faster_measured_configuration_and_caches_the_measurement(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path))
    calls = []

    def fake(cpus: int, rounds: int = 3) -> dict:
        calls.append(cpus)
        return {"serial_rounds_per_s": 1.0, "parallel_rounds_per_s": 1.3, "parallel_over_serial": 1.3}

    monkeypatch.setattr(threads, "measure", fake)
    chosen = threads.choose("auto", "auto", 5, 1e4, cpus=2)
    assert (chosen.workers, chosen.threads) == (2, 1) and "1.30x" in chosen.reason
    assert chosen.measurement["machine"]["cpus"] == 2
    threads.choose("auto", "auto", 5, 1e4, cpus=2)
    assert calls == [2], "measured once per machine"
    monkeypatch.setattr(threads, "measure", lambda cpus, rounds=3: {"parallel_over_serial": 0.8})
    store.cache_dir().joinpath("machine").rename(tmp_path / "old")
    assert threads.choose("auto", "auto", 5, 1e4, cpus=2).workers == 1  # one process x 2 threads won


def test_makespan_counts_the_worker_left_alone_at_the_end() -> None:
    assert threads.parallel_makespan_s([1.0, 1.0], 2, 2.0) == 1.0  # two equal tasks, perfect scaling
    assert threads.parallel_makespan_s([3.0, 1.0, 1.0, 1.0], 2, 2.0) == 3.0  # the long task sets it
    assert threads.parallel_makespan_s([1.0, 1.0, 1.0], 2, 2.0) == 2.0  # the third runs alone
    assert threads.parallel_makespan_s([1.0, 1.0], 2, 1.0) == 2.0  # no gain: each at half speed


def test_auto_stays_sequential_when_the_idle_tail_eats_the_measured_gain(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mobile demo's tasks (pre-training and 4 methods, serial seconds as
    measured cold on the 2-core machine): at the 1.06x measured there, 2
    workers would take longer (measured: 25.3 against 23.6 min), so auto stays
    sequential; at 1.3x the parallel schedule wins."""
    demo = [135.0, 316.0, 316.0, 316.0, 316.0]
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "a"))
    monkeypatch.setattr(threads, "measure", lambda cpus, rounds=3: {"parallel_over_serial": 1.06})
    chosen = threads.choose("auto", "auto", 5, sum(demo), cpus=2, task_s=demo)
    assert chosen.workers == 1 and "estimated 1447 s on 2 workers against 1399 s" in chosen.reason
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "b"))
    monkeypatch.setattr(threads, "measure", lambda cpus, rounds=3: {"parallel_over_serial": 1.3})
    chosen = threads.choose("auto", "auto", 5, sum(demo), cpus=2, task_s=demo)
    assert (chosen.workers, chosen.threads) == (2, 1) and "estimated 1180 s" in chosen.reason


def test_parallel_section_is_validated_with_its_key_path(tiny_path: Path) -> None:
    for bad in ("parallel.workers=0", "parallel.threads=two", "parallel.cores=2"):
        with pytest.raises(InputError, match=r"parallel\.(workers|threads|cores)"):
            config.load(tiny_path, [bad])
    assert config.load(tiny_path, ["parallel.workers=auto"]).parallel.workers == "auto"


def test_running_status_joins_the_methods_in_one_line() -> None:
    assert running_status({}) == ""
    assert running_status({"a": "training a round 3/9"}) == "training a round 3/9"
    assert (running_status({"a": "training a round 3/9", "b": "training b round 1/9"})
            == "training a round 3/9, b round 1/9")
    assert running_status({"p": "pre-training IMP level 1/2, epoch 1/3", "a": "training a round 1/9"}) \
        == "pre-training IMP level 1/2, epoch 1/3, training a round 1/9"


def test_events_of_several_workers_give_the_machine_rate() -> None:
    """Interleaved rounds of two methods: the ETA is the work left over the
    rate of the whole machine (2 units per second here), not of one method."""
    from fedsim.pipeline.parallel import _drain

    now = [0.0]
    bar = Progress("scenario", {"train": 20.0}, enabled=False, clock=lambda: now[0])
    events: list = []
    queue = SimpleNamespace(get_nowait=lambda: events.pop(0) if events else (_ for _ in ()).throw(
        __import__("queue").Empty()))
    statuses: dict[str, str] = {}
    for second in range(1, 5):
        now[0] = float(second)
        label = "a" if second % 2 else "b"
        events.extend([(label, "advance", "train", 1.0, f"training {label} round {second}/10"),
                       (label, "skip", "pretrain", 5.0, "cached ticket")])  # ignored: not the pretrain task
        events.append(("b" if label == "a" else "a", "advance", "train", 1.0, None))
        _drain(queue, bar, statuses)
    eta, estimated = bar.eta_s()
    assert bar.kinds["train"].done == 8.0 and not estimated
    assert eta == pytest.approx(12.0 / 2.0)
    assert set(statuses) == {"a", "b"}
