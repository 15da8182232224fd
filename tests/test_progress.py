"""Progress over whole runs: the ETA arithmetic (fake clock), the plain and
terminal displays, the scenario's line through the CLI, the sweep's weights."""

from __future__ import annotations

import io
import logging
from collections import deque
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedsim import config, cost, pipeline, progress, study
from fedsim.cli import main
from fedsim.progress import Progress, format_clock
from fedsim.study.runner import _execute


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(work: dict[str, float], **options: Any) -> tuple[Progress, FakeClock, io.StringIO]:
    clock, stream = FakeClock(), io.StringIO()
    options.setdefault("interactive", False)
    return Progress("scenario", work, stream=stream, clock=clock, **options), clock, stream


def test_format_clock_by_hand() -> None:
    assert [format_clock(s) for s in (0, 44.6, 59.4, 192, 3599, 3600, 7500)] == \
        ["0s", "45s", "59s", "3m12s", "59m59s", "1h00m", "2h05m"]


def test_eta_rates_only_computed_work_and_excludes_cached_work() -> None:
    bar, clock, _ = make({"pretrain": 10.0, "train": 100.0})
    assert bar.eta_s() == (None, True)  # nothing measured yet
    clock.now = 0.5
    bar.skip("train", 50.0)  # half the rounds cached: 0.5 s of cache reads
    assert bar.fraction == pytest.approx(50 / 110)
    assert bar.eta_s() == (None, True)  # cached work gives no rate
    clock.now = 2.5
    bar.advance("train", 10.0)  # 10 units computed in 2 s: 5 units/s
    # train: 40 left / 5 = 8 s; pre-training has no rate of its own and borrows
    # the measured one (5/s, an estimate): 10 / 5 = 2 s. Counting the cached
    # 50 units as speed would give 60 / 2.5 = 24/s and 50 / 24 = 2.1 s.
    assert bar.eta_s() == (pytest.approx(10.0), True)
    clock.now = 12.5
    bar.advance("pretrain", 10.0)  # 10 units in 10 s: its own rate, 1/s
    assert bar.eta_s() == (pytest.approx(8.0), False)
    assert bar.fraction == pytest.approx(70 / 110)
    clock.now = 100.0
    bar.skip("train", 40.0)  # stopped early: the rest is not needed
    assert bar.fraction == 1.0
    assert bar.eta_s() == (0.0, False)


def test_a_run_that_may_stop_early_prints_its_eta_as_an_upper_bound() -> None:
    bar, clock, _ = make({"train": 100.0}, upper_bound=True)
    clock.now = 10.0
    bar.advance("train", 50.0)  # 50 units in 10 s: 50 left take 10 s at most
    assert bar.line().endswith("ETA <=10s")
    bar.upper_bound = False
    assert bar.line().endswith("ETA 10s")


def test_time_before_a_skip_is_not_counted_as_work() -> None:
    """A skip marks the clock: the seconds spent before it (reading the cache,
    loading data) do not slow the rate of the work computed after it."""
    bar, clock, _ = make({"train": 30.0})
    clock.now = 50.0
    bar.skip("train", 0.0)  # e.g. training starts after a long data load
    clock.now = 52.0
    bar.advance("train", 10.0)
    assert bar.eta_s() == (pytest.approx(4.0), False)  # 20 left at 5/s, not at 10/52


def test_bad_totals_are_refused() -> None:
    with pytest.raises(ValueError, match="'train': nan"):
        Progress("scenario", {"train": float("nan")})
    with pytest.raises(ValueError, match="-1"):
        Progress("scenario", {"train": -1.0})


def test_plain_mode_writes_a_line_every_interval_without_carriage_returns() -> None:
    bar, clock, stream = make({"train": 10.0}, every_s=10.0)
    for t in range(1, 10):  # 9 rounds of 1 s each
        clock.now = float(t)
        bar.advance("train", 1.0, f"training hp-fl round {t}/10")
    assert stream.getvalue() == ""  # less than 10 s since the start
    clock.now = 10.0
    bar.status("training hp-fl round 9/10")
    assert stream.getvalue() == ("[fedsim] training hp-fl round 9/10, 90% of scenario, "
                                 "elapsed 10s, ETA 1s\n")
    clock.now = 11.0
    bar.advance("train", 1.0, "training hp-fl round 10/10")
    assert stream.getvalue().count("\n") == 1  # 1 s later: no new line
    bar.close()  # a log ends at 100 %
    lines = stream.getvalue().splitlines()
    assert lines[-1] == "[fedsim] training hp-fl round 10/10, 100% of scenario, elapsed 11s, ETA 0s"
    assert "\r" not in stream.getvalue()


def test_terminal_mode_redraws_in_place_and_clears_before_log_records() -> None:
    clock, stream = FakeClock(), io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        bar = Progress("scenario", {"train": 4.0}, stream=stream, clock=clock, interactive=True)
        clock.now = 1.0
        bar.advance("train", 1.0, "training original round 1/4")
        assert stream.getvalue().startswith("\r[fedsim] |#####---------------| training original")
        logging.getLogger("fedsim.test").warning("a record")
        # the line is blanked before the record, so the record starts a clean line
        assert stream.getvalue().endswith("\r" + " " * len(stream.getvalue().split("\r")[1]) + "\ra record\n")
        clock.now = 2.0
        bar.advance("train", 3.0, "training original round 4/4")
        bar.close()
        assert stream.getvalue().endswith("100% of scenario, elapsed 2s, ETA 0s\n")
    finally:
        root.removeHandler(handler)
    assert bar._before_log not in handler.filters  # unhooked on close


def test_disabled_shows_nothing() -> None:
    bar, clock, stream = make({"train": 1.0}, enabled=False, every_s=0.0)
    clock.now = 5.0
    bar.advance("train", 1.0, "x")
    bar.write("a finished task")
    bar.close()
    assert stream.getvalue() == ""


def test_run_work_weighs_epochs_and_rounds_by_the_cost_model(tiny_path: Path) -> None:
    scenario = config.load(tiny_path)
    work = pipeline.run_work(scenario, 1)
    assert work["pretrain"] == pytest.approx(scenario.pretrain.epochs * cost.pretrain_epoch_s(scenario))
    # every method's rounds, pruned or not, at the same cost per round
    assert work["train"] == pytest.approx(len(scenario.methods) * scenario.rounds.max * cost.round_s(scenario))
    assert cost.round_s(scenario) == pytest.approx(
        400 * scenario.fl.local_epochs * cost.COST_MODEL["fedavg_s_per_sample_epoch"]
        + 10_000 * cost.COST_MODEL["eval_s_per_test_image"])  # 4 clients x 100 samples, MNIST's test set


def test_scenario_progress_through_the_cli(tiny_path: Path, cache_root: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """stderr is not a terminal here: plain lines, no carriage returns; the
    line spans both methods; a cached run reaches 100 % with no ETA measured
    from cache reads; --quiet shows none."""
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)  # a line per event
    out = tmp_path / "out"
    assert main(["scenario", str(tiny_path), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("[fedsim] ")]
    assert any(line.startswith("[fedsim] pre-training IMP level 1/1") for line in lines)
    percents = [int(line.split("% of scenario")[0].rsplit(" ", 1)[-1]) for line in lines]
    assert percents == sorted(percents) and percents[-1] == 100
    scenario = config.load(tiny_path)
    methods, rounds = list(scenario.methods), scenario.rounds.max
    for label in methods:
        assert f"[fedsim] training {label} round {rounds}/{rounds}, " in err
    # the first method's last round is at the share of the pre-training plus one method
    work = pipeline.run_work(scenario, 1)
    share = (work["pretrain"] + work["train"] / len(methods)) / sum(work.values())
    done = next(line for line in lines if f"training {methods[0]} round {rounds}/{rounds}," in line)
    assert f"{100 * share:.0f}% of scenario" in done

    # served from the cache: 100 %, and no rate from reading it
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    pipeline.compute(scenario, base_dir=tiny_path.parent, progress=True)
    cached = [line for line in stream.getvalue().splitlines() if line.startswith("[fedsim] ")]
    assert cached[-1].startswith(f"[fedsim] training {methods[-1]}: {rounds} rounds cached, 100% of")
    # nothing computed: no rate, so no ETA until nothing is left
    assert all(line.endswith("ETA ?") for line in cached if "100%" not in line), cached
    assert all(line.endswith("ETA 0s") for line in cached if "100%" in line), cached
    assert any("pre-training: 1 IMP levels cached" in line for line in cached)
    monkeypatch.undo()

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    assert main(["scenario", str(tiny_path), "--out", str(out), "--quiet"]) == 0
    assert "[fedsim]" not in capsys.readouterr().err


# --------------------------------------------------------------------------- sweep


class _Recording(Progress):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[float, float]] = []

    def advance(self, kind: str, units: float, status: str | None = None) -> None:
        super().advance(kind, units, status)
        self.seen.append((units, self.fraction))


class _FakeBackend:
    """Finishes every task at once, in submission order, without running it."""

    name = "fake"

    def __init__(self) -> None:
        self.queue: deque[Any] = deque()
        self.order: list[str] = []

    def slots(self) -> int:
        return 0 if self.queue else 1

    def running(self) -> int:
        return len(self.queue)

    def submit(self, task: Any, threads: int) -> None:
        self.queue.append(task)
        self.order.append(task.id)

    def wait_any(self) -> list[tuple[Any, study.TaskOutcome]]:
        task = self.queue.popleft()
        return [(task, study.TaskOutcome(task.id, None, 0.0, "fake"))]


def test_sweep_progress_is_weighted_by_the_planners_estimates(tiny_path: Path, tmp_path: Path,
                                                               cache_root: Path) -> None:
    spec = {"name": "tiny_rates", "base": str(tiny_path),
            "set": {"rounds.max": 2, "methods": {"hp-fl": {"remaining_rate": 0.8}}},
            "axes": {"system.clients.uplink": ["1 Mbps", "10 Mbps"],
                     "methods.hp-fl.remaining_rate": [1.0, 0.8]}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"study": spec}, sort_keys=False))
    the_plan = study.plan(study.load(path), workers=1)
    estimates = the_plan.task_estimates_s
    assert set(estimates) == {t.id for t in the_plan.tasks}
    by_role = {the_plan.roles[t]: s for t, s in estimates.items()}
    # the task that pre-trains costs more than one that trains, which costs more than a simulation
    assert by_role["pre-train"] > by_role["train"] > by_role["simulate"]

    bar = _Recording("study", {"tasks": sum(estimates.values())}, stream=io.StringIO(),
                     interactive=False)
    backend = _FakeBackend()
    _execute(the_plan, backend, bar)
    total = sum(estimates.values())
    assert [units for units, _ in bar.seen] == [estimates[t] for t in backend.order]
    cumulative = 0.0
    for (_, fraction), task_id in zip(bar.seen, backend.order, strict=True):
        cumulative += estimates[task_id]
        assert fraction == pytest.approx(cumulative / total)
    # not a task count: the first (pre-training) task alone is more than 1/n of the study
    assert bar.seen[0][1] > 1 / len(the_plan.tasks)
    assert study.sweep_progress(the_plan, enabled=False).kinds["tasks"].total == pytest.approx(total)
