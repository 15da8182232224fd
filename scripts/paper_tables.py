"""The tables and figures of reports/paper/ beyond the seed-0 report: seeds,
alternative implementation choices, honest traffic; every number recomputable
from the per-round traces committed beside them.

    python scripts/paper_tables.py [--out reports/paper/tables]   # from the cache
    python scripts/paper_tables.py --from-traces                  # from traces.parquet alone
    python scripts/paper_tables.py --markdown-only                # tables.md, paired.md from the CSVs

From the cache (``--cached-only``: it trains nothing, and each method ends at
its last cached round) it reads every run of `VARIANTS` and writes their
per-round traces to ``--out``/traces.parquet (`paper.traces`), then builds
everything below from those traces, as ``--from-traces`` does without the
cache. ``--import-report DIR VARIANT SEED`` adds the runs of a `fedsim
scenario` report directory (its rounds.parquet) to traces.parquet instead, for
runs whose cache entries are gone (the mask encodings other than the
paper's stay unknown for them). Written into ``--out``:

* ``traces.parquet``: per (variant, seed, method, round): accuracy, loss,
  participants, bytes, compute and simulated seconds, and the bytes of each
  mask encoding of the traffic table (`paper.traces`);
* ``runs.csv``: one row per (variant, seed, method, target): every metrics.csv
  column at targets 90, 93, 94 and 95 %, best accuracy, training device;
* ``traffic.csv``: CCA per mask encoding (values only, as the paper counts;
  bitmask once; bitmask every round; indices every round), method, seed,
  target, for original FL and HP-FL (each (seed, method)'s longest run);
* ``tables.md``: the tables that reports/paper/README.md and findings.md quote;
* ``paired.md``: the statistics findings.md states, one yardstick for all
  (`paper.paired`);
* ``accuracy_seeds.png`` and ``../figures/accuracy_vs_{round,traffic,compute}.png`` and ``../mobile_links/figures/tta_vs_uplink_90.png``
  (`paper.figures`).

**Adding a run** is one line in `VARIANTS`: (variant name, seed, the `--set`
overrides it was trained with, its methods, ``continue_from``). A run of the
paper's settings on the CPU, e.g. HP-FL 0.41 seed 1 trained with ``fedsim
scenario scenarios/paper.yaml --device cpu --methods hp-fl-0.41 --set seed=1
--set rounds.stop_when_reached=true ...``, is ``(CPU_RUN, 1, CPU_STOP,
["hp-fl-0.41"], None)``; a method defined on the command line carries its
definition: ``(CPU_RUN, 0, (RANDOM41, *CPU_STOP), ["random41"], None)``; an
alternative setting is a variant of its own, e.g. ``("PyTorch default
initialisation", 0, ("model.init=pytorch_default", *CPU_STOP), ["original"],
None)``. Then run this script (it reads the cache), and
``python -m pytest tests/test_paper_tables.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from paper import figures, traces  # noqa: E402
from paper.common import (  # noqa: E402,F401  (re-exported for tests/test_scripts.py)
    CPU_RUN,
    ENCODINGS,
    FINISHED,
    PAPER_VARIANTS,
    PRUNED,
    PYTORCH_INIT,
    TABLE_I,
    TARGETS,
    TRAFFIC_METHODS,
    _keep_longest,
    longest,
    longest_curves,
)
from paper.paired import (  # noqa: E402,F401
    LENET_BIASES,
    LENET_WEIGHTS,
    PAPER_CLIENTS,
    _at,
    mobile_crossover,
    paired_report,
)
from paper.stats import (  # noqa: E402,F401
    binary_entropy,
    incomplete_beta,
    paired_stats,
    prediction_interval,
    t_cdf,
    t_quantile,
)
from paper.tables import (  # noqa: E402,F401
    alternatives_table,
    fmt_nra,
    gap_table,
    seeds_table,
    table_one,
    tables_md,
    traffic_table,
)

from fedsim import config, pipeline  # noqa: E402

PAPER = ROOT / "scenarios" / "paper.yaml"
FIGURES = ROOT / "reports" / "paper" / "figures"
MOBILE_SWEEP = ROOT / "reports" / "paper" / "mobile_links" / "sweep.csv"
MOBILE_FIGURE = ROOT / "reports" / "paper" / "mobile_links" / "figures" / "tta_vs_uplink_90.png"
DEFAULT_OUT = ROOT / "reports" / "paper" / "tables"
TARGETS_SET = "targets=[" + ", ".join(str(t) for t in TARGETS) + "]"
HP_FL_PRE = "methods.hp-fl-pretrained={kind: hp-fl-pretrained, remaining_rate: 0.107}"
#: the overrides of a run trained on the CPU until its last target
CPU_STOP = ("device=cpu", "rounds.stop_when_reached=true")
RANDOM41 = "methods.random41={kind: random-pruning, remaining_rate: 0.41}"
RANDOM21 = "methods.random21={kind: random-pruning, remaining_rate: 0.21}"

#: (variant, seed, overrides, methods, continue_from): what scripts/paper_gpu.py
#: trained on the H200, then the pruned runs to 95 % on this 2-core CPU:
#: seed 0 from round 1 with `fedsim scenario scenarios/paper.yaml --device cpu
#: --methods M --rounds 3000 --set rounds.stop_when_reached=true`, seeds 1 and
#: 2 with the same command plus `--set seed=S --continue-from cuda` (M =
#: hp-fl, random-pruning). Seed 2's HP-FL reached 95 % on the GPU, so its
#: "finished" run is the GPU's. The alternatives' runs were continued the
#: same way, with their `--set`, until 95 % or the end of the session; each
#: row reads the longest run there is.
VARIANTS = [
    ("paper", 0, (), [*TABLE_I, "hp-fl-0.41", "hp-fl-0.21"], None),
    ("paper", 1, (), TABLE_I, None),
    ("paper", 2, (), TABLE_I, None),
    ("noise std 0.25 (not variance)", 0, ("pretrain.noise_scale=std", "device=cpu"), ["hp-fl"], "cuda"),
    ("global pruning", 0, ("pretrain.scope=global", "device=cpu"), PRUNED, "cuda"),
    ("HP-FL from pre-trained weights", 0, (HP_FL_PRE, "device=cpu"), ["hp-fl-pretrained"], "cuda"),
    (CPU_RUN, 0, ("device=cpu",), PRUNED, None),
    (FINISHED, 1, ("device=cpu",), PRUNED, "cuda"),
    (FINISHED, 2, ("device=cpu",), PRUNED, "cuda"),
    # Table II's levels in a further seed, and random pruning at P_R 0.41, on the CPU to 95 %
    (CPU_RUN, 1, CPU_STOP, ["hp-fl-0.41"], None),
    (CPU_RUN, 1, CPU_STOP, ["hp-fl-0.21"], None),
    (CPU_RUN, 2, CPU_STOP, ["hp-fl-0.41"], None),
    (CPU_RUN, 2, CPU_STOP, ["hp-fl-0.21"], None),
    (CPU_RUN, 0, (RANDOM41, *CPU_STOP), ["random41"], None),
    # stopped at round 740 (94.8 %), short of 95 %, when the session ended
    (CPU_RUN, 0, (RANDOM21, *CPU_STOP), ["random21"], None),
    # the initialisation ablation: original FL with nn.Linear's default initialisation, to 95 %
    *[(PYTORCH_INIT, s, ("model.init=pytorch_default", *CPU_STOP), ["original"], None) for s in (0, 1, 2)],
]


def compute(seed: int, overrides: tuple[str, ...], methods: list[str],
            continue_from: str | None = None) -> pipeline.ScenarioResult:
    """One cached scenario result of the paper (`pipeline.compute`,
    ``cached_only``): ``overrides`` after the defaults (later wins)."""
    scenario = config.load(PAPER, [f"seed={seed}", "device=cuda", TARGETS_SET, *overrides])
    scenario = config.select_methods(scenario, methods)
    return pipeline.compute(scenario, base_dir=PAPER.parent, cached_only=True, continue_from=continue_from)


def export_traces(out: Path) -> pd.DataFrame:
    """Read every run of `VARIANTS` and the traffic table's encodings from the
    cache and write them to ``out``/traces.parquet; returns the traces."""
    frames, sources = [], {}  # sources: (variant, seed) -> (overrides, continue_from)
    for variant, seed, overrides, methods, continue_from in VARIANTS:
        print(f"{variant}, seed {seed}: {', '.join(methods)}", file=sys.stderr, flush=True)
        result = compute(seed, overrides, methods, continue_from)
        ran_on = {label: r.trace.computed_on() for label, r in result.methods.items()}
        frames.append(traces.trace_frame(result.rounds, result.metrics, variant, seed, ran_on))
        sources[(variant, seed)] = (overrides, continue_from)
    found = pd.concat(frames, ignore_index=True)
    runs = traces.runs_frame(found)
    chosen = longest(runs[runs["method"].isin(TRAFFIC_METHODS)]).drop_duplicates(["seed", "method"])
    for name, encoding in ENCODINGS:
        for _, row in chosen.iterrows():
            print(f"traffic: {name}, seed {row['seed']}, {row['method']}", file=sys.stderr, flush=True)
            overrides, continue_from = sources[(row["variant"], row["seed"])]
            result = compute(int(row["seed"]), (*overrides, *encoding), [row["method"]], continue_from)
            traces.set_encoding(found, (row["variant"], int(row["seed"]), row["method"]), name,
                                result.rounds[result.rounds["method"] == row["method"]])
    traces.write_traces(found, out / "traces.parquet")
    return found


def import_report(out: Path, report_dir: Path, variant: str, seed: int) -> pd.DataFrame:
    """Add (or replace) the runs of a report directory in ``out``/traces.parquet."""
    path = out / "traces.parquet"
    new = traces.report_traces(report_dir, variant, seed)
    if path.exists():
        old = traces.read_traces(path)
        same = (old["variant"] == variant) & (old["seed"] == seed) & old["method"].isin(set(new["method"]))
        new = pd.concat([old[~same], new], ignore_index=True)
    traces.write_traces(new, path)
    return new


def missing_runs(found: pd.DataFrame) -> list[tuple[str, int, str]]:
    """The (variant, seed, method) of `VARIANTS` that ``found`` (traces) lacks."""
    present = set(found[traces.KEYS].drop_duplicates().itertuples(index=False, name=None))
    return [(variant, seed, method) for variant, seed, _, methods, _ in VARIANTS for method in methods
            if (variant, seed, method) not in present]


def write_markdown(out: Path, runs: pd.DataFrame, traffic: pd.DataFrame, paired_only: bool = False) -> None:
    """paired.md (and tables.md unless ``paired_only``) from the two frames."""
    sweep = pd.read_csv(MOBILE_SWEEP) if MOBILE_SWEEP.exists() else None
    (out / "paired.md").write_text(paired_report(runs, traffic, sweep))
    if not paired_only:
        (out / "tables.md").write_text(tables_md(runs, traffic))
    print(f"wrote {out}/{'' if paired_only else 'tables.md, '}paired.md", file=sys.stderr)
    if sweep is not None and not paired_only:
        print(f"wrote {figures.mobile_tta(sweep, MOBILE_FIGURE)}", file=sys.stderr)


def write_from_traces(out: Path, found: pd.DataFrame, figures_dir: Path | None = FIGURES,
                      partial: bool = False) -> None:
    """runs.csv, traffic.csv, tables.md, paired.md and the figures from ``found``
    (traces.parquet's frame) alone. ``partial``: traces without every run of
    `VARIANTS` are allowed; then the markdown (which needs every run) is not
    written, and the figures (accuracy_seeds.png among them) draw the runs
    there are.

    Raises:
        SystemExit: runs of `VARIANTS` missing and not ``partial``, listing them.
    """
    missing = missing_runs(found)
    if missing and partial and out.resolve() == DEFAULT_OUT.resolve():
        raise SystemExit(f"--allow-partial would overwrite the committed tables in {out}: give another --out")
    if missing and not partial:
        raise SystemExit("the traces lack run(s) of VARIANTS (variant, seed, method): "
                         + "; ".join(map(str, missing)) + " (export them from the cache, or --allow-partial "
                         "with another --out)")
    runs, traffic = traces.runs_frame(found), traces.traffic_frame(found)
    runs.to_csv(out / "runs.csv", index=False)
    traffic.to_csv(out / "traffic.csv", index=False)
    if missing:
        print(f"{len(missing)} run(s) of VARIANTS missing: no tables.md, paired.md", file=sys.stderr)
    else:
        write_markdown(out, runs, traffic)
        print(f"wrote {out}/ (tables.md, paired.md)", file=sys.stderr)
    print(f"wrote {figures.accuracy_seeds(found, out / 'accuracy_seeds.png')}", file=sys.stderr)
    if figures_dir is not None:
        for path, caption in figures.accuracy_curves(found, figures_dir):
            print(f"{path}: {caption}", file=sys.stderr)
    print(f"wrote {out}/ (runs.csv, traffic.csv)", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--figures", type=Path, default=FIGURES, help="where the accuracy_vs_* figures go")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--from-traces", action="store_true",
                      help="build everything from --out/traces.parquet alone, without the cache")
    parser.add_argument("--allow-partial", action="store_true",
                        help="with --from-traces: write the CSVs and figures of the runs there are")
    mode.add_argument("--markdown-only", action="store_true",
                      help="write tables.md and paired.md from the runs.csv and traffic.csv in --out")
    mode.add_argument("--paired-only", action="store_true",
                      help="write only paired.md, from the runs.csv and traffic.csv in --out")
    mode.add_argument("--import-report", nargs=3, metavar=("DIR", "VARIANT", "SEED"),
                      help="add the runs of a fedsim scenario report directory to --out/traces.parquet")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.paired_only or args.markdown_only:
        write_markdown(args.out, pd.read_csv(args.out / "runs.csv"), pd.read_csv(args.out / "traffic.csv"),
                       paired_only=args.paired_only)
        return
    if args.import_report:
        report_dir, variant, seed = args.import_report
        import_report(args.out, Path(report_dir), variant, int(seed))
        print(f"added {report_dir} to {args.out / 'traces.parquet'}", file=sys.stderr)
        return
    found = traces.read_traces(args.out / "traces.parquet") if args.from_traces else export_traces(args.out)
    write_from_traces(args.out, found, args.figures, partial=args.allow_partial)


if __name__ == "__main__":
    main()
