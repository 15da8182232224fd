"""Render a scenario's report again from the files of its report directory,
without the stage cache: ``rounds.parquet``, ``metrics.parquet``,
``timeline.parquet`` (the frames), ``scenario.resolved.yaml`` (names,
targets, the paper's reference values) and ``provenance.json``.

When the report code changes (e.g. which figures it leaves out,
`fedsim.report.scenario.informative`) a committed report can be brought up
to date from those files, even after the cache entries it was made from are
gone:

    python -m fedsim.report.scenario.from_files reports/paper --out /tmp/paper_report

The frames, the resolved scenario and the provenance are read, not
rewritten; the report (figures, ``report.pdf``, ``summary.md``) goes to
``--out`` (default: the directory itself, replacing its report files). The
title page keeps the original run's provenance.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fedsim.errors import InputError
from fedsim.report.inputs import ScenarioReportInput
from fedsim.store.artifacts import SCENARIO_OUTPUTS

FRAMES = tuple(SCENARIO_OUTPUTS[k] for k in ("rounds_parquet", "metrics_parquet", "timeline"))
RESOLVED = SCENARIO_OUTPUTS["resolved"]
PROVENANCE = SCENARIO_OUTPUTS["provenance"]
#: the provenance lines a scenario report shows (`report_input`; a fresh run's too)
PROVENANCE_KEYS: tuple[str, ...] = ("fedsim", "git_commit", "device", "command", "created")


def _ran_on(computed_on: Mapping[str, str]) -> str:
    """The summary's "training ran on": one device, or each method's."""
    devices = set(computed_on.values())
    if len(devices) == 1:
        return devices.pop()
    return "; ".join(f"{label}: {where}" for label, where in computed_on.items())


def report_input(scenario: Any, provenance: Mapping[str, Any]) -> ScenarioReportInput:
    """The `ScenarioReportInput` of a loaded scenario and its recorded
    provenance, as the run that wrote the report built it."""
    from fedsim.report.reference import reference_for

    deadline = scenario.system.rounds.deadline
    lines = {k: str(v) for k, v in provenance.items() if k in PROVENANCE_KEYS}
    if provenance.get("training_computed_on"):
        lines["training ran on"] = _ran_on(provenance["training_computed_on"])
    return ScenarioReportInput(
        name=scenario.name,
        description=scenario.description,
        targets=tuple(float(t) for t in scenario.targets),
        methods=tuple(scenario.methods),
        deadline_s=None if deadline is None else float(deadline),
        reference=reference_for(scenario) or None,
        provenance=lines,
    )


def rerender(report_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Write the scenario report of ``report_dir`` again, into ``out_dir``
    (default ``report_dir``), from its frames, resolved scenario and
    provenance; returns what was written (`fedsim.report.write_report`).

    Raises:
        InputError: a file missing, naming it.
    """
    from fedsim import config
    from fedsim.report.scenario.writer import write_report

    report_dir = Path(report_dir)
    for name in (*FRAMES, RESOLVED, PROVENANCE):
        if not (report_dir / name).is_file():
            raise InputError(f"{report_dir / name}: not found; expected a scenario report directory "
                             "(fedsim scenario --out)")
    scenario = config.load(report_dir / RESOLVED)
    try:
        provenance = json.loads((report_dir / PROVENANCE).read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{report_dir / PROVENANCE}: not JSON ({error})") from error
    rounds, metrics, timeline = (pd.read_parquet(report_dir / name) for name in FRAMES)
    out = Path(out_dir) if out_dir is not None else report_dir
    out.mkdir(parents=True, exist_ok=True)
    return write_report(out, rounds, metrics, timeline, report_input(scenario, provenance),
                        formats=scenario.report.formats, gantt_rounds=scenario.report.gantt_rounds)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fedsim.report.scenario.from_files DIR [--out OUT]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report_dir", type=Path)
    parser.add_argument("--out", type=Path, help="where the report goes (default: REPORT_DIR)")
    args = parser.parse_args(argv)
    try:
        written = rerender(args.report_dir, args.out)
    except InputError as error:
        print(f"error: {error}")
        return 2
    print(f"{args.out or args.report_dir}: wrote {', '.join(sorted(written))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
