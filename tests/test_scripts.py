"""The reproduction scripts of reports/paper/: every command they would run is
a valid scenario, and the GPU driver's plan respects its dependencies."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

from fedsim import config
from fedsim.cli import build_parser, scenario_from_args

ROOT = Path(__file__).resolve().parent.parent


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def parse(args: list[str]):
    """What `fedsim scenario` makes of a job's command line (the CLI's own
    parser and scenario loading)."""
    i = args.index("scenario")
    parsed = build_parser().parse_args(args[i:])
    return parsed, scenario_from_args(parsed)


def test_gpu_plan_is_valid_and_ordered(tmp_path: Path) -> None:
    gpu = load_script("paper_gpu")
    jobs = gpu.plan(tmp_path, ["--quiet"])
    names = [j.name for j in jobs]
    assert len(names) == len(set(names))
    by_name = {j.name: j for j in jobs}
    for job in jobs:
        parsed, scenario = parse(job.args)
        assert parsed.device == "cuda" and job.args[-2] == "--out"
        assert len(scenario.methods) == 1
        kind = next(iter(scenario.methods.values())).kind
        if job.ticket is None:  # runs without a ticket: the ticket makers and original FL
            assert job.name.startswith("ticket-") or kind == "original"
        else:
            assert by_name[job.ticket].phase == 0 and by_name[job.ticket].name.startswith("ticket-")
            ticket_seed = gpu.TICKETS[job.ticket.removeprefix("ticket-")][0]
            assert scenario.seed == ticket_seed
    # a run that stops at 95 % is never the only run of seed 0's Table I methods
    full = {parse(j.args)[0].methods for j in jobs if j.name.startswith("s0-") and j.phase == 1
            and "rounds.stop_when_reached=true" not in j.args}
    assert {"pretrained", "hp-fl", "random-pruning", "hp-fl-0.41", "hp-fl-0.21"} <= full
    first_waiting = [j for j in jobs if j.ticket is not None]
    assert not gpu.ready(first_waiting[0], by_name)  # nothing starts before its ticket


def test_table_variants_are_valid_scenarios() -> None:
    tables = load_script("paper_tables")
    for variant, seed, overrides, methods, continue_from in tables.VARIANTS:
        scenario = config.select_methods(config.load(tables.PAPER, [f"seed={seed}", *overrides]), methods)
        assert list(scenario.methods) == methods
        assert continue_from in (None, "cuda") and (continue_from is None or scenario.device == "cpu"), variant
    for _, overrides in tables.ENCODINGS:
        assert config.load(tables.PAPER, list(overrides)).system.payload.value_bits == 32


def test_nra_format_counts_missing_seeds() -> None:
    import pandas as pd

    tables = load_script("paper_tables")
    assert tables.fmt_nra(pd.Series([100.0, 120.0, 140.0]), pd.Series([3000, 3000, 3000])) == "120 ± 20 (100, 120, 140)"
    assert tables.fmt_nra(pd.Series([100.0, float("nan")]), pd.Series([3000, 950])) == \
        "1/2 reached (rounds run 3000/950)"


def test_the_longest_run_of_each_seed_and_method_counts() -> None:
    import pandas as pd

    tables = load_script("paper_tables")
    runs = pd.DataFrame({
        "variant": ["paper", tables.FINISHED, "paper", "global pruning"],
        "seed": [1, 1, 1, 1],
        "method": ["hp-fl", "hp-fl", "original", "hp-fl"],
        "target_accuracy": [0.95] * 4,
        "rounds_run": [1050, 1900, 117, 3000],
        "nra": [float("nan"), 1880.0, 117.0, 2000.0],
    })
    best = tables.longest(runs).set_index("method")
    assert best.loc["hp-fl", "variant"] == tables.FINISHED  # not the cut-short GPU run, nor another setting
    assert best.loc["original", "nra"] == 117.0
    curves = pd.DataFrame({"variant": ["paper"] * 2 + [tables.FINISHED] * 3, "seed": 1, "method": "hp-fl",
                           "round": [1, 2, 1, 2, 3], "accuracy": 0.5})
    assert set(tables.longest_curves(curves)["variant"]) == {tables.FINISHED}


def test_student_t_against_known_values() -> None:
    tables = load_script("paper_tables")
    # quantiles from statistical tables
    assert abs(tables.t_quantile(0.975, 2) - 4.302653) < 1e-6
    assert abs(tables.t_quantile(0.975, 1) - 12.706205) < 1e-6
    assert abs(tables.t_quantile(0.975, 10) - 2.228139) < 1e-6
    assert abs(tables.t_quantile(0.025, 2) + 4.302653) < 1e-6
    # closed forms: df 1 is Cauchy, F(t) = 1/2 + atan(t)/pi; df 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    for t in (-3.0, -0.5, 0.0, 1.0, 2.5):
        assert abs(tables.t_cdf(t, 1) - (0.5 + math.atan(t) / math.pi)) < 1e-12
        assert abs(tables.t_cdf(t, 2) - (0.5 + t / (2 * math.sqrt(2 + t * t)))) < 1e-12
    assert abs(tables.incomplete_beta(1.0, 1.0, 0.3) - 0.3) < 1e-12  # uniform
    assert abs(tables.incomplete_beta(2.0, 1.0, 0.5) - 0.25) < 1e-12  # x^2


def test_paired_stats_by_hand() -> None:
    tables = load_script("paper_tables")
    # d = (1, 2, 3): mean 2, s = 1, se = 1/sqrt(3), t = 2 sqrt(3) = 3.4641, df 2
    s = tables.paired_stats([2, 4, 6], [1, 2, 3])
    assert s["diffs"] == [1.0, 2.0, 3.0] and s["n"] == 3 and s["same_sign"] == 3
    assert s["mean"] == 2.0 and abs(s["sd"] - 1.0) < 1e-12
    half = 4.302653 / math.sqrt(3)
    assert abs(s["low"] - (2 - half)) < 1e-5 and abs(s["high"] - (2 + half)) < 1e-5
    t = 2 * math.sqrt(3)
    assert abs(s["p"] - (1 - t / math.sqrt(2 + t * t))) < 1e-10  # df 2: p = 1 - t / sqrt(2 + t^2) = 0.0742
    assert abs(s["p"] - 0.07418) < 1e-4
    # a sign change is counted, one seed gives no interval
    assert tables.paired_stats([1, 1, 5], [2, 0, 0])["same_sign"] == 2
    one = tables.paired_stats([5], [3])
    assert one["mean"] == 2.0 and math.isnan(one["low"]) and math.isnan(one["p"])


def test_prediction_interval_and_entropy_by_hand() -> None:
    tables = load_script("paper_tables")
    # (1, 2, 3): mean 2, s 1; half = 4.302653 x sqrt(4/3) = 4.968275
    mean, lo, hi = tables.prediction_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and abs(hi - 2 - 4.302653 * math.sqrt(4 / 3)) < 1e-5 and abs((hi - mean) - (mean - lo)) < 1e-9
    assert tables.binary_entropy(0.5) == 1.0 and tables.binary_entropy(1.0) == 0.0
    assert abs(tables.binary_entropy(0.25) - (0.5 + 0.75 * math.log2(4 / 3))) < 1e-12  # 0.811278
    assert abs(tables.binary_entropy(0.107) - 0.491) < 5e-4


def test_paired_report_reproduces_the_committed_numbers() -> None:
    """The statistics that findings.md quotes, from the committed CSVs."""
    import pandas as pd
    tables = load_script("paper_tables")
    out = ROOT / "reports" / "paper" / "tables"
    runs, traffic = pd.read_csv(out / "runs.csv"), pd.read_csv(out / "traffic.csv")
    paper = tables.longest(runs)
    s = tables.paired_stats(tables._at(paper, "random-pruning", 0.95, "nra"), tables._at(paper, "hp-fl", 0.95, "nra"))
    assert s["diffs"] == [324.0, 766.0, 528.0] and round(s["mean"]) == 539 and 0.05 < s["p"] < 0.055
    cca = tables.paired_stats(tables._at(paper, "hp-fl", 0.95, "cca_bytes"), tables._at(paper, "original", 0.95, "cca_bytes"))
    assert all(d > 0 for d in cca["diffs"])  # HP-FL 0.107 needs more traffic than original in every seed
    sweep = pd.read_csv(tables.MOBILE_SWEEP)
    (_f, _c, interval, mbps), = tables.mobile_crossover(sweep, factors=(1.0,))
    assert interval == "0.529 Mbps - 1.12 Mbps" and 0.529 < mbps < 1.12
    text = tables.paired_report(runs, traffic, sweep)
    assert "| +324, +766, +528 | +539 |" in text and "28,992" in text
