"""The study report's analysis on its own: no matplotlib, Student-t intervals
by hand, the best configuration per link speed and where the ranking flips;
the typed report input and how a study decides its axes' roles."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest

from fedsim.report.inputs import ScenarioReportInput, StudyReportInput, SweepAxis
from fedsim.report.methods import MethodStyle
from fedsim.report.study.analysis import (
    Configuration,
    Grid,
    Summary,
    axis_value_labels,
    configurations,
    metric_grid,
    ranking_flips,
    summarize,
    t975,
)


def test_the_analysis_imports_no_matplotlib() -> None:
    code = (
        "import sys\n"
        "import fedsim.report.study.analysis, fedsim.report.inputs, fedsim.report\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_interval_of_three_values_by_hand() -> None:
    # 10, 12, 17: mean 13, sample sd sqrt(((-3)^2 + (-1)^2 + 4^2) / 2) = sqrt(13)
    # half width t(0.975, 2) sd / sqrt(3) = 4.303 x 3.60555 / 1.73205 = 8.95741
    stats = summarize([10.0, 12.0, 17.0])
    assert stats.mean == 13.0
    assert stats.high - stats.mean == pytest.approx(8.95741, abs=1e-5)
    assert stats.mean - stats.low == pytest.approx(8.95741, abs=1e-5)
    assert (stats.n_seeds, stats.n_reached, stats.reached) == (3, 3, True)


def test_missed_seeds_and_single_values() -> None:
    assert summarize([5.0]) == Summary(5.0, 5.0, 5.0, 1, 1)
    partial = summarize([2.0, 4.0, math.nan])  # the interval is over the two that reached
    assert (partial.mean, partial.n_reached, partial.n_seeds, partial.reached) == (3.0, 2, 3, False)
    assert partial.high - partial.mean == pytest.approx(12.706 * math.sqrt(2) / math.sqrt(2))
    none = summarize([math.nan, math.nan])
    assert math.isnan(none.mean) and (none.n_seeds, none.n_reached) == (2, 0)


def test_t_quantiles() -> None:
    assert [t975(d) for d in (1, 2, 30, 31, 40, 41, 60, 120, 121)] == [
        12.706, 4.303, 2.042, 2.021, 2.021, 2.000, 2.000, 1.980, 1.960,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="degrees of freedom"):
        t975(0)


def _cell(mean: float, n_reached: int = 2, n_seeds: int = 2) -> Summary:
    return Summary(mean, mean, mean, n_seeds, n_reached)


def test_best_and_flips_on_a_hand_made_grid() -> None:
    configs = tuple(Configuration(m, 1.0, m.upper()) for m in ("a", "b", "c"))
    # link speeds 1, 2, 3: a wins at 1 (b is partial, so not eligible), b at 2
    # and 3; at 3 c overtakes a
    grid = Grid(
        configs,
        (1.0, 2.0, 3.0),
        (
            (_cell(10.0), _cell(30.0), _cell(50.0)),
            (_cell(5.0, n_reached=1), _cell(20.0), _cell(21.0)),
            (_cell(40.0), _cell(35.0), _cell(22.0)),
        ),
    )
    assert grid.best() == [0, 1, 1]
    assert grid.ranking(0) == [0, 2] and grid.ranking(2) == [1, 2, 0]
    labels = {1.0: "1 Mbps", 2.0: "2 Mbps", 3.0: "3 Mbps"}
    assert ranking_flips(grid, labels) == [
        "- best changes between 1 Mbps and 2 Mbps: A → B",
        "- between 2 Mbps and 3 Mbps: C overtakes A",
    ]
    nobody = Grid(configs[:1], (1.0,), ((_cell(math.nan, n_reached=0),),))
    assert nobody.best() == [None]


def test_metric_grid_and_configurations_from_a_sweep() -> None:
    rows = [
        {"link": link, "seed": seed, "method": method, "remaining_rate": rate,
         "target_accuracy": 0.9, "tta_s": tta + seed}
        for link, (ta, tb) in ((1e6, (100.0, 80.0)), (1e7, (50.0, 60.0)))
        for seed in (0, 2)
        for method, rate, tta in (("orig", 1.0, ta), ("hp", 0.4, tb))
    ]
    sweep = pd.DataFrame(rows)
    style = MethodStyle.build({"methods": ["orig", "hp"], "labels": {"hp": "HP"}}, sweep["method"])
    configs = configurations(sweep, style)
    assert [(c.method, c.remaining_rate, c.label) for c in configs] == [
        ("orig", 1.0, "orig"), ("hp", 0.4, "HP"),
    ]  # fmt: skip
    grid = metric_grid(sweep, configs, "link", 0.9)
    assert grid.link_values == (1e6, 1e7)
    assert [[c.mean for c in row] for row in grid.cells] == [[101.0, 51.0], [81.0, 61.0]]
    assert grid.best() == [1, 0]
    assert axis_value_labels(sweep, "link", bandwidth=True) == {1e6: "1 Mbps", 1e7: "10 Mbps"}
    assert axis_value_labels(sweep, "link") == {1e6: "1e+06", 1e7: "1e+07"}


def test_study_report_input_from_the_old_mapping() -> None:
    report = StudyReportInput.from_mapping({
        "name": "s", "axes": ["system.clients.uplink", "methods.hp.remaining_rate"],
        "axis_labels": {"system.clients.uplink": "uplink"}, "mode": "zip", "targets": [0.9],
        "axis_roles": {"system.clients.uplink": "bandwidth",
                       "methods.hp.remaining_rate": "remaining_rate"},
    })
    assert report.axes == (
        SweepAxis("system.clients.uplink", "uplink", "bandwidth"),
        SweepAxis("methods.hp.remaining_rate", "", "remaining_rate"),
    )
    assert report.zipped and report.targets == (0.9,)
    assert report.axis_title("methods.hp.remaining_rate") == "methods.hp.remaining_rate"
    assert report.heatmap_axis() == "system.clients.uplink"
    with pytest.raises(ValueError, match="axes"):
        StudyReportInput.from_mapping({"axes": []})
    with pytest.raises(ValueError, match="repeat"):
        StudyReportInput("s", (SweepAxis("a"), SweepAxis("a")))


def test_scenario_report_input_from_the_old_mapping() -> None:
    report = ScenarioReportInput.from_mapping(
        {"scenario": "q", "methods": ["a"], "deadline_s": 6, "targets": [0.95], "reference": {}}
    )
    assert report == ScenarioReportInput(name="q", methods=("a",), targets=(0.95,), deadline_s=6.0)
    assert ScenarioReportInput.coerce(report) is report


def test_a_study_decides_roles_from_the_scenario_field(tmp_path) -> None:
    """The write path of a study gives the report each axis' role from the
    field the axis sets: a link speed (whatever its unit), a remaining rate,
    or other; titles from axis_titles."""
    from fedsim import study
    from fedsim.study.outputs import report_input

    base = tmp_path / "base.yaml"
    base.write_text("name: b\nmethods: {hp-fl: {remaining_rate: 0.8}}\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "study:\n  name: s\n  base: base.yaml\n  axes:\n"
        "    system.clients.uplink: [1000000, 2000000]\n"
        "    methods.hp-fl.remaining_rate: [0.8, 0.64]\n"
        "    system.clients.rtt: ['10 ms', '20 ms']\n"
        "  axis_titles: {system.clients.uplink: client uplink}\n"
    )
    loaded = study.load(spec)

    class Result:  # the two attributes report_input reads
        pass

    result = Result()
    result.study = loaded  # type: ignore[attr-defined]
    report = report_input(result, {"fedsim": "x", "other": "y"})  # type: ignore[arg-type]
    assert report.axes == (
        SweepAxis("system.clients.uplink", "client uplink", "bandwidth"),
        SweepAxis("methods.hp-fl.remaining_rate", "methods.hp-fl.remaining_rate", "remaining_rate"),
        SweepAxis("system.clients.rtt", "system.clients.rtt", "other"),
    )
    assert report.heatmap_axis() == "system.clients.uplink"
    assert dict(report.provenance) == {"fedsim": "x"}
