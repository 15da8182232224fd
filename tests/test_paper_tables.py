"""scripts/paper_tables.py and scripts/paper/: every number of
reports/paper/tables recomputed from the committed per-round traces
(traces.parquet) and CSVs alone: no cache, no MNIST, seconds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from paper_script import ROOT, TABLES, common, figures, script, traces

longest, longest_curves = common.longest, common.longest_curves


@pytest.fixture(scope="module")
def committed():
    return (traces.read_traces(TABLES / "traces.parquet"), pd.read_csv(TABLES / "runs.csv"),
            pd.read_csv(TABLES / "traffic.csv"))


def _assert_rows_equal(rebuilt: pd.DataFrame, table: pd.DataFrame, keys: list[str], name: str) -> int:
    """Every column of every rebuilt row equals its committed row (floats to
    1e-9 relative, NaN = NaN); returns the rows compared."""
    merged = rebuilt.merge(table, on=keys, how="left", suffixes=("", " (committed)"), indicator=True)
    absent = merged[merged["_merge"] != "both"]
    assert absent.empty, f"{name}: rebuilt rows not in the committed table: {absent[keys].to_dict('records')}"
    for column in (c for c in rebuilt.columns if c not in keys):
        mine, theirs = merged[column], merged[f"{column} (committed)"]
        if pd.api.types.is_numeric_dtype(theirs) or pd.api.types.is_numeric_dtype(mine):
            a, b = mine.to_numpy(dtype=float), theirs.to_numpy(dtype=float)
            bad = ~(np.isclose(a, b, rtol=1e-9, atol=0.0) | (np.isnan(a) & np.isnan(b)))
        else:
            bad = (mine.astype(str) != theirs.astype(str)).to_numpy()
        assert not bad.any(), f"{name}.{column}: {merged.loc[bad, [*keys, column, f'{column} (committed)']]}"
    return len(merged)


def test_runs_csv_rows_recomputed_from_committed_traces(committed):
    found, runs, _ = committed
    rebuilt = traces.runs_frame(found)
    assert list(rebuilt.columns) == list(runs.columns)
    compared = _assert_rows_equal(rebuilt, runs, ["variant", "seed", "method", "target_accuracy"], "runs.csv")
    assert compared == len(rebuilt) >= 24  # at least seed 0's six GPU runs x four targets


def test_traffic_csv_rows_recomputed_from_committed_traces(committed):
    """The traffic rows of each (seed, method) whose longest run in the traces
    is the run the committed table used (same variant, same rounds)."""
    found, runs, traffic = committed
    table_runs = longest(runs).drop_duplicates(["seed", "method"]).set_index(["seed", "method"])
    chosen = longest_curves(found[found["variant"].isin(script.PAPER_VARIANTS)])
    last = chosen.groupby(["seed", "method"]).agg(variant=("variant", "first"), rounds=("round", "max"))
    same = {key for key, row in last.iterrows() if key in table_runs.index
            and table_runs.loc[key, "variant"] == row["variant"] and table_runs.loc[key, "rounds_run"] == row["rounds"]}
    rebuilt = traces.traffic_frame(found)
    rebuilt = rebuilt[[(s, m) in same for s, m in zip(rebuilt["seed"], rebuilt["method"], strict=True)]]
    assert list(traces.traffic_frame(found).columns) == list(traffic.columns)
    compared = _assert_rows_equal(rebuilt, traffic, ["encoding", "seed", "method", "target_accuracy"], "traffic.csv")
    assert compared >= 12  # values only: original, HP-FL 0.41 and 0.21 of seed 0 x four targets


@pytest.mark.xfail(strict=True, reason="the traces of the runs outside seed 0's GPU report were not exported "
                   "before their cache entries were lost; `python scripts/paper_tables.py` exports them "
                   "from the cache (then remove this mark)")
def test_every_run_of_the_tables_has_a_trace(committed):
    found, runs, _ = committed
    assert script.missing_runs(found) == []
    have = set(found[traces.KEYS].drop_duplicates().itertuples(index=False, name=None))
    assert set(runs[traces.KEYS].drop_duplicates().itertuples(index=False, name=None)) <= have


def test_tables_md_and_paired_md_regenerated_from_committed_csvs(committed):
    _, runs, traffic = committed
    sweep = pd.read_csv(script.MOBILE_SWEEP)
    assert script.tables_md(runs, traffic) == (TABLES / "tables.md").read_text()
    assert script.paired_report(runs, traffic, sweep) == (TABLES / "paired.md").read_text()


def _tiny_traces() -> pd.DataFrame:
    """Two hand-made runs of 3 rounds: accuracy 0.50, 0.92, 0.96 (NRA@90 = 2,
    NRA@93 = NRA@94 = NRA@95 = 3) and 0.50, 0.60, 0.70 (never reached)."""
    rows = []
    for method, accuracy in (("original", [0.50, 0.92, 0.96]), ("hp-fl", [0.50, 0.60, 0.70])):
        for r, acc in enumerate(accuracy, start=1):
            rows.append({"variant": "paper", "seed": 0, "method": method, "round": r, "accuracy": acc,
                         "loss": 1.0 / r, "participants": 100, "round_bytes": 10.0, "round_compute_s": 2.0,
                         "round_wallclock_s": 3.0, "remaining_rate": 1.0, "params": 7,
                         "training_ran_on": "cpu", **{c: np.nan for c in traces.ENCODING_COLUMNS.values()}})
    frame = pd.DataFrame(rows)[traces.TRACE_COLUMNS]
    once = traces.ENCODING_COLUMNS["bitmask once"]
    frame.loc[frame["method"] == "original", once] = [15.0, 10.0, 10.0]
    return frame


def test_runs_and_traffic_from_hand_made_traces(tmp_path):
    path = traces.write_traces(_tiny_traces(), tmp_path / "traces.parquet")
    found = traces.read_traces(path)
    runs = traces.runs_frame(found).set_index(["method", "target_accuracy"])
    assert runs.loc[("original", 0.9), ["nra", "cca_bytes", "cta_s", "tta_s"]].tolist() == [2, 20, 4, 6]
    assert runs.loc[("original", 0.95), ["nra", "cca_bytes", "final_accuracy", "best_accuracy"]].tolist() \
        == [3, 30, 0.96, 0.96]
    assert math.isnan(runs.loc[("hp-fl", 0.9), "nra"]) and math.isnan(runs.loc[("hp-fl", 0.9), "cca_bytes"])
    assert runs.loc[("hp-fl", 0.9), "rounds_run"] == 3
    traffic = traces.traffic_frame(found)
    assert set(traffic["encoding"]) == {"bitmask once"} and set(traffic["method"]) == {"original"}
    at = traffic.set_index("target_accuracy")
    assert at.loc[0.9, "cca_bytes"] == 25 and at.loc[0.95, "cca_bytes"] == 35
    assert at.loc[0.9, "comm_bytes_per_round"] == pytest.approx(35 / 3)


def test_read_traces_names_the_file_and_the_run(tmp_path):
    frame = _tiny_traces()
    frame = frame[~((frame["method"] == "hp-fl") & (frame["round"] == 2))]
    path = traces.write_traces(frame, tmp_path / "traces.parquet")
    with pytest.raises(ValueError, match=r"traces\.parquet: run \('paper', 0, 'hp-fl'\): rounds must be 1\.\.2"):
        traces.read_traces(path)
    frame.drop(columns=["loss"]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet: missing column\(s\) loss"):
        traces.read_traces(tmp_path / "bad.parquet")


def test_set_encoding_fills_one_run_and_refuses_other_accuracies():
    frame = _tiny_traces()
    rounds = pd.DataFrame({"round": [1, 2, 3], "accuracy": [0.50, 0.60, 0.70], "round_bytes": [9.0, 8.0, 8.0]})
    traces.set_encoding(frame, ("paper", 0, "hp-fl"), "indices every round", rounds)
    column = frame.loc[frame["method"] == "hp-fl", traces.ENCODING_COLUMNS["indices every round"]]
    assert column.tolist() == [9.0, 8.0, 8.0]
    assert frame.loc[frame["method"] == "original", traces.ENCODING_COLUMNS["indices every round"]].isna().all()
    with pytest.raises(ValueError, match="accuracies differ"):
        traces.set_encoding(frame, ("paper", 0, "original"), "indices every round", rounds)


def test_from_traces_refuses_missing_runs_and_writes_partial_elsewhere(committed, tmp_path):
    found = committed[0]
    with pytest.raises(SystemExit, match="lack run"):
        script.write_from_traces(tmp_path, found, None)
    with pytest.raises(SystemExit, match="overwrite the committed tables"):
        script.write_from_traces(script.DEFAULT_OUT, found, None, partial=True)
    script.write_from_traces(tmp_path, found, tmp_path, partial=True)
    assert pd.read_csv(tmp_path / "runs.csv").shape == traces.runs_frame(found).shape
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "accuracy_seeds.png", "accuracy_vs_compute.png", "accuracy_vs_round.png", "accuracy_vs_traffic.png"]
    assert not (tmp_path / "tables.md").exists()


def test_report_traces_reads_a_scenario_report(committed):
    """The committed traces are seed 0's GPU report (reports/paper) imported."""
    imported = traces.report_traces(ROOT / "reports" / "paper", "paper", 0)
    mine = committed[0][committed[0]["variant"] == "paper"]
    pd.testing.assert_frame_equal(imported.reset_index(drop=True), mine.reset_index(drop=True), check_dtype=False)
    values = traces.ENCODING_COLUMNS["values only (paper)"]
    assert imported.loc[imported["method"] == "original", values].notna().all()
    assert imported.loc[imported["method"] == "pretrained", values].isna().all()  # not a traffic-table method


def test_figures_from_traces(committed, tmp_path):
    path = figures.accuracy_seeds(committed[0], tmp_path / "seeds.png")
    assert path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="seed 7"):
        figures.accuracy_curves(committed[0], tmp_path, seed=7)
    sweep = pd.read_csv(script.MOBILE_SWEEP)
    assert figures.mobile_tta(sweep, tmp_path / "tta.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="reached 95%"):
        figures.mobile_tta(sweep, tmp_path / "tta95.png", target=0.95)


def test_study_summary_reports_an_exact_tie_as_a_tie():
    from fedsim.report.study.analysis import Configuration, Grid, Summary
    from fedsim.report.study.summary import _best_and_runner

    def cell(mean: float) -> Summary:
        return Summary(mean, mean, mean, 1, 1)

    configs = tuple(Configuration(m, 1.0, m) for m in ("a", "b", "c"))
    grid = Grid(configs, (1.0, 2.0), ((cell(5.0), cell(5.0)), (cell(5.0), cell(6.0)), (cell(7.0), cell(7.0))))
    assert _best_and_runner(grid, 0) == ("a = b (tie)", 2)
    assert _best_and_runner(grid, 1) == ("a", 1)
    solo = Grid(configs[:2], (1.0,), ((cell(3.0),), (cell(3.0),)))
    assert _best_and_runner(solo, 0) == ("a = b (tie)", None)
