"""The per-round traces behind reports/paper/tables: one compressed Parquet
file from which runs.csv and traffic.csv are recomputed without the cache.

traces.parquet has one row per (variant, seed, method, round), in the order of
`VARIANTS` (scripts/paper_tables.py); columns `TRACE_COLUMNS`:

* variant, seed, method, round (1-based);
* accuracy (test accuracy after the round, a fraction), loss, participants,
  round_bytes (bytes through the server's link, the scenario's own payload
  encoding), round_compute_s (mean participant computation, seconds),
  round_wallclock_s (simulated seconds): `fedsim.metrics.rounds_table`'s
  inputs, from which NRA, CCA, CTA and TTA follow (`fedsim.metrics`);
* remaining_rate, params (constant per run: metrics.csv's), training_ran_on
  (which device ran which rounds, from the training trace's segments);
* one ``bytes: <encoding>`` column per mask encoding of `ENCODINGS` (bytes
  per round with that encoding; NaN for a run the traffic table does not use).

Every number of runs.csv and traffic.csv is a function of these columns alone
(`runs_frame`, `traffic_frame`); tests/test_paper_tables.py checks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim import metrics as fm
from paper.common import ENCODINGS, PAPER_VARIANTS, TARGETS, TRAFFIC_METHODS, longest_curves

KEYS = ["variant", "seed", "method"]
ROUND_COLUMNS = ["round", "accuracy", "loss", "participants", "round_bytes", "round_compute_s",
                 "round_wallclock_s"]
RUN_COLUMNS = ["remaining_rate", "params", "training_ran_on"]
#: the traffic table's per-round bytes, one column per encoding
ENCODING_COLUMNS = {name: f"bytes: {name}" for name, _ in ENCODINGS}
TRACE_COLUMNS = [*KEYS, *ROUND_COLUMNS, *RUN_COLUMNS, *ENCODING_COLUMNS.values()]
#: runs.csv's columns, in order
RUNS_COLUMNS = ["variant", "seed", *fm.METRICS_COLUMNS, "best_accuracy", "training_ran_on"]
TRAFFIC_COLUMNS = ["encoding", "seed", "method", "remaining_rate", "target_accuracy", "nra",
                   "comm_bytes_per_round", "cca_bytes"]


def trace_frame(rounds: pd.DataFrame, metrics: pd.DataFrame, variant: str, seed: int,
                ran_on: Mapping[str, str]) -> pd.DataFrame:
    """The traces of one scenario result: ``rounds`` and ``metrics`` as
    `pipeline.compute` returns them (rounds.csv and metrics.csv rows),
    ``ran_on`` method -> the training trace's `computed_on()`. The encoding
    columns start as NaN (`set_encoding` fills them)."""
    info = metrics.drop_duplicates("method").set_index("method")
    frame = rounds[["method", *ROUND_COLUMNS]].copy()
    frame.insert(0, "seed", int(seed))
    frame.insert(0, "variant", variant)
    frame["remaining_rate"] = frame["method"].map(info["remaining_rate"]).astype(float)
    frame["params"] = frame["method"].map(info["params"]).astype("int64")
    frame["training_ran_on"] = frame["method"].map(dict(ran_on))
    for column in ENCODING_COLUMNS.values():
        frame[column] = np.nan
    return frame[TRACE_COLUMNS]


def set_encoding(traces: pd.DataFrame, run: tuple[str, int, str], encoding: str,
                 rounds: pd.DataFrame) -> None:
    """Put the per-round bytes of ``rounds`` (one method's rounds.csv rows,
    computed with ``encoding``'s payload) into the trace of ``run`` (variant,
    seed, method), in place.

    Raises:
        ValueError: the rounds or their accuracies differ from the trace's (the
            encoding changed the training, which the traffic table assumes it
            does not: every client takes part in every round).
    """
    variant, seed, method = run
    at = (traces["variant"] == variant) & (traces["seed"] == seed) & (traces["method"] == method)
    mine = traces.loc[at].sort_values("round")
    rounds = rounds.sort_values("round")
    if not (np.array_equal(mine["round"].to_numpy(), rounds["round"].to_numpy())
            and np.array_equal(mine["accuracy"].to_numpy(), rounds["accuracy"].to_numpy(), equal_nan=True)):
        raise ValueError(f"{run}, encoding {encoding!r}: its rounds or accuracies differ from the run's trace")
    traces.loc[mine.index, ENCODING_COLUMNS[encoding]] = rounds["round_bytes"].to_numpy(dtype=float)


def write_traces(traces: pd.DataFrame, path: Path) -> Path:
    """Write ``traces`` (row order kept) as zstd-compressed Parquet."""
    traces[TRACE_COLUMNS].to_parquet(path, index=False, compression="zstd")
    return path


def read_traces(path: Path) -> pd.DataFrame:
    """traces.parquet, checked.

    Raises:
        ValueError: naming the file: a missing column, or a run whose rounds
            are not 1..R.
    """
    traces = pd.read_parquet(path)
    missing = [c for c in TRACE_COLUMNS if c not in traces.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    for key, run in traces.groupby(KEYS, sort=False):
        if not np.array_equal(run["round"].to_numpy(), np.arange(1, len(run) + 1)):
            raise ValueError(f"{path}: run {key}: rounds must be 1..{len(run)} in order")
    return traces


def _metrics(run: pd.DataFrame, round_bytes: str = "round_bytes") -> pd.DataFrame:
    """metrics.csv rows of one run's trace, with ``round_bytes`` as its bytes."""
    frame = run[["method", *ROUND_COLUMNS]].assign(round_bytes=run[round_bytes].to_numpy(dtype=float))
    first = run.iloc[0]
    info = {str(first["method"]): {"remaining_rate": float(first["remaining_rate"]),
                                   "params": int(first["params"])}}
    out = fm.metrics_table(frame, TARGETS, info)
    out["nra"] = pd.to_numeric(out["nra"], errors="coerce").astype(float)  # NaN: not reached
    return out


def runs_frame(traces: pd.DataFrame) -> pd.DataFrame:
    """runs.csv: one row per (variant, seed, method, target), in the traces'
    order: every metrics.csv column at `TARGETS`, best_accuracy (the highest
    accuracy of the rounds run) and training_ran_on."""
    parts = []
    for (variant, seed, _), run in traces.groupby(KEYS, sort=False):
        parts.append(_metrics(run).assign(variant=variant, seed=int(seed),
                                          best_accuracy=float(run["accuracy"].max()),
                                          training_ran_on=run["training_ran_on"].iloc[0]))
    return pd.concat(parts, ignore_index=True)[RUNS_COLUMNS]


def traffic_frame(traces: pd.DataFrame) -> pd.DataFrame:
    """traffic.csv: CCA per mask encoding, one row per (encoding, seed,
    method, target): of the runs of the paper's settings with bytes for that
    encoding, each (seed, method)'s longest; within an encoding, the dense and
    moderate runs by seed, then HP-FL by seed."""
    parts = []
    paper = traces[traces["variant"].isin(PAPER_VARIANTS)]
    for name, column in ENCODING_COLUMNS.items():
        have = paper.groupby(KEYS, sort=False)[column].transform(lambda c: c.notna().all())
        chosen = longest_curves(paper[have.astype(bool)])
        runs = list(chosen.groupby(KEYS, sort=False))
        runs.sort(key=lambda item: (item[0][2] == "hp-fl", item[0][1]))  # stable: trace order within
        for (_, seed, _), run in runs:
            parts.append(_metrics(run, column).assign(encoding=name, seed=int(seed)))
    if not parts:
        return pd.DataFrame(columns=TRAFFIC_COLUMNS)
    return pd.concat(parts, ignore_index=True)[TRAFFIC_COLUMNS]


def report_traces(report_dir: Path, variant: str, seed: int) -> pd.DataFrame:
    """The traces of a `fedsim scenario` report directory (rounds.parquet,
    metrics.csv, provenance.json, scenario.resolved.yaml): for runs whose
    cache entry is gone but whose report is kept. The encoding column of the
    report's own payload encoding is its round_bytes where that encoding is
    the paper's (values only, `mask_encoding: none`) and the method is one of
    the traffic table's (`TRAFFIC_METHODS`); the others stay NaN.

    Raises:
        ValueError: naming the file, when one is missing.
    """
    import json

    import yaml

    report_dir = Path(report_dir)
    paths = {n: report_dir / n for n in ("rounds.parquet", "metrics.csv", "provenance.json",
                                         "scenario.resolved.yaml")}
    for path in paths.values():
        if not path.exists():
            raise ValueError(f"{path}: not found (a fedsim scenario report directory is needed)")
    rounds = pd.read_parquet(paths["rounds.parquet"])
    ran_on = json.loads(paths["provenance.json"].read_text()).get("training_computed_on", {})
    frame = trace_frame(rounds, pd.read_csv(paths["metrics.csv"]), variant, seed, ran_on)
    payload = (yaml.safe_load(paths["scenario.resolved.yaml"].read_text()).get("system") or {}).get("payload") or {}
    if payload.get("mask_encoding", "none") == "none":
        mine = frame["method"].isin(TRAFFIC_METHODS)
        frame.loc[mine, ENCODING_COLUMNS[ENCODINGS[0][0]]] = frame.loc[mine, "round_bytes"]
    return frame
