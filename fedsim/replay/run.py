"""`fedsim replay`: the cost of a run trained elsewhere, on a scenario's network.

A run file (`fedsim.replay.runfile`) gives each round's accuracy, and
optionally who took part and how big the messages were. The replay runs the
scenario's data and system stages for one method named after the run, takes
the accuracy from the file instead of training, and writes the same report
as ``fedsim scenario`` (metrics.csv, rounds.csv, timeline, summary.md,
figures, Gantt): `fedsim.pipeline.runner.join` and
`fedsim.pipeline.outputs.write_outputs`, unchanged.

The replayed method's payload and work fraction come from its mask: a label
that names one of the scenario's methods (e.g. ``hp-fl``) replays with that
method's mask (pre-training it, or reading the ticket from the cache), any
other label with the scenario's dense model (kind ``original``). Message sizes
in the file replace the payload. With neither participants nor sizes in the
file, the simulation is the pipeline's own system stage (same cache entry):
replaying a fedsim run's rounds.csv reproduces its metrics exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedsim import store
from fedsim.config import Scenario
from fedsim.data.resolve import resolve_data_files
from fedsim.errors import InputError
from fedsim.learn import methods as learn_methods
from fedsim.learn.spec import MethodConfig
from fedsim.learn.trace import CLIENT_COLUMNS, TrainingTrace
from fedsim.pipeline.data import prepare_data
from fedsim.pipeline.keys import device_type, method_error, needed_iterations
from fedsim.pipeline.runner import MethodResult, ScenarioResult, Timer, join
from fedsim.pipeline.stages import payload_and_work, pretrain_stage, system_stage
from fedsim.replay.runfile import RunFile, read_run
from fedsim.replay.simulate import RoundPayload, simulate_replay
from fedsim.system.sim import simulate

log = logging.getLogger(__name__)

__all__ = ["default_out_dir", "replay", "replay_scenario"]


def replay_scenario(scenario: Scenario, label: str, rounds: int) -> Scenario:
    """``scenario`` with one method, ``label`` (its own settings where the
    scenario has that method, else the dense ``original``), and ``rounds.max``
    = the run's rounds.

    Raises:
        InputError: ``report.gantt_rounds`` names a round beyond the run.
    """
    late = [r for r in scenario.report.gantt_rounds or () if r > rounds]
    if late:
        raise InputError(f"report.gantt_rounds: round {late[0]} is beyond the replayed run's "
                         f"{rounds} rounds")
    method = scenario.methods.get(label, MethodConfig())
    return scenario.model_copy(update={
        "methods": {label: method},
        "rounds": scenario.rounds.model_copy(update={"max": rounds}),
    })


def default_out_dir(scenario: Scenario, label: str) -> Path:
    """``reports/<scenario name>-replay-<label>/``."""
    from fedsim.config import slug

    return Path("reports") / f"{scenario.name}-replay-{slug(label)}"


def _trace(run: RunFile, participants: np.ndarray) -> TrainingTrace:
    """The run file as a training trace (no per-client rows: nothing trained here)."""
    n = run.num_rounds
    rounds = pd.DataFrame({"round_num": np.arange(1, n + 1, dtype=np.int64),
                           "accuracy": run.accuracy.astype(np.float64),
                           "loss": run.loss.astype(np.float64),
                           "participants": participants[:n].astype(np.int64)})
    clients = pd.DataFrame({c: np.zeros(0, dtype=np.int64) for c in CLIENT_COLUMNS})
    return TrainingTrace(rounds, clients, {"device_name": f"not trained here: replayed from {run.path.name}",
                                           "replayed_from": str(run.path)})


def replay(run_path: str | Path, scenario: Scenario, *, label: str | None = None,
           base_dir: Path | None = None, out_dir: Path | None = None,
           command: Sequence[str] | None = None, progress: bool = False,
           write: bool = True) -> ScenarioResult:
    """Replay the run in ``run_path`` on ``scenario``'s network and write its report.

    Args:
        run_path: the run file (docs/replay.md).
        scenario: the system (network, devices, clients, targets, report).
        label: the method's name in the report, and the rows of a file with a
            ``method`` column; default: that column's only method, else the
            file's stem.
        base_dir: the scenario file's folder (relative trace paths).
        out_dir: the report's folder (default `default_out_dir`).
        command: the command line, for provenance.json.
        progress: progress lines while writing.
        write: write the report (False: only compute the frames).

    Raises:
        InputError: a malformed run file (file, line, column named); client
            ids outside the scenario; a label that needs a pre-training the
            cache lacks and cannot run here.
    """
    run_path = Path(run_path)
    timer = Timer()
    scenario = resolve_data_files(scenario, base_dir)  # data.npz, an external partition
    with timer.stage("read"):
        run = read_run(run_path, scenario.data.partition.num_clients, method=label)
    label = label or run.method or run_path.stem
    scenario = replay_scenario(scenario, label, run.num_rounds)
    from fedsim.learn.plugins import check_methods

    check_methods(scenario, base_dir)  # a method plugin: imported from the scenario's folder, checked
    method = scenario.methods[label]
    device = torch.device(device_type(scenario))
    with timer.stage("data"):
        data = prepare_data(scenario)
    with timer.stage("pretrain"):
        ticket = pretrain_stage(scenario, data, needed_iterations(scenario, method), device)
        try:
            start = learn_methods.build(method, ticket, seed=scenario.seed)
        except ValueError as exc:
            raise method_error(scenario, method, exc) from None
    samples = data.client_samples
    with timer.stage("system"):
        if run.participants is None and run.down_bytes is None:
            system, payload, work = system_stage(scenario, start.mask, samples, base_dir, method=method)
        else:
            payload, work = payload_and_work(scenario, start.mask, method)
            if run.down_bytes is not None and run.up_bytes is not None:
                payload = RoundPayload.from_rounds(run.down_bytes, run.up_bytes, payload)
            common = {"client_samples": samples, "payload": payload, "work_fraction": work,
                      "seed": scenario.seed, "local_epochs": scenario.fl.local_epochs,
                      "base_dir": base_dir}
            if run.participants is not None:
                system = simulate_replay(scenario.system, participants=run.participants, **common)
            else:
                system = simulate(scenario.system, rounds=run.num_rounds, **common)
    trace = _trace(run, system.rounds["participants"].to_numpy())
    results = {label: MethodResult(label, method, start.mask, system, trace, payload, work)}
    with timer.stage("metrics"):
        rounds, table, timeline = join(scenario, results)
    keys = {"run_file_sha256": store.sha256_file(run_path)}
    result = ScenarioResult(scenario, rounds, table, timeline, results, timer.seconds, keys)
    if write:
        from fedsim.pipeline.outputs import write_outputs

        out_dir = Path(out_dir) if out_dir is not None else default_out_dir(scenario, label)
        write_outputs(result, out_dir, command, progress)
        result.out_dir = out_dir
    return result
