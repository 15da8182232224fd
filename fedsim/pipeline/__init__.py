"""Run a scenario: the stages in order, each cached, then the report.

::

    Scenario ──> data (dataset, split, partition)                       [memo: data.DataCache]
       ├─> pre-training: Ticket (Θ0, trained encoder, masks per level)   [cache: pretrain/]
       ├─> per method: initial weights + mask (fedsim.learn.methods)
       │     ├─> system: SystemResult (SimPy)                            [cache: system/]
       │     └─> training: TrainingTrace (uses the system's participation) [cache: train/]
       ├─> metrics: rounds.csv / metrics.csv (fedsim.metrics)
       └─> report: figures, report.pdf, summary.md (fedsim.report)

The modules, one concept each:

* `keys`: what each stage depends on (its cache key) and the study planner's
  config-level groups, built from the same pieces;
* `data`: the data stage and its explicit memo (`DataCache`);
* `stages`: the pre-training and system stages (load, or compute and save);
* `training`: the training stage (resume, continue, checkpoint on interrupt);
* `policy`: `RunPolicy` (force, cached-only, continue-from, progress);
* `runner`: `compute` (every stage), `join` (the tables), `run` (and the outputs);
* `outputs`: the staged output files, provenance, the summary line.

Each stage's cache key hashes only the config it reads (``config.section_key``
leaves defaults out), so changing a bandwidth re-runs only the simulation and
the report, while changing a learning rate re-trains. Training checkpoints
every ``rounds.checkpoint_every`` rounds into its cache entry; an interrupted
run resumes from the last checkpoint and, since every random stream is keyed by
(seed, client, round), yields exactly the trace an uninterrupted run would.
File names are decided in `fedsim.store.artifacts`.
"""

# Names are imported on first use (PEP 562), so that ``from fedsim.pipeline
# import keys`` (the study planner, ``fedsim validate``) does not import torch;
# see docs/performance.md and tests/test_import_light.py. No submodule is named
# like an exported name (`runner` exports `run`): importing a submodule sets
# the package attribute of its name, which would hide the function.
from fedsim import lazy

_EXPORTS: dict[str, str] = {
    "SHARED_DATA": "data", "Data": "data", "DataCache": "data", "client_samples": "data",
    "prepare_data": "data",
    **dict.fromkeys(("SYSTEM_MODEL_VERSION", "data_key", "device_type", "everyone_every_round",
                     "method_key", "needed_iterations", "participation_key", "pretrain_key",
                     "system_group", "system_key", "trace_sha256", "train_group", "train_key"), "keys"),
    **dict.fromkeys(("OUTPUTS", "git_commit", "provenance", "remove_stale_staging", "summary_line",
                     "write_outputs"), "outputs"),
    "RunPolicy": "policy",
    **dict.fromkeys(("MethodResult", "ScenarioResult", "Timer", "compute", "join", "run", "run_work"),
                    "runner"),
    **dict.fromkeys(("compute_device", "method_counts", "payload_and_work", "pretrain_stage",
                     "read_entry", "system_stage"), "stages"),
    **dict.fromkeys(("load_checkpoint", "train_entry", "train_stage"), "training"),
    "STAGING_PREFIX": "fedsim.store.artifacts",
    # The paper's values live with the report (fedsim.report.reference).
    "PAPER_REFERENCE": "fedsim.report.reference", "reference_for": "fedsim.report.reference",
}

_lazy_getattr, __dir__ = lazy.exports(globals(), _EXPORTS)


def __getattr__(name: str) -> object:
    if name == "_load_checkpoint":  # the older private name, kept for callers that used it
        return _lazy_getattr("load_checkpoint")
    return _lazy_getattr(name)


__all__ = [
    "OUTPUTS", "SHARED_DATA", "STAGING_PREFIX", "SYSTEM_MODEL_VERSION", "Data", "DataCache",
    "MethodResult", "RunPolicy", "ScenarioResult", "Timer", "client_samples", "compute",
    "compute_device", "data_key", "device_type", "everyone_every_round", "git_commit", "join",
    "load_checkpoint", "method_counts", "method_key", "needed_iterations", "participation_key",
    "payload_and_work", "prepare_data", "pretrain_key", "pretrain_stage", "provenance", "read_entry",
    "remove_stale_staging", "run", "run_work", "summary_line", "system_group", "system_key",
    "system_stage", "trace_sha256", "train_entry", "train_group", "train_key", "train_stage",
    "write_outputs",
]
