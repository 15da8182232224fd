"""A scenario run's outputs: the tables, the resolved scenario, the provenance
and the report, staged and moved into place (`write_outputs`); and the
terminal's summary line. File names: `fedsim.store.artifacts`."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedsim import __version__, config, store
from fedsim.learn.model import device_name
from fedsim.pipeline.asynchronous import async_summaries
from fedsim.pipeline.keys import device_type
from fedsim.pipeline.runner import ScenarioResult
from fedsim.report.inputs import ScenarioReportInput
from fedsim.store.artifacts import SCENARIO_OUTPUTS, STAGING_PREFIX

log = logging.getLogger(__name__)

#: Output files of a scenario run (kept under its older name).
OUTPUTS = SCENARIO_OUTPUTS


def git_commit() -> str | None:
    """The git commit of the fedsim source tree, when it is a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance(result: ScenarioResult, command: Sequence[str] | None) -> dict[str, Any]:
    """Where a result came from: versions, device, command, stage times (s)."""
    import simpy

    device = torch.device(device_type(result.scenario))
    here = (device_name(device) if device.type == "cpu" or torch.cuda.is_available()
            else "cuda (none on this machine: every stage came from the cache)")
    computed_on = {label: r.trace.computed_on() for label, r in result.methods.items()}
    return {
        "fedsim": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "simpy": simpy.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "device": here,
        "training_computed_on": computed_on,
        "command": " ".join(command) if command else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "stage_seconds": {k: round(v, 2) for k, v in result.stage_seconds.items()},
        "cache_keys": result.cache_keys,
        # workers x threads of this run, and the torch threads that trained each trace
        "schedule": result.schedule,
        "training_torch_threads": {label: r.trace.meta.get("torch_threads", "unrecorded")
                                   for label, r in result.methods.items()},
    }


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        return True
    return True


def remove_stale_staging(out_dir: Path) -> list[Path]:
    """Remove the staging directories that interrupted reports left in
    ``out_dir`` (``.partial-*``) and return them. A directory whose name holds
    the id of a running process other than this one is left alone: that
    process may be writing its report now. Names without a running process's
    id (fedsim 0.1.0 wrote ``.partial-<random>``) are stale."""
    removed = []
    for path in sorted(Path(out_dir).glob(f"{STAGING_PREFIX}*")):
        pid_text = path.name[len(STAGING_PREFIX):].split("-", 1)[0]
        pid = int(pid_text) if pid_text.isdigit() else None
        if not path.is_dir() or (pid is not None and pid != os.getpid() and _process_alive(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        log.info("removed %d staging director%s left by an interrupted report in %s",
                 len(removed), "y" if len(removed) == 1 else "ies", out_dir)
    return removed


def report_meta(result: ScenarioResult, prov: dict[str, Any]) -> ScenarioReportInput:
    """What the report shows besides the frames: names, targets, the paper's
    values, where it came from (`fedsim.report.scenario.from_files.report_input`,
    which a re-rendered report uses too)."""
    from fedsim.report.scenario.from_files import report_input

    return report_input(result.scenario, prov)


def write_outputs(result: ScenarioResult, out_dir: Path, command: Sequence[str] | None = None,
                  progress: bool = False) -> dict[str, Path]:
    """Write the tables, the resolved scenario, the provenance and the report;
    the written files by name relative to ``out_dir``. Every file is written
    atomically; earlier results are replaced only file by file once the new
    ones exist."""
    from fedsim.report import write_report

    scenario = result.scenario
    final_dir = Path(out_dir)
    final_dir.mkdir(parents=True, exist_ok=True)
    # Everything is written into a hidden staging directory first and moved into
    # place only once complete: a crash while writing leaves earlier results intact.
    remove_stale_staging(final_dir)
    out_dir = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=final_dir))
    written: dict[str, Path] = {}

    def csv(frame: pd.DataFrame, name: str) -> None:
        store.write_text(out_dir / name, frame.to_csv(index=False))
        written[name] = out_dir / name

    def parquet(frame: pd.DataFrame, name: str) -> None:
        with store.atomic_write(out_dir / name) as handle:
            frame.to_parquet(handle, index=False)
        written[name] = out_dir / name

    csv(result.metrics, OUTPUTS["metrics"])
    parquet(result.metrics, OUTPUTS["metrics_parquet"])
    csv(result.rounds, OUTPUTS["rounds"])
    parquet(result.rounds, OUTPUTS["rounds_parquet"])
    parquet(result.timeline, OUTPUTS["timeline"])
    store.write_text(out_dir / OUTPUTS["resolved"], config.resolved_yaml(scenario))
    written[OUTPUTS["resolved"]] = out_dir / OUTPUTS["resolved"]
    prov = provenance(result, command)
    meta = report_meta(result, prov)
    start = time.perf_counter()
    written.update({name: out_dir / name for name in write_report(
        out_dir, result.rounds, result.metrics, result.timeline, meta,
        formats=scenario.report.formats, gantt_rounds=scenario.report.gantt_rounds,
        asynchronous=async_summaries(result))})
    prov["stage_seconds"]["report"] = round(time.perf_counter() - start, 2)
    store.write_text(out_dir / OUTPUTS["provenance"], json.dumps(prov, indent=2, sort_keys=True))
    written[OUTPUTS["provenance"]] = out_dir / OUTPUTS["provenance"]
    moved = {}
    for name in written:
        target = final_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out_dir / name, target)
        moved[name] = target
    shutil.rmtree(out_dir, ignore_errors=True)
    return moved


def summary_line(result: ScenarioResult) -> str:
    """One line per method and target for the terminal."""
    lines = []
    for row in result.metrics.itertuples():
        nra = "not reached" if pd.isna(row.nra) else f"NRA {int(row.nra)}"
        tta = "" if (isinstance(row.tta_s, float) and math.isnan(row.tta_s)) else \
            f", TTA {row.tta_s / 60:.1f} min"
        lines.append(f"{row.method} @ {row.target_accuracy:g}: {nra}{tta}")
    return "\n".join(lines)
