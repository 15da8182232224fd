"""A study of link speed x pruning rate over a dynamic mobile network ranks by
energy as well as by time: ETA@x in the sweep, the energy ranking in
summary.md, and the energy figures along the study axes.

The study is tests/scenarios/tiny.yaml with LTE-like time-varying links, two
shared cells and the LTE energy preset, reduced to hp-fl and 2 rounds: 2
uplinks x 2 remaining rates (2 trainings, 4 simulations; seconds)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml

from fedsim import study
from fedsim.report.methods import MethodStyle
from fedsim.report.study.analysis import ENERGY_METRICS, configurations, metric_grid
from fedsim.report.study.figures import metrics_along_axis, tta_heatmap

matplotlib.use("Agg")
TINY = Path(__file__).parent / "scenarios" / "tiny.yaml"
UPLINK = "system.clients.uplink"
STUDY = {
    "name": "tiny_mobile_energy",
    "description": "2 uplinks x 2 rates on the tiny scenario over LTE-like links and 2 cells",
    "base": str(TINY),
    "set": {
        "rounds.max": 2, "targets": [0.2], "methods": {"hp-fl": {"remaining_rate": 0.8}},
        "system.clients.dynamics": {"model": "lte"},
        "system.cells": {"a": {"capacity_down": "30 Mbps", "capacity_up": "4 Mbps"},
                         "b": {"capacity_down": "30 Mbps", "capacity_up": "4 Mbps"}},
        "system.energy": {"preset": "lte", "compute_w": 2.0},
    },
    "axes": {UPLINK: ["0.5 Mbps", "20 Mbps"], "methods.hp-fl.remaining_rate": [1.0, 0.8]},
    "seeds": [0],
}


@pytest.fixture(scope="module")
def energy_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[study.StudyResult, Path]:
    directory = tmp_path_factory.mktemp("energy_study")
    (directory / "study.yaml").write_text(yaml.safe_dump({"study": STUDY}, sort_keys=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEDSIM_CACHE", str(directory / "cache"))
        spec = study.load(directory / "study.yaml")
        return study.run(spec, out_dir=directory / "out", workers=1), directory / "out"


def test_the_sweep_carries_energy_to_accuracy(energy_study):
    result, _out = energy_study
    sweep = result.sweep
    assert not result.failed and len(sweep) == 4
    assert sweep["nra"].notna().all() and np.isfinite(sweep["eta_j"].to_numpy(float)).all()
    assert (sweep["eta_j"] > 0).all()
    # a slower uplink keeps the radios on longer: more joules at each remaining rate
    for _rate, rows in sweep.groupby("remaining_rate"):
        by_link = rows.sort_values(UPLINK)
        if by_link["nra"].nunique() == 1:
            assert by_link["eta_j"].iloc[0] > by_link["eta_j"].iloc[1]


def test_the_study_ranks_by_energy(energy_study):
    result, out = energy_study
    sweep = result.sweep.copy()
    style = MethodStyle.build({"methods": ["hp-fl"]}, sweep["method"].astype(str))
    configs = configurations(sweep, style)
    grid = metric_grid(sweep, configs, UPLINK, 0.2, "eta_j")
    best = grid.best()
    assert all(b is not None for b in best)  # every link speed has a best configuration by energy
    for j in range(len(grid.link_values)):
        means = [grid.cells[i][j].mean for i in grid.ranking(j)]
        assert means == sorted(means)  # the ranking orders ETA@x
        assert grid.ranking(j)[0] == best[j]
    summary = (out / "summary.md").read_text()
    assert "Best configuration by energy per" in summary
    assert "ETA@20 %" in summary and "Where the energy ranking flips" in summary
    figures = {p.name for p in (out / "figures").iterdir()}
    assert "heatmap_eta_20.png" in figures
    assert "energy_along_system_clients_uplink_20.png" in figures
    assert "energy_along_methods_hp_fl_remaining_rate_20.png" in figures


def _toy_sweep() -> pd.DataFrame:
    rows = []
    for link, label in ((1e6, "1 Mbps"), (1e7, "10 Mbps")):
        for rate in (1.0, 0.5):
            for seed in (0, 1):
                rows.append({"seed": seed, "method": "hp-fl", "remaining_rate": rate, "target_accuracy": 0.5,
                             "link": link, "link_label": label, "nra": 3, "tta_s": 100.0 / rate,
                             "eta_j": (5e4 if rate == 1.0 else 2e4) * (2 if link == 1e6 else 1) + seed})
    return pd.DataFrame(rows)


def test_energy_heatmap_and_panels_say_joules():
    sweep = _toy_sweep()
    style = MethodStyle.build({"methods": ["hp-fl"]}, sweep["method"])
    configs = configurations(sweep, style)
    grid = metric_grid(sweep, configs, "link", 0.5, "eta_j")
    fig = tta_heatmap(grid, style, {1e6: "1 Mbps", 1e7: "10 Mbps"}, "link", "Energy", quantity="energy")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(t.endswith("kJ") for t in texts), texts
    assert "Mean ETA (kJ)" in fig.axes[1].get_ylabel()
    with pytest.raises(ValueError, match="quantity"):
        tta_heatmap(grid, style, {}, "link", "x", quantity="money")
    from fedsim.report.inputs import StudyReportInput
    report = StudyReportInput.coerce({"axes": ["link"], "methods": ["hp-fl"], "targets": [0.5]})
    fig = metrics_along_axis(sweep, "link", ["link"], 0.5, configs, style, report, metrics=ENERGY_METRICS)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == ["ETA@50 %"] and fig.axes[0].get_ylabel() == "kJ"
    assert fig._suptitle.get_text().startswith("Energy along")
    assert math.isclose(grid.cells[grid.best()[0]][0].mean, 4e4 + 0.5)  # P_R 0.5 at 1 Mbps
