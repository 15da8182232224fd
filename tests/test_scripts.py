"""The reproduction scripts of reports/paper/: every command they would run is
a valid scenario, and the GPU driver's plan respects its dependencies."""

from __future__ import annotations

import importlib.util
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
