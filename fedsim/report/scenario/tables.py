"""The paper's Table I, per target accuracy, as strings (for summary.md and the
PDF's table page).

Columns follow Table I of the HP-FL paper (shared/paper/hp-fl-paper.md):
Method | P_R | Params | Comm./round | Compute/round | NRA@x | CCA@x | CTA@x |
TTA@x | Final acc. (rounds run). TTA@x (simulated wall-clock time to accuracy)
is fedsim's addition. Units are what the paper prints: decimal MB/GB
(1 MB = 10^6 B), s, min, h.

When the report input's ``reference`` holds the paper's published values, every method
with a reference gets two more rows under its own: the paper's values
("↳ paper") and fedsim minus the paper ("↳ difference", absolute and
relative; accuracy in percentage points).

Reference layout, per method name or display label::

    {"original": {"comm_bytes_per_round": 213e6, "compute_s_per_round": 10,
                  "final_accuracy": 0.976,              # independent of target
                  "nra": 134, "cca_bytes": 29.2e9, "cta_s": 1350,
                  "target_accuracy": 0.95}}             # target of the four above

Target-dependent values (nra, cca_bytes, cta_s, tta_s) belong to
``target_accuracy`` (default 0.95, the paper's only target), or are given per
target as ``"targets": {0.95: {"nra": 134, ...}}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedsim.metrics import METRICS_COLUMNS
from fedsim.report._units import (
    MISSING,
    format_bytes,
    format_count,
    format_joules,
    format_percent,
    format_rate,
    format_relative,
    format_seconds,
    format_signed,
    format_target,
    is_missing,
)
from fedsim.report.columns import require_columns, with_float_columns
from fedsim.report.inputs import ScenarioReportInput
from fedsim.report.markdown import markdown_table, md_cell
from fedsim.report.methods import MethodStyle

BREAKDOWN_COLUMNS: tuple[str, ...] = (
    "mean_download_s",
    "mean_compute_s",
    "mean_upload_s",
    "mean_wait_s",
)
TARGET_KEYS: tuple[str, ...] = ("nra", "cca_bytes", "cta_s", "tta_s")
FIXED_KEYS: tuple[str, ...] = (
    "remaining_rate",
    "params",
    "comm_bytes_per_round",
    "compute_s_per_round",
    "final_accuracy",
)
DEFAULT_REFERENCE_TARGET = 0.95

# Row kinds of a table.
FEDSIM, PAPER, DIFFERENCE = "fedsim", "paper", "difference"


def _format_nra(nra: float | None) -> str:
    return MISSING if is_missing(nra) else f"{round(float(nra)):d}"  # type: ignore[arg-type]


def _diff_count(value: float, ref: float) -> str:
    return format_signed(f"{abs(value - ref):,.0f}", value < ref)


def _diff_bytes(value: float, ref: float) -> str:
    return format_signed(format_bytes(abs(value - ref)), value < ref)


def _diff_seconds(value: float, ref: float) -> str:
    return format_signed(format_seconds(abs(value - ref)), value < ref)


def _diff_joules(value: float, ref: float) -> str:
    return format_signed(format_joules(abs(value - ref)), value < ref)


def _diff_rate(value: float, ref: float) -> str:
    return format_signed(f"{abs(value - ref):.3g}", value < ref)


def _diff_accuracy(value: float, ref: float) -> str:
    return format_signed(f"{100.0 * abs(value - ref):.1f} pp", value < ref)


@dataclass(frozen=True)
class _Column:
    key: str
    header: str
    fmt: Callable[[Any], str]
    diff: Callable[[float, float], str]
    relative: bool  # append the relative difference in percent


def _columns(target: float, energy: bool = False) -> list[_Column]:
    """Table I's columns at ``target``; ``energy``: add ETA@x after TTA@x."""
    at = format_target(target)
    eta = [_Column("eta_j", f"ETA@{at}", format_joules, _diff_joules, True)] if energy else []
    return [
        _Column("remaining_rate", "P_R", format_rate, _diff_rate, False),
        _Column("params", "Params", format_count, _diff_count, True),
        _Column("comm_bytes_per_round", "Comm./round", format_bytes, _diff_bytes, True),
        _Column("compute_s_per_round", "Compute/round", format_seconds, _diff_seconds, True),
        _Column("nra", f"NRA@{at}", _format_nra, _diff_count, True),
        _Column("cca_bytes", f"CCA@{at}", format_bytes, _diff_bytes, True),
        _Column("cta_s", f"CTA@{at}", format_seconds, _diff_seconds, True),
        _Column("tta_s", f"TTA@{at}", format_seconds, _diff_seconds, True),
        *eta,
        _Column("final_accuracy", "Final acc. (rounds run)", format_percent, _diff_accuracy, False),
    ]


@dataclass(frozen=True)
class Table:
    """One Table I for one target: headers and rows of display strings.

    ``kinds[i]`` says what row i is: "fedsim", "paper" or "difference";
    ``methods[i]`` the method the row belongs to.
    """

    target_accuracy: float
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    kinds: tuple[str, ...]
    methods: tuple[str, ...]


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=1e-9)


def reference_values(
    reference: Mapping[str, Any] | None, method: str, label: str, target: float
) -> dict[str, float]:
    """The paper's values for ``method`` (looked up by name, then by display
    ``label``) that apply at ``target``; empty when there are none."""
    if not reference:
        return {}
    entry = reference.get(method)
    if entry is None:
        entry = reference.get(label)
    if not entry:
        return {}
    values = {k: float(entry[k]) for k in FIXED_KEYS if entry.get(k) is not None}
    per_target = entry.get("targets")
    if per_target:
        for key, target_values in per_target.items():
            if _close(float(key), target):
                values.update(
                    {
                        k: float(target_values[k])
                        for k in TARGET_KEYS
                        if target_values.get(k) is not None
                    }
                )
    elif _close(float(entry.get("target_accuracy", DEFAULT_REFERENCE_TARGET)), target):
        values.update({k: float(entry[k]) for k in TARGET_KEYS if entry.get(k) is not None})
    return values


def best_accuracy(rounds: pd.DataFrame, method: str) -> tuple[float, int] | None:
    """(best test accuracy, first round that reached it) of ``method``; None
    when the method has no rounds."""
    sub = rounds.loc[rounds["method"] == method, ["round", "accuracy"]].dropna()
    if sub.empty:
        return None
    sub = sub.sort_values("round", kind="stable")
    accuracy = sub["accuracy"].to_numpy(dtype=float)
    index = int(np.argmax(accuracy))
    return float(accuracy[index]), int(sub["round"].to_numpy()[index])


def not_reached_text(rounds: pd.DataFrame, method: str) -> str:
    """ "not reached (best 94.1 % at round 300)" for a target ``method`` missed."""
    best = best_accuracy(rounds, method)
    if best is None:
        return "not reached"
    accuracy, round_num = best
    return f"not reached (best {format_percent(accuracy)} at round {round_num})"


def metrics_tables(
    metrics: pd.DataFrame,
    rounds: pd.DataFrame,
    style: MethodStyle,
    targets: Sequence[float] | None = None,
    reference: Mapping[str, Any] | None = None,
) -> list[Table]:
    """One ``Table`` per target accuracy (``targets``, default: those in
    ``metrics``), methods in ``style.order``.

    A target a method did not reach shows "not reached (best x % at round r)"
    in its NRA cell and "—" for CCA, CTA and TTA (and ETA, the energy to
    accuracy, a column only where ``metrics`` has ``eta_j``).
    """
    require_columns(metrics, METRICS_COLUMNS, "metrics")
    metrics = with_float_columns(metrics, METRICS_COLUMNS[1:])
    if targets is None:
        targets = sorted(pd.unique(metrics["target_accuracy"].astype(float)))
    tables: list[Table] = []
    target_values = metrics["target_accuracy"].to_numpy(dtype=float)
    for target in targets:
        columns = _columns(float(target), "eta_j" in metrics.columns)
        headers = ("Method", *(c.header for c in columns))
        at_target = metrics.loc[np.isclose(target_values, float(target), rtol=0.0, atol=1e-9)]
        rows: list[tuple[str, ...]] = []
        kinds: list[str] = []
        methods: list[str] = []
        for method in style.order:
            found = at_target.loc[at_target["method"] == method]
            if found.empty:
                continue
            record = found.iloc[0]
            label = style.label(method)
            cells = [label]
            for column in columns:
                value = record[column.key]
                if column.key == "nra" and is_missing(value):
                    cells.append(not_reached_text(rounds, method))
                elif column.key == "final_accuracy":
                    runs = record["rounds_run"]
                    suffix = "" if is_missing(runs) else f" ({round(float(runs)):d})"
                    cells.append(format_percent(value) + suffix)
                else:
                    cells.append(column.fmt(value))
            rows.append(tuple(cells))
            kinds.append(FEDSIM)
            methods.append(method)

            ref = reference_values(reference, method, label, float(target))
            if not ref:
                continue
            paper_cells = ["↳ paper"]
            diff_cells = ["↳ difference"]
            for column in columns:
                if column.key not in ref:
                    paper_cells.append("")
                    diff_cells.append("")
                    continue
                ref_value = ref[column.key]
                paper_cells.append(column.fmt(ref_value))
                value = record[column.key]
                if is_missing(value):
                    diff_cells.append(MISSING)
                    continue
                text = column.diff(float(value), ref_value)
                if column.relative:
                    text += f" ({format_relative(float(value), ref_value)})"
                diff_cells.append(text)
            rows += [tuple(paper_cells), tuple(diff_cells)]
            kinds += [PAPER, DIFFERENCE]
            methods += [method, method]
        tables.append(
            Table(
                target_accuracy=float(target),
                title=f"Results at {format_target(float(target))} test accuracy",
                headers=headers,
                rows=tuple(rows),
                kinds=tuple(kinds),
                methods=tuple(methods),
            )
        )
    return tables


DEFINITIONS = """\
- **P_R**: remaining rate, surviving weights / all weights of the classifier.
- **Params**: parameters sent per message (surviving weights + all biases).
- **Comm./round**: bytes through the server's link in one round (download + upload, all clients); 1 MB = 10^6 B, 1 GB = 10^9 B, as in the paper.
- **Compute/round**: computation time of the mean participating client in one round.
- **NRA@x**: the first round after which the global model's test accuracy is ≥ x.
- **CCA@x**, **CTA@x**: traffic and per-round client computation time summed over rounds 1..NRA@x.
- **TTA@x**: simulated wall-clock time from the start of round 1 to the end of round NRA@x (download, compute, upload, waiting, aggregation).
- **ETA@x** (where computed): energy of all clients summed over rounds 1..NRA@x: training (device power x compute time) and radio (active transfers, tails, promotions; `system.energy`, docs/network-model.md "Energy"); 1 kJ = 10^3 J.
- **Final acc.**: test accuracy after the last round; the number of rounds run in parentheses."""


def empty_rounds(rounds: pd.DataFrame) -> dict[str, int]:
    """Per method (in order of appearance), the number of its rounds that
    aggregated nobody (``participants == 0``: every selected client dropped
    out, missed the deadline or was unavailable); methods without such
    rounds are left out. The global model does not change in those rounds."""
    empty = rounds.loc[rounds["participants"] == 0, "method"].astype(str)
    counts = empty.value_counts()
    return {m: int(counts[m]) for m in dict.fromkeys(empty)}


def empty_rounds_text(counts: Mapping[str, int], rounds: pd.DataFrame) -> str:
    """One sentence per method for ``empty_rounds``' counts: "original: 3 of
    150 rounds aggregated nobody." ("" when there are none)."""
    totals = rounds.groupby(rounds["method"].astype(str))["round"].count()
    return " ".join(
        f"{method}: {n} of {int(totals[method])} round{'s' if totals[method] != 1 else ''} "
        "aggregated nobody." for method, n in counts.items()
    )


def summary_markdown(
    tables: Sequence[Table],
    report: ScenarioReportInput | Mapping[str, Any],
    figures: Sequence[tuple[str, str]] = (),
    rounds: pd.DataFrame | None = None,
    extra: Sequence[str] = (),
) -> str:
    """summary.md: the scenario's name, description and provenance (from
    ``report``; a mapping with its fields is accepted), a warning when some
    rounds aggregated nobody (from ``rounds``, rounds.csv's frame), one Table I
    per target, ``extra`` lines (the asynchronous methods' section,
    `fedsim.report.scenario.asynchronous.async_markdown`), the definitions,
    then the figures (``(caption, relative path)``)."""
    report = ScenarioReportInput.coerce(report)
    lines = [f"# {report.name or 'fedsim report'}", ""]
    description = report.description.strip()
    if description:
        lines += [description, ""]
    provenance = report.provenance
    if provenance:
        lines += ["| provenance | |", "|:---|:---|"]
        lines += [f"| {md_cell(str(k))} | {md_cell(str(v))} |" for k, v in provenance.items()]
        lines.append("")
    empty = empty_rounds(rounds) if rounds is not None else {}
    if empty:
        lines += [
            "## Warning: rounds without participants",
            "",
            f"{empty_rounds_text(empty, rounds)} In such a round no update reached the server "
            "(no client was available, or every selected one dropped out or missed the "
            "deadline): the global model stayed as it was, while the round's time and partial "
            "traffic still count.",
            "",
        ]
    has_reference = False
    for table in tables:
        lines += [f"## {table.title}", ""]
        if not table.rows:
            lines += ["No method has metrics at this target.", ""]
            continue
        italic = [kind != FEDSIM for kind in table.kinds]
        lines += [markdown_table(table.headers, table.rows, italic), ""]
        has_reference = has_reference or any(k != FEDSIM for k in table.kinds)
    if has_reference:
        lines += [
            "*↳ paper*: the value the paper publishes; *↳ difference*: fedsim minus "
            "the paper (relative difference in parentheses; accuracy in percentage points).",
            "",
        ]
    lines += list(extra)
    lines += ["## Definitions", "", DEFINITIONS, ""]
    if figures:
        lines += ["## Figures", ""]
        for caption, path in figures:
            lines += [f"![{caption}]({path})", ""]
    return "\n".join(lines).rstrip() + "\n"
