"""The names of every file fedsim writes, in one place (as open_lth's ``paths.py``).

Cache entries live in ``<cache_dir>/<stage>/<key>/`` (`fedsim.store.CacheEntry`;
the key is `fedsim.pipeline.keys`'s), each with a `MANIFEST`:

* ``pretrain/<key>/``: `TICKET` (Θ0, the trained encoder, the masks per level);
* ``system/<key>/``: `SYSTEM_FILES` (the SimPy run: per-transfer timeline,
  per-round table, client profiles);
* ``train/<key>/``: the last checkpoint, `trace_file(r)` and `params_file(r)`
  for its round ``r`` (older checkpoints are removed once a newer one is sealed).

A scenario run writes `SCENARIO_OUTPUTS` into its output directory, then the
report adds `SUMMARY`, `REPORT_PDF` and figures under `FIGURES_DIR`; a study
writes `STUDY_OUTPUTS` and its own report. Reports are staged in a hidden
``STAGING_PREFIX<pid>-<random>`` directory and moved into place file by file.

Temporary names of atomic writes (``.<name>.<random>.tmp``, ``.<key>.<random>``)
are the store's own business (`fedsim.store.cache`).

This module imports nothing heavy: the simulator, the pipeline, the study and
the report all import their names from here.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- cache entries

#: The checksums of a cache entry's files, written last (`CacheEntry.seal`).
MANIFEST = "manifest.json"

#: The pre-training stage's one file (`fedsim.learn.pretrain.Ticket`).
TICKET = "ticket.npz"

#: The system stage's files, by the frame each holds (`fedsim.system.sim.save_result`).
SYSTEM_FILES = {
    "timeline": "timeline.parquet",
    "rounds": "rounds.parquet",
    "profiles": "profiles.parquet",
}

#: The system stage of an asynchronous method (`fedsim.pipeline.asynchronous`):
#: the FedBuff schedule's updates and steps, and the client profiles.
ASYNC_SYSTEM_FILES = {
    "updates": "updates.parquet",
    "steps": "steps.parquet",
    "profiles": "profiles.parquet",
}

#: Name prefixes of a training checkpoint's two files (`trace_file`, `params_file`).
TRACE_PREFIX = "trace"
PARAMS_PREFIX = "params"


def trace_file(round_num: int) -> str:
    """The training trace checkpointed after round ``round_num``: ``trace.r000042.npz``."""
    return f"{TRACE_PREFIX}.r{round_num:06d}.npz"


def params_file(round_num: int) -> str:
    """The global model's parameters after round ``round_num``: ``params.r000042.npz``."""
    return f"{PARAMS_PREFIX}.r{round_num:06d}.npz"


def checkpoint_files(round_num: int) -> list[str]:
    """The two files of the checkpoint after round ``round_num``: [trace, params]."""
    return [trace_file(round_num), params_file(round_num)]


def find_checkpoint(files: list[str] | dict[str, str]) -> tuple[str, str]:
    """(trace, params) file names among a sealed training entry's ``files``.

    Raises:
        StopIteration: one of the two is missing (the caller treats the entry
            as undecodable).
    """
    names = sorted(files)
    return (next(f for f in names if f.startswith(TRACE_PREFIX)),
            next(f for f in names if f.startswith(PARAMS_PREFIX)))


# --------------------------------------------------------------------------- a scenario's outputs

#: Output files of a scenario run, relative to its output directory.
SCENARIO_OUTPUTS = {
    "metrics": "metrics.csv",
    "metrics_parquet": "metrics.parquet",
    "rounds": "rounds.csv",
    "rounds_parquet": "rounds.parquet",
    "timeline": "timeline.parquet",
    "resolved": "scenario.resolved.yaml",
    "provenance": "provenance.json",
}

#: The report's files (scenario and study reports alike), relative to the output directory.
SUMMARY = "summary.md"
REPORT_PDF = "report.pdf"
FIGURES_DIR = "figures"

#: Name prefix of a report's staging directory in the output directory:
#: ``.partial-<pid>-<random>``.
STAGING_PREFIX = ".partial-"

# --------------------------------------------------------------------------- a study's outputs

#: Output files of a study, relative to its output directory.
STUDY_OUTPUTS = {
    "sweep": "sweep.csv",
    "sweep_parquet": "sweep.parquet",
    "failures": "failures.csv",
    "resolved": "study.resolved.yaml",
}
