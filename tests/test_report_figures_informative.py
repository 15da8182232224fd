"""A study report leaves out the figures that carry no information (an
empty heatmap, metric panels that are flat along an axis), says so in
summary.md, deletes stale images of them, and reports an exact tie as a tie;
`fedsim.report.study.from_files` renders a study's report again from its
sweep.csv and study.resolved.yaml.

The hand-made study: 3 link speeds x 2 compute models x 2 methods, one seed,
targets 90 % (reached everywhere) and 95 % (reached nowhere). As in an
idealised study where every client takes part in every round, NRA, CCA and
the final accuracy do not depend on the link, CTA depends on the compute
model only, and TTA falls with the link speed."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fedsim.errors import InputError
from fedsim.report import StudyReportInput, SweepAxis, write_report, write_sweep_report
from fedsim.report.scenario import informative as SI
from fedsim.report.scenario.from_files import rerender as scenario_rerender
from fedsim.report.scenario.tables import BREAKDOWN_COLUMNS
from fedsim.report.study.analysis import SWEEP_METRICS, Configuration, Grid, Summary, ranking_flips
from fedsim.report.study.from_files import report_input, rerender
from fedsim.report.study.informative import grid_has_data, informative_metrics, varies_along

LINK = "system.clients.uplink.median"
WORK = "system.compute.work"
LINKS_BPS = (1e6, 1e7, 1e8)
PAGE = re.compile(rb"/Type\s*/Page\b")
REPORT = StudyReportInput(
    name="links",
    axes=(SweepAxis(LINK, "median client uplink", "bandwidth"), SweepAxis(WORK, "compute model")),
    methods=("original", "hp-fl"),
    targets=(0.9, 0.95),
)


def make_sweep() -> pd.DataFrame:
    """The module docstring's study (SI units; NaN: target missed)."""
    rows = []
    for work, work_label in ((0.0, "remaining_rate"), (1.0, "dense")):
        for method, rate, nra in (("original", 1.0, 24), ("hp-fl", 0.41, 43)):
            compute_s = 10.0 * (rate if work == 0.0 else 1.0)
            for link in LINKS_BPS:
                round_s = compute_s + 8 * 213e6 * rate / 100 / link
                for target in (0.9, 0.95):
                    reached = target == 0.9
                    rows.append({
                        LINK: link, f"{LINK}_label": f"{link / 1e6:g} Mbps",
                        WORK: work, f"{WORK}_label": work_label,
                        "seed": 0, "method": method, "remaining_rate": rate, "target_accuracy": target,
                        "nra": nra if reached else math.nan,
                        "cca_bytes": nra * 213e6 * rate if reached else math.nan,
                        "cta_s": nra * compute_s if reached else math.nan,
                        "tta_s": nra * round_s if reached else math.nan,
                        "final_accuracy": 0.947 if method == "original" else 0.934,
                        "rounds_run": 150,
                    })
    return pd.DataFrame(rows)


def _pages(pdf: Path) -> int:
    return len(PAGE.findall(pdf.read_bytes()))


def test_a_flat_metric_does_not_vary_and_a_changing_one_does() -> None:
    rows = make_sweep()
    at90 = rows[rows["target_accuracy"] == 0.9]
    keys = ["method", "remaining_rate", WORK]
    assert not varies_along(at90, LINK, "nra", keys)
    assert not varies_along(at90, LINK, "cta_s", keys)
    assert varies_along(at90, LINK, "tta_s", keys)
    # along the compute model, CTA moves (HP-FL's compute is x P_R under one model only)
    assert varies_along(at90, WORK, "cta_s", ["method", "remaining_rate", LINK])
    # nothing reached: no information, whatever the axis
    at95 = rows[rows["target_accuracy"] == 0.95]
    assert not varies_along(at95, LINK, "tta_s", keys)
    # reached at one link speed only: that is information
    partly = at95.copy()
    partly.loc[partly[LINK] == 1e8, "tta_s"] = 100.0
    assert varies_along(partly, LINK, "tta_s", keys)
    # differences in the last bits (another summation order) are no variation
    noisy = at90.copy()
    noisy["nra"] = noisy["nra"] * (1 + 1e-13 * np.arange(len(noisy)))
    assert not varies_along(noisy, LINK, "nra", keys)
    # a single axis value: nothing to vary along, a reached value is enough
    one = at90[at90[LINK] == 1e6]
    assert varies_along(one, LINK, "nra", keys)
    shown = informative_metrics(rows, LINK, 0.9, SWEEP_METRICS, [WORK])
    assert [m[0] for m in shown] == ["tta_s"]


def test_the_report_leaves_out_what_carries_no_information(tmp_path: Path) -> None:
    figures = tmp_path / "figures"
    figures.mkdir()
    stale = figures / "heatmap_tta_95_1.png"  # an earlier run's empty heatmap
    stale.write_bytes(b"old")
    other = figures / "tta_vs_uplink_90.png"  # drawn by another script: kept
    other.write_bytes(b"mine")
    written = write_sweep_report(tmp_path, make_sweep(), REPORT, formats=("png", "pdf"))
    names = sorted(p.name for p in figures.iterdir())
    assert names == [
        "along_system_clients_uplink_median_90.png",
        "along_system_compute_work_90.png",
        "heatmap_tta_90_1.png",
        "heatmap_tta_90_2.png",
        "tta_vs_uplink_90.png",
    ]
    assert not stale.exists() and other.read_bytes() == b"mine"
    assert "figures/heatmap_tta_95_1.png" not in written
    # the title page and the four informative figures, nothing else
    assert _pages(tmp_path / "report.pdf") == 5
    summary = (tmp_path / "summary.md").read_text()
    assert "Left out because they carry no information here:" in summary
    assert "- Time to 95 % accuracy (system.compute.work = remaining_rate): no configuration reached 95 %" in summary
    assert ("- Metrics along median client uplink at 95 %: Final accuracy constant along median client "
            "uplink; NRA, CCA, CTA, TTA not reached in any seed") in summary
    # the along-link figure keeps only TTA, and its caption says what was dropped
    assert ("Metrics along median client uplink at 90 % (left out: NRA, CCA, CTA, Final accuracy "
            "constant along median client uplink)") in summary
    assert "(left out: NRA, CCA, Final accuracy constant along compute model)" in summary
    # a target nobody reached: one line, not tables of "not reached"
    assert "No configuration reached 95 % in any seed at any median client uplink value." in summary
    assert "| original | not reached" not in summary


def test_a_varying_metric_keeps_its_panel(tmp_path: Path) -> None:
    sweep = make_sweep()
    # the final accuracy now depends on the link (e.g. clients dropped on slow links)
    sweep.loc[sweep[LINK] == 1e6, "final_accuracy"] -= 0.01
    write_sweep_report(tmp_path, sweep, REPORT, formats=("png",))
    summary = (tmp_path / "summary.md").read_text()
    assert "(left out: NRA, CCA, CTA constant along median client uplink)" in summary
    # at 95 % the final accuracy alone now varies: that figure is drawn
    assert (tmp_path / "figures" / "along_system_clients_uplink_median_95.png").exists()


def _grid(means: list[list[float]]) -> Grid:
    """A one-seed grid: ``means[config][link]`` (NaN: not reached)."""
    configs = tuple(Configuration(m, 1.0, m) for m in ("a", "b", "c")[: len(means)])
    cells = tuple(tuple(Summary(v, v, v, 1, 0 if math.isnan(v) else 1) for v in row) for row in means)
    return Grid(configs, (1.0, 2.0, 3.0), cells)


def test_an_exact_tie_is_a_tie_not_a_win_or_a_flip() -> None:
    labels = {1.0: "1 Mbps", 2.0: "2 Mbps", 3.0: "3 Mbps"}
    # b is best at 1 Mbps, a and b tie at 2 Mbps (Grid.best picks a, the first)
    assert ranking_flips(_grid([[20.0, 10.0, 5.0], [10.0, 10.0, 9.0]]), labels) == [
        "- at 2 Mbps: b = a (tie for best)"
    ]
    # without the tie the same order change is a flip
    assert ranking_flips(_grid([[20.0, 10.0, 5.0], [10.0, 11.0, 9.0]]), labels) == [
        "- best changes between 1 Mbps and 2 Mbps: b → a"
    ]
    # a tie at the left value, then b ahead; then a strictly ahead of b
    assert ranking_flips(_grid([[10.0, 10.0, 5.0], [10.0, 9.0, 9.0]]), labels) == [
        "- at 1 Mbps: a = b (tie for best); at 2 Mbps: b ahead",
        "- best changes between 2 Mbps and 3 Mbps: b → a",
    ]
    # c best throughout; b ahead of a at 1 Mbps, tied with it at 2 Mbps: no
    # "a overtakes b" from the order in which a tie happens to be sorted
    assert ranking_flips(_grid([[3.0, 2.0, 2.0], [2.0, 2.0, 3.0], [1.0, 1.0, 1.0]]), labels) == []
    # a real swap is still reported
    assert ranking_flips(_grid([[3.0, 2.0, 2.0], [2.0, 2.5, 3.0], [1.0, 1.0, 1.0]]), labels) == [
        "- between 1 Mbps and 2 Mbps: a overtakes b"
    ]


def test_grid_has_data() -> None:
    assert grid_has_data(_grid([[1.0, math.nan, math.nan]]))
    assert not grid_has_data(_grid([[math.nan] * 3, [math.nan] * 3]))


def _resolved(tmp_path: Path) -> dict:
    return {
        "study": {
            "name": "links", "description": "a test", "source": str(tmp_path / "study.yaml"),
            "axes": {LINK: list(LINKS_BPS), WORK: ["remaining_rate", "dense"]},
            "axis_labels": {LINK: ["1 Mbps", "10 Mbps", "100 Mbps"], WORK: ["remaining_rate", "dense"]},
            "mode": "grid", "seeds": [0],
        },
        "provenance": {"fedsim": "0.1.0", "command": "fedsim sweep study.yaml", "host": "left out"},
        "base_scenario": {"methods": {"original": {}, "hp-fl": {}}, "targets": [0.9, 0.95]},
    }


def test_report_input_from_the_resolved_study(tmp_path: Path) -> None:
    meta = report_input(_resolved(tmp_path), titles={LINK: "median client uplink"})
    assert [(a.column, a.title, a.role) for a in meta.axes] == [
        (LINK, "median client uplink", "bandwidth"), (WORK, "", "other")]
    assert meta.methods == ("original", "hp-fl") and meta.targets == (0.9, 0.95)
    assert dict(meta.provenance) == {"fedsim": "0.1.0", "command": "fedsim sweep study.yaml"}
    with pytest.raises(InputError, match=r"x\.yaml: no study\.axes"):
        report_input({"study": {"name": "x"}}, "x.yaml")


def test_rerender_from_the_files_of_a_study(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    make_sweep().to_csv(out / "sweep.csv", index=False)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(
        {"study": {"axis_titles": {LINK: "median client uplink", WORK: "compute model"}}}))
    (out / "study.resolved.yaml").write_text(yaml.safe_dump(_resolved(tmp_path)))
    written = rerender(out, formats=("png", "pdf"))
    assert "report.pdf" in written and _pages(out / "report.pdf") == 5
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# links\n") and "## Best configuration per median client uplink at 90 %" in summary
    assert "| command | fedsim sweep study.yaml |" in summary
    with pytest.raises(InputError, match=r"sweep\.csv: not found"):
        rerender(tmp_path / "nowhere")


# ----------------------------------------------------------------- scenario report
PAPER = Path(__file__).resolve().parent.parent / "reports" / "paper"
N_ROUNDS = 12


def paper_frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The first rounds of the committed paper report (seed 0, the paper's
    idealised system): rounds, metrics, timeline."""
    rounds = pd.read_parquet(PAPER / "rounds.parquet")
    timeline = pd.read_parquet(PAPER / "timeline.parquet", filters=[("round", "<=", N_ROUNDS)])
    return rounds[rounds["round"] <= N_ROUNDS], pd.read_parquet(PAPER / "metrics.parquet"), timeline


def test_idealised_frames_are_recognised_and_a_real_network_is_not() -> None:
    rounds, _, timeline = paper_frames()
    assert SI.wallclock_repeats_compute(rounds)
    assert SI.breakdown_constant(rounds, BREAKDOWN_COLUMNS)
    assert SI.clients_uniform(timeline)
    # one client 0.5 s slower in one round: the clients differ, the round lasts longer
    slow = timeline.copy()
    first = slow.index[0]
    slow.loc[first, "upload_end_s"] += 0.5
    assert not SI.clients_uniform(slow)
    late = rounds.copy()
    late.loc[late.index[3]:, "cum_wallclock_s"] += 0.5
    late.loc[late.index[3], "mean_wait_s"] += 0.5
    assert not SI.wallclock_repeats_compute(late)
    assert not SI.breakdown_constant(late, BREAKDOWN_COLUMNS)
    # a dropped client is information (who was dropped, when)
    dropped = timeline.copy()
    dropped.loc[first, "kept"] = False
    assert not SI.clients_uniform(dropped)
    assert not SI.clients_uniform(None) and not SI.clients_uniform(timeline.iloc[:0])


def test_the_scenario_report_leaves_out_the_idealised_figures(tmp_path: Path) -> None:
    rounds, metrics, timeline = paper_frames()
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "client_gantt.png").write_bytes(b"old")  # an earlier run's
    meta = {"name": "paper", "methods": list(pd.unique(rounds["method"])), "targets": [0.95]}
    written = write_report(tmp_path, rounds, metrics, timeline, meta, formats=("png", "pdf"), dpi=40)
    assert sorted(p.name for p in figures.iterdir()) == [
        "accuracy_vs_compute.png", "accuracy_vs_round.png", "accuracy_vs_traffic.png", "metrics_table.png"]
    assert "figures/client_gantt.png" not in written
    assert _pages(tmp_path / "report.pdf") == 5  # title, three curves, the table
    summary = (tmp_path / "summary.md").read_text()
    assert "Left out because they carry no information here:" in summary
    for name in ("accuracy_vs_wallclock", "round_time_breakdown", "client_gantt", "client_round_times"):
        assert f"- {name}: " in summary
    # the same run on a network where clients differ keeps every figure
    slow = timeline.copy()
    slow.loc[slow["client_id"] == 0, "upload_end_s"] += 0.5
    other = tmp_path / "other"
    written = write_report(other, rounds, metrics, slow, meta, formats=("png",), dpi=40)
    assert {"figures/client_gantt.png", "figures/client_round_times.png"} <= set(written)
    assert "figures/accuracy_vs_wallclock.png" not in written  # rounds unchanged: still TTA = CTA


def test_rerender_a_scenario_report_from_its_files(tmp_path: Path) -> None:
    rounds, metrics, timeline = paper_frames()
    src = tmp_path / "src"
    src.mkdir()
    rounds.to_parquet(src / "rounds.parquet")
    metrics.to_parquet(src / "metrics.parquet")
    timeline.to_parquet(src / "timeline.parquet")
    for name in ("scenario.resolved.yaml", "provenance.json"):
        (src / name).write_text((PAPER / name).read_text())
    written = scenario_rerender(src, tmp_path / "out")
    assert _pages(tmp_path / "out" / "report.pdf") == 5
    assert "figures/metrics_table.png" in written
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| training ran on | NVIDIA H200 |" in summary
    # the paper's values come back from the resolved scenario (fedsim.report.reference)
    assert "| *↳ paper* |  |  | *213.0 MB* | *10.0 s* | *134* | *29.2 GB* | *22.5 min* |" in summary
    (src / "provenance.json").unlink()
    with pytest.raises(InputError, match=r"provenance\.json: not found"):
        scenario_rerender(src, tmp_path / "again")
