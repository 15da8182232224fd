"""reports/paper/tables/accuracy_seeds.png (scripts/paper/figures.py): drawn
from the committed traces.parquet alone, it shows exactly the runs there are,
in percent, in the package's style, with no empty panel, and a run added or
extended later appears with no change to the code. Seconds, no cache."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from paper_script import TABLES, common, figures, script, traces

from fedsim.report import style

CPU_RUN = common.CPU_RUN

TABLE_I = "Table I: dense, and pruned to P_R 0.107"
TABLE_II = "Table II: pruned to P_R 0.41 and 0.21"
#: (panel, method, seed, variant, last round) of every run traces.parquet holds
#: in the paper's settings, as the brief lists them
COMMITTED = [
    (TABLE_I, "original", 0, "paper", 3000),
    (TABLE_I, "pretrained", 0, "paper", 1150),
    (TABLE_I, "hp-fl", 0, "paper", 950),
    (TABLE_I, "random-pruning", 0, "paper", 950),
    (TABLE_II, "hp-fl-0.41", 0, "paper", 1000),
    (TABLE_II, "hp-fl-0.41", 1, CPU_RUN, 272),
    (TABLE_II, "hp-fl-0.41", 2, CPU_RUN, 210),
    (TABLE_II, "hp-fl-0.21", 0, "paper", 1000),
    (TABLE_II, "hp-fl-0.21", 1, CPU_RUN, 556),
    (TABLE_II, "hp-fl-0.21", 2, CPU_RUN, 440),
    (TABLE_II, "random41", 0, CPU_RUN, 410),
    (TABLE_II, "random21", 0, CPU_RUN, 814),
]


@pytest.fixture(scope="module")
def committed() -> pd.DataFrame:
    return traces.read_traces(TABLES / "traces.parquet")


def _drawn(fig) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(panel title, line label) -> (x, y) of every run line of ``fig``."""
    return {(ax.get_title(), line.get_label()): (np.asarray(line.get_xdata()), np.asarray(line.get_ydata()))
            for ax in fig.axes for line in ax.get_lines() if ", seed " in str(line.get_label())}


def test_the_lines_are_the_runs_of_the_committed_traces(committed):
    lines = figures.seed_lines(committed)
    assert [(x.panel, x.method, x.seed, x.variant, int(x.rounds[-1])) for x in lines] == COMMITTED
    for line in lines:
        rows = committed[(committed["variant"] == line.variant) & (committed["seed"] == line.seed)
                         & (committed["method"] == line.method)].sort_values("round")
        np.testing.assert_array_equal(line.rounds, rows["round"].to_numpy(dtype=float))
        np.testing.assert_allclose(line.accuracy_pct, 100 * rows["accuracy"].to_numpy())
    # percent, not a fraction: every run climbs past 90 %, the CPU runs stop at their first round >= 95 %
    assert all(90.0 < x.accuracy_pct.max() < 100.0 for x in lines)
    cpu = [x for x in lines if x.variant == CPU_RUN and x.method != "random21"]
    assert all(x.accuracy_pct[-1] >= 94.995 and (x.accuracy_pct[:-1] < 94.995).all() for x in cpu)


def test_the_figure_draws_each_line_in_percent_with_a_legend_of_seeds_and_methods(committed, tmp_path):
    lines = figures.seed_lines(committed)
    with matplotlib.rc_context(style.RC):
        fig = figures.seeds_figure(lines)
    assert [ax.get_title() for ax in fig.axes] == [TABLE_I, TABLE_II]  # no empty panel
    drawn = _drawn(fig)
    assert set(drawn) == {(x.panel, f"{x.method}, seed {x.seed}") for x in lines}
    for line in lines:
        x, y = drawn[(line.panel, f"{line.method}, seed {line.seed}")]
        np.testing.assert_array_equal(x, line.rounds)
        np.testing.assert_array_equal(y, line.accuracy_pct)
    for ax in fig.axes:
        assert ax.get_ylim() == (80.0, 98.0) and ax.get_xscale() == "log"
        assert [t.get_text() for t in ax.texts] == ["95 %"]
    legends = {ax.get_title(): [t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes}
    assert legends[TABLE_I] == ["original: seed 0", "pretrained: seed 0", "hp-fl: seed 0",
                                "random-pruning: seed 0"]
    assert legends[TABLE_II] == ["hp-fl-0.41: seeds 0, 1, 2", "hp-fl-0.21: seeds 0, 1, 2",
                                 "random-pruning-0.41: seed 0", "random-pruning-0.21: seed 0",
                                 "seed 0", "seed 1", "seed 2"]
    # one colour per method, the same as in the accuracy_vs_* figures; one line style per seed
    colors = {line.get_label(): line.get_color() for ax in fig.axes for line in ax.get_lines()}
    assert colors["hp-fl-0.41, seed 1"] == colors["hp-fl-0.41, seed 2"] == style.PALETTE[4]
    assert colors["random21, seed 0"] == style.PALETTE[7]
    styles = {line.get_label(): line.get_linestyle() for ax in fig.axes for line in ax.get_lines()}
    assert [styles[f"hp-fl-0.21, seed {s}"] for s in (0, 1, 2)] == ["-", "--", ":"]
    path = figures.accuracy_seeds(committed, tmp_path / "accuracy_seeds.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000


def test_a_run_added_or_extended_later_appears_without_a_code_change(committed):
    """random21 seed 0 trained on past its last round (the longest run counts), and
    original FL of seed 1 exported: both drawn, nothing else moves."""
    longer = committed[(committed["method"] == "random21")].copy()
    last = int(longer["round"].max())
    extra = longer.tail(300).copy()
    extra["round"] += 300
    longer = pd.concat([longer, extra], ignore_index=True)
    longer["variant"] = "paper, GPU run finished on the CPU"
    seed1 = committed[(committed["method"] == "original") & (committed["variant"] == "paper")].head(120).copy()
    seed1["seed"] = 1
    grown = pd.concat([committed, longer, seed1], ignore_index=True)
    lines = {(x.method, x.seed): x for x in figures.seed_lines(grown)}
    assert int(lines[("random21", 0)].rounds[-1]) == last + 300
    assert lines[("random21", 0)].variant == "paper, GPU run finished on the CPU"
    assert int(lines[("original", 1)].rounds[-1]) == 120 and lines[("original", 1)].panel == TABLE_I
    assert len(lines) == len(COMMITTED) + 1
    with matplotlib.rc_context(style.RC):
        fig = figures.seeds_figure(list(lines.values()))
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[0] == "original: seeds 0, 1" and legend[-2:] == ["seed 0", "seed 1"]


def test_no_empty_panel_and_no_figure_from_nothing(committed):
    table_ii = committed[committed["method"].isin(["hp-fl-0.41", "random21"])]
    with matplotlib.rc_context(style.RC):
        fig = figures.seeds_figure(figures.seed_lines(table_ii))
    assert [ax.get_title() for ax in fig.axes] == [TABLE_II]
    init = committed[committed["variant"] == "PyTorch default initialisation"]  # not the paper's settings
    assert figures.seed_lines(init) == []
    with pytest.raises(ValueError, match="no trace of the paper's settings"):
        figures.seeds_figure([])


def test_allow_partial_writes_the_figure_from_the_runs_there_are(committed, tmp_path):
    script.write_from_traces(tmp_path, committed, None, partial=True)
    assert (tmp_path / "accuracy_seeds.png").stat().st_size > 20_000
    assert not (tmp_path / "tables.md").exists() and not (tmp_path / "paired.md").exists()
