"""write_sweep_report on a tiny hand-made study: 3 link speeds x 4
configurations x 2 seeds, TTA values chosen so the best configuration of each
link speed is known, one configuration that never reaches the target and one
cell reached by a single seed."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mimage
from matplotlib.patches import Rectangle

from fedsim.report import StudyReportInput, SweepAxis, write_sweep_report
from fedsim.report.methods import MethodStyle
from fedsim.report.study.analysis import configurations, metric_grid, summarize, t975
from fedsim.report.study.figures import tta_heatmap

AXIS = "system.clients.uplink"
LINKS_BPS = (1e6, 1e7, 1e8)
# mean TTA (s) per configuration and link speed; seeds are mean x (1 -/+ 1 %)
TTA_S = {
    ("original", 1.0): (3000.0, 1500.0, 1000.0),
    ("hpfl", 0.41): (2000.0, 1200.0, 1100.0),
    ("hpfl", 0.107): (1800.0, 1400.0, 1300.0),
    ("random", 0.107): (math.nan, math.nan, math.nan),
}
META = {
    "name": "uplink study",
    "description": "Uplink speed against remaining rate.",
    "axes": [AXIS],
    "methods": ["original", "pretrain", "hpfl", "random"],
    "labels": {"hpfl": "HP-FL"},
    "axis_labels": {AXIS: "Client uplink"},
    "axis_roles": {AXIS: "bandwidth"},
}
# The same, typed, as the study's write path builds it.
REPORT = StudyReportInput(
    name="uplink study",
    description="Uplink speed against remaining rate.",
    axes=(SweepAxis(AXIS, "Client uplink", "bandwidth"),),
    methods=("original", "pretrain", "hpfl", "random"),
    labels={"hpfl": "HP-FL"},
)
PAGE = re.compile(rb"/Type\s*/Page\b")


def make_sweep() -> pd.DataFrame:
    rows = []
    for (method, rate), ttas in TTA_S.items():
        for link_bps, tta_s in zip(LINKS_BPS, ttas, strict=True):
            for seed, factor in ((0, 0.99), (1, 1.01)):
                value = tta_s * factor
                # hpfl 0.41 at 100 Mbps: seed 1 misses the target
                if (method, rate, link_bps, seed) == ("hpfl", 0.41, 1e8, 1):
                    value = math.nan
                reached = not math.isnan(value)
                rows.append(
                    {
                        AXIS: link_bps,
                        f"{AXIS}_label": f"{link_bps / 1e6:g} Mbps",
                        "seed": seed,
                        "method": method,
                        "remaining_rate": rate,
                        "target_accuracy": 0.95,
                        "nra": 100 / rate * factor if reached else math.nan,
                        "cca_bytes": 213e6 * 100 * factor if reached else math.nan,
                        "cta_s": 1000.0 * factor if reached else math.nan,
                        "tta_s": value,
                        "final_accuracy": 0.97 - 0.01 * (1 - rate),
                        "rounds_run": 3000,
                    }
                )
    sweep = pd.DataFrame(rows)
    sweep["nra"] = sweep["nra"].round().astype("Int64")  # nullable, as fedsim.metrics writes it
    return sweep


def test_summarize_uses_student_t() -> None:
    stats = summarize([1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3)  # t(0.975, 2) x sd 1 / sqrt(3)
    assert stats.mean == 2.0 and stats.reached
    assert stats.low == pytest.approx(2.0 - half) and stats.high == pytest.approx(2.0 + half)
    partial = summarize([4.0, math.nan])
    assert (partial.mean, partial.n_reached, partial.n_seeds, partial.reached) == (4.0, 1, 2, False)
    assert math.isnan(summarize([math.nan]).mean)
    assert t975(1) == 12.706 and t975(30) == 2.042 and t975(1000) == 1.960


def test_heatmap_axis_comes_from_the_roles_not_the_names() -> None:
    rate = SweepAxis("methods.hpfl.remaining_rate", role="remaining_rate")
    link = SweepAxis("system.clients.rtt", role="bandwidth")  # a role, whatever the name
    other = SweepAxis("system.clients.dropout")
    assert StudyReportInput("s", (rate, other, link)).heatmap_axis() == "system.clients.rtt"
    assert StudyReportInput("s", (rate, other)).heatmap_axis() == "system.clients.dropout"
    assert StudyReportInput("s", (rate,)).heatmap_axis() is None
    # a name that mentions a link is no role: without one the first non-rate axis is used
    named = SweepAxis("system.clients.uplink")
    assert StudyReportInput("s", (other, named)).heatmap_axis() == "system.clients.dropout"
    assert StudyReportInput("s", (other, named), link_axis=named.column).heatmap_axis() == named.column
    with pytest.raises(ValueError, match="not one of the axes"):
        StudyReportInput("s", (other,), link_axis="x")
    with pytest.raises(ValueError, match="role"):
        SweepAxis("x", role="link")  # type: ignore[arg-type]


def test_best_configuration_per_link_is_the_hand_computed_argmin() -> None:
    sweep = make_sweep()
    style = MethodStyle.build(META, sweep["method"])
    configs = configurations(sweep, style)
    labels = [c.label for c in configs]
    assert labels == ["original", "HP-FL, P_R 0.41", "HP-FL, P_R 0.107", "random"]
    grid = metric_grid(sweep, configs, AXIS, 0.95)
    # 1 Mbps: min(3000, 2000, 1800) -> HP-FL 0.107; 10 Mbps: min(1500, 1200, 1400)
    # -> HP-FL 0.41; 100 Mbps: HP-FL 0.41 (1100) has one seed short, so original (1000)
    assert grid.best() == [2, 1, 0]
    assert grid.cells[1][2].n_reached == 1 and grid.cells[1][2].mean == pytest.approx(1089.0)
    assert grid.cells[3][0].n_reached == 0

    fig = tta_heatmap(
        grid, style, {v: f"{v / 1e6:g} Mbps" for v in LINKS_BPS}, "Client uplink", "t"
    )
    ax = fig.axes[0]
    (best_line,) = [
        line
        for line in ax.get_lines()
        if line.get_drawstyle() == "steps-mid" and line.get_color() == "black"
    ]
    assert list(best_line.get_xdata()) == [0, 1, 2]
    assert np.allclose(np.asarray(best_line.get_ydata()) - 0.3, [2, 1, 0])
    hatched = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch()]
    assert sorted((p.get_x() + 0.5, p.get_y() + 0.5) for p in hatched) == [(0, 3), (1, 3), (2, 3)]
    assert sum(t.get_text() == "not reached" for t in ax.texts) == 3
    assert any(t.get_text() == "18.1 min\n(1/2 seeds)" for t in ax.texts)


def test_write_sweep_report(tmp_path: Path) -> None:
    written = write_sweep_report(tmp_path, make_sweep(), REPORT, dpi=50)
    assert set(written) == {
        "figures/heatmap_tta_95.png",
        "figures/along_system_clients_uplink_95.png",
        "report.pdf",
        "summary.md",
    }
    for relative in written:
        if relative.endswith(".png"):
            height, width, _ = mimage.imread(tmp_path / relative).shape
            assert 120 <= height <= 2000 and 200 <= width <= 2000
    assert len(PAGE.findall((tmp_path / "report.pdf").read_bytes())) == 3

    text = (tmp_path / "summary.md").read_text()
    assert "- `system.clients.uplink`: 1 Mbps, 10 Mbps, 100 Mbps" in text
    assert "**Seeds**: 0, 1 (2 replicates per cell)" in text
    # best 1800 s = 30.0 min, runner-up 2000 s = 33.3 min, margin 200 s = 3.3 min (11.1 %)
    assert (
        "| 1 Mbps | HP-FL, P_R 0.107 | 30.0 min | HP-FL, P_R 0.41 | 33.3 min | 3.3 min (11.1 %) |"
        in text
    )
    # half the 95 % interval of 3000 x (0.99, 1.01): 12.706 x 30 s = 381 s = 6.4 min
    assert "| original | 50.0 min ± 6.4 min | 25.0 min ± 3.2 min |" in text
    assert "| 100 Mbps | original | 16.7 min | HP-FL, P_R 0.107 | 21.7 min |" in text
    assert "- best changes between 1 Mbps and 10 Mbps: HP-FL, P_R 0.107 → HP-FL, P_R 0.41" in text
    assert "- best changes between 10 Mbps and 100 Mbps: HP-FL, P_R 0.41 → original" in text
    # 10 -> 100 Mbps: original (1500 -> 1000) overtakes HP-FL 0.107 (1400 -> 1300)
    assert "- between 10 Mbps and 100 Mbps: original overtakes HP-FL, P_R 0.107" in text
    assert "| random | not reached | not reached | not reached |" in text
    assert "(1/2 seeds)" in text
    # the old meta mapping (with the role said) writes the same summary
    old = write_sweep_report(tmp_path / "meta", make_sweep(), META, dpi=50, formats=("svg",))
    assert (tmp_path / "meta" / "summary.md").read_text().split("## Figures")[0] == text.split(
        "## Figures"
    )[0]
    assert set(old) == {"figures/heatmap_tta_95.svg", "figures/along_system_clients_uplink_95.svg",
                        "summary.md"}


def test_sweep_needs_its_axes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="axes"):
        write_sweep_report(tmp_path, make_sweep(), {**META, "axes": []})
    with pytest.raises(ValueError, match="lacks columns"):
        write_sweep_report(tmp_path, make_sweep().drop(columns="seed"), META)


def test_zipped_axes_move_together(tmp_path: Path) -> None:
    """In zip mode a second axis that moves with the link axis makes no facets
    and no figure of its own."""
    down = "system.clients.downlink"
    sweep = make_sweep()
    sweep[down] = sweep[AXIS] * 4
    sweep[f"{down}_label"] = (sweep[down] / 1e6).map(lambda v: f"{v:g} Mbps")
    meta = {**META, "axes": [AXIS, down], "mode": "zip",
            "axis_roles": {AXIS: "bandwidth", down: "bandwidth"}}
    written = write_sweep_report(tmp_path, sweep, meta, dpi=50)
    assert set(written) == {"figures/heatmap_tta_95.png", "figures/along_system_clients_uplink_95.png",
                            "report.pdf", "summary.md"}
    text = (tmp_path / "summary.md").read_text()
    assert "- best changes between 10 Mbps and 100 Mbps: HP-FL, P_R 0.41 → original" in text
    assert "downlink = " not in text  # no facet headings
    gridded = write_sweep_report(tmp_path / "grid", sweep, {**meta, "mode": "grid"}, dpi=50)
    assert "figures/heatmap_tta_95_3.png" in gridded  # a grid facets by the other axis
