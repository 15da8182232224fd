"""Render a study's report again from the files of its output directory,
without running the study: ``sweep.csv`` (the numbers) and
``study.resolved.yaml`` (axes, labels, method order, targets, provenance).

A study run writes both (`fedsim.study.outputs.write_outputs`). When the
report code changes (e.g. which figures it leaves out,
`fedsim.report.study.informative`) its figures, ``report.pdf`` and
``summary.md`` can be brought up to date from those two files, even when the
traces or the scenario the study was run on have changed since:

    python -m fedsim.report.study.from_files reports/paper/mobile_links

sweep.csv and study.resolved.yaml are read, not rewritten. Figures the
report now leaves out are deleted from ``figures/``; other files there (a
figure drawn by another script) are kept.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fedsim.errors import InputError
from fedsim.report.inputs import StudyReportInput, SweepAxis

#: the provenance lines a study report shows (`fedsim.study.outputs.report_input`)
PROVENANCE_KEYS: tuple[str, ...] = ("fedsim", "git_commit", "command", "created", "executor")
SWEEP_CSV = "sweep.csv"
RESOLVED = "study.resolved.yaml"


def _role(path: str, labels: Sequence[str], where: str) -> str:
    """An axis' `fedsim.report.inputs.AxisRole`, decided as the study decides
    it (`fedsim.study.spec.Axis`): a remaining rate by its key, a bandwidth by
    the unit of its labels ("0.25 Mbps") or the scenario field it sets."""
    from fedsim.config import paths
    from fedsim.study.ranges import axis_quantity

    parts = paths.split_key_path(path)
    if len(parts) == 3 and parts[0] == "methods" and parts[2] == "remaining_rate":
        return "remaining_rate"
    quantity, _ = axis_quantity(list(labels), parts, where)
    return "bandwidth" if quantity == "bandwidth" else "other"


def report_input(resolved: Mapping[str, Any], where: str = RESOLVED,
                 titles: Mapping[str, str] | None = None) -> StudyReportInput:
    """The `StudyReportInput` of a study from its ``study.resolved.yaml``
    (parsed). ``titles``: axis -> title (``axis_titles`` of the study file;
    study.resolved.yaml does not keep them); missing: the axis' key.

    Raises:
        InputError: no ``study`` section or no axes, naming ``where``.
    """
    study = resolved.get("study")
    if not isinstance(study, Mapping) or not study.get("axes"):
        raise InputError(f"{where}: no study.axes; expected a study.resolved.yaml written by fedsim sweep")
    labels = study.get("axis_labels") or {}
    titles = dict(titles or {})
    axes = tuple(
        SweepAxis(path, titles.get(path, ""), _role(path, [str(v) for v in labels.get(path, values)],
                                                   f"{where}: study.axes.{path}"))
        for path, values in study["axes"].items()
    )
    base = resolved.get("base_scenario") or {}
    methods = tuple(base.get("methods") or ())
    targets = tuple(float(t) for t in (base.get("targets") or ()))
    provenance = {k: str(v) for k, v in (resolved.get("provenance") or {}).items() if k in PROVENANCE_KEYS}
    return StudyReportInput(name=str(study.get("name", "")), axes=axes,
                            description=str(study.get("description") or ""), methods=methods,
                            targets=targets, provenance=provenance, zipped=study.get("mode") == "zip")


def _study_titles(resolved: Mapping[str, Any], root: Path) -> dict[str, str]:
    """``axis_titles`` of the study file named in study.resolved.yaml
    (``study.source``, relative to ``root`` when not absolute), if it still
    exists and has them; else none."""
    source = (resolved.get("study") or {}).get("source")
    if not source:
        return {}
    path = Path(source) if Path(source).is_absolute() else root / source
    if not path.is_file():
        return {}
    spec = (yaml.safe_load(path.read_text()) or {}).get("study") or {}
    return {str(k): str(v) for k, v in (spec.get("axis_titles") or {}).items()}


def rerender(out_dir: Path, root: Path | None = None,
             formats: Sequence[str] = ("png", "pdf")) -> dict[str, Path]:
    """Write the study report of ``out_dir`` again from its sweep.csv and
    study.resolved.yaml (`fedsim.report.study.writer.write_sweep_report`);
    returns what was written. ``root``: where the study file's relative
    ``source`` path starts (default: the current directory).

    Raises:
        InputError: a file missing or not a study's, naming it.
    """
    from fedsim.report.study.writer import write_sweep_report

    out_dir = Path(out_dir)
    sweep_path, resolved_path = out_dir / SWEEP_CSV, out_dir / RESOLVED
    for path in (sweep_path, resolved_path):
        if not path.is_file():
            raise InputError(f"{path}: not found; expected a study's output directory (fedsim sweep --out)")
    resolved = yaml.safe_load(resolved_path.read_text()) or {}
    if not isinstance(resolved, Mapping):
        raise InputError(f"{resolved_path}: not a mapping; expected a study.resolved.yaml")
    meta = report_input(resolved, str(resolved_path), _study_titles(resolved, Path(root or Path.cwd())))
    sweep = pd.read_csv(sweep_path)
    return write_sweep_report(out_dir, sweep, meta, formats=formats)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fedsim.report.study.from_files DIR...``: `rerender` each."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m fedsim.report.study.from_files STUDY_OUT_DIR...", file=sys.stderr)
        return 2
    try:
        for arg in args:
            written = rerender(Path(arg))
            print(f"{arg}: wrote {', '.join(sorted(written))}")
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
