"""What a study writes (``out_dir``, default ``reports/<study name>/``).

``sweep.csv`` and ``sweep.parquet``: one row per cell x method x target:
``cell``, ``seed``, each axis as a number in SI units and as ``<axis>_label``
text, then the columns of metrics.csv. ``study.resolved.yaml``: the study with
its axes expanded, every cell's values and outcome, the base scenario with every
default and the provenance. ``failures.csv`` when tasks failed. The figures,
``report.pdf`` and ``summary.md`` of ``fedsim.report.write_sweep_report``.
Every file is written atomically; the file names are those of
`fedsim.store.artifacts.STUDY_OUTPUTS`.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from fedsim import __version__, config, store
from fedsim.pipeline.outputs import git_commit
from fedsim.report.inputs import StudyReportInput, SweepAxis
from fedsim.store.artifacts import STUDY_OUTPUTS
from fedsim.study.executors import TaskOutcome
from fedsim.study.spec import Cell, Study

if TYPE_CHECKING:  # run.py builds the result and imports this module
    from fedsim.study.runner import StudyResult


def _task_ids(cell: Cell) -> list[tuple[str, str]]:
    return [(label, f"{cell.id}/{label}") for label in cell.scenario.methods]


def sweep_frame(study: Study, outcomes: Mapping[str, TaskOutcome]) -> pd.DataFrame:
    """One row per successful cell x method x target: ``cell``, ``seed``, each
    axis (number, SI units) and ``<axis>_label``, then the metrics.csv columns."""
    frames = []
    axes = list(study.axes)
    for cell in study.cells:
        for _, task_id in _task_ids(cell):
            outcome = outcomes.get(task_id)
            if outcome is None or not outcome.ok or outcome.metrics is None:
                continue
            metrics = outcome.metrics.reset_index(drop=True)
            head: dict[str, Any] = {"cell": cell.id}
            if "seed" not in axes:
                head["seed"] = cell.seed
            head.update({axis: cell.numbers[axis] for axis in axes})
            head.update({f"{axis}_label": cell.labels[axis] for axis in axes})
            frames.append(pd.concat([pd.DataFrame([head] * len(metrics)), metrics], axis=1))
    if not frames:
        return pd.DataFrame(columns=["cell", "seed", *axes, *(f"{a}_label" for a in axes)])
    return pd.concat(frames, ignore_index=True)


def failures_frame(study: Study, outcomes: Mapping[str, TaskOutcome]) -> pd.DataFrame:
    """One row per failed task: cell, method, seed, the axes' labels, the
    error, the worker, the seconds and the traceback (failures.csv)."""
    rows = []
    for cell in study.cells:
        for label, task_id in _task_ids(cell):
            outcome = outcomes.get(task_id)
            if outcome is not None and not outcome.ok:
                rows.append({"cell": cell.id, "method": label, "seed": cell.seed,
                             **{a: cell.labels[a] for a in study.axes},
                             "error": outcome.error, "worker": outcome.worker,
                             "seconds": round(outcome.seconds, 2),
                             "traceback": outcome.traceback or ""})
    return pd.DataFrame(rows)


def _cell_status(cell: Cell, outcomes: Mapping[str, TaskOutcome]) -> dict[str, Any]:
    status = {}
    for label, task_id in _task_ids(cell):
        outcome = outcomes.get(task_id)
        status[label] = ("not run" if outcome is None else "ok" if outcome.ok
                         else f"failed: {outcome.error}")
    return status


def provenance(result: StudyResult, command: Sequence[str] | None, executor: str) -> dict[str, Any]:
    """Versions, command line, host, workers and timings of a study run."""
    import torch

    return {
        "fedsim": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "command": " ".join(command) if command else " ".join(
            [Path(sys.argv[0]).name, *sys.argv[1:]]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "executor": executor,
        "workers": result.plan.workers,
        "torch_threads_per_task": result.plan.threads,
        "host": platform.node(),
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
        "estimated_s": round(result.plan.estimate_s, 1),
    }


def resolved_study(result: StudyResult, provenance: Mapping[str, Any]) -> str:
    """The study with its axes expanded, every cell's values and outcome, the
    base scenario with every default, and the provenance (study.resolved.yaml)."""
    study = result.study
    spec = study.spec
    doc = {
        "study": {
            "name": study.name,
            "description": study.description,
            "source": str(study.path),
            "base": str(study.base_path),
            "set": config.to_plain(dict(spec.set)),
            "axes": {a: config.to_plain(axis.values) for a, axis in study.axes.items()},
            "axis_labels": study.axis_labels,
            "mode": spec.mode,
            "seeds": list(spec.seeds) if spec.seeds is not None else None,
        },
        "cells": [{"cell": c.id, "seed": c.seed, "values": c.labels,
                   "methods": _cell_status(c, result.outcomes)} for c in study.cells],
        "plan": {stage: {"distinct": n, "cached_before": k}
                 for stage, (n, k) in result.plan.stage_counts.items()},
        "provenance": dict(provenance),
        "base_scenario": config.to_plain(study.base),
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def report_input(result: StudyResult, recorded: Mapping[str, Any]) -> StudyReportInput:
    """What the sweep report is told besides the sweep: each axis with its
    title and role, decided here from the scenario field the axis sets
    (`fedsim.study.spec.Axis.is_bandwidth`, ``is_remaining_rate``), never
    from its name; the method order, every cell's targets, the provenance."""
    study = result.study
    axes = tuple(
        SweepAxis(
            path,
            axis.title,
            "bandwidth" if axis.is_bandwidth
            else "remaining_rate" if axis.is_remaining_rate
            else "other",
        )
        for path, axis in study.axes.items()
    )
    return StudyReportInput(
        name=study.name,
        axes=axes,
        description=study.description,
        methods=tuple(study.base.methods),
        targets=tuple(sorted({float(t) for c in study.cells for t in c.scenario.targets})),
        provenance={k: str(v) for k, v in recorded.items()
                    if k in ("fedsim", "git_commit", "command", "created", "executor")},
        zipped=study.spec.mode == "zip",
    )


def write_outputs(result: StudyResult, *, command: Sequence[str] | None = None,
                  executor: str = "local") -> dict[str, Path]:
    """Write sweep.csv/.parquet, failures.csv (removed when nothing failed),
    study.resolved.yaml and the sweep report (figures, report.pdf, summary.md).
    Every file is written atomically. Returns file name -> path written."""
    from fedsim.report.study.writer import write_sweep_report

    study = result.study
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    store.write_text(out / STUDY_OUTPUTS["sweep"], result.sweep.to_csv(index=False))
    written[STUDY_OUTPUTS["sweep"]] = out / STUDY_OUTPUTS["sweep"]
    with store.atomic_write(out / STUDY_OUTPUTS["sweep_parquet"]) as handle:
        result.sweep.to_parquet(handle, index=False)
    written[STUDY_OUTPUTS["sweep_parquet"]] = out / STUDY_OUTPUTS["sweep_parquet"]
    failures = failures_frame(study, result.outcomes)
    if len(failures):
        store.write_text(out / STUDY_OUTPUTS["failures"], failures.to_csv(index=False))
        written[STUDY_OUTPUTS["failures"]] = out / STUDY_OUTPUTS["failures"]
    else:
        (out / STUDY_OUTPUTS["failures"]).unlink(missing_ok=True)
    recorded = provenance(result, command, executor)
    store.write_text(out / STUDY_OUTPUTS["resolved"], resolved_study(result, recorded))
    written[STUDY_OUTPUTS["resolved"]] = out / STUDY_OUTPUTS["resolved"]

    if len(result.sweep):
        meta = report_input(result, recorded)
        formats = list(study.base.report.formats)
        written.update({name: out / name for name in write_sweep_report(
            out, result.sweep, meta, formats=formats)})
    return written
