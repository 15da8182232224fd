"""Parameter studies: a base scenario, axes of values and replicate seeds.

``fedsim sweep STUDY.yaml`` runs every cell (one scenario per combination of
axis values and seed) and writes one table and report over all of them::

    from fedsim import study
    spec = study.load("scenarios/studies/link_vs_pruning.yaml")
    print(study.plan(spec).describe())
    result = study.run(spec, workers=2)

The package, in the order the data flows:

* `fedsim.study.ranges`: an axis' values (lists, geometric/linear ranges with
  units), labels, and the quantity an axis sets;
* `fedsim.study.spec`: the study file schema, `Axis`, `Cell`, `Study`, `load`;
* `fedsim.study.planner`: `plan`: the tasks (one per cell and method), the
  stages they share (grouped by `fedsim.pipeline.keys`), what the cache holds,
  the estimate;
* `fedsim.study.schedule`: which task runs next (no stage computed twice at
  once) and with how many torch threads;
* `fedsim.study.executors`: in-process, a local process pool, or Ray;
* `fedsim.study.runner`: `run` (plan, execute, write);
* `fedsim.study.outputs`: sweep.csv/.parquet, failures.csv, study.resolved.yaml
  and the sweep report.

See docs/studies.md for the study file and its outputs.
"""

# Names are imported on first use (PEP 562), so that ``fedsim validate
# STUDY.yaml`` (`load`, in `spec`) imports neither torch nor simpy; see
# tests/test_import_light.py. No submodule is named like an exported name
# (`planner` exports `plan`, `runner` exports `run`): importing a submodule sets
# the package attribute of its name, which would hide the function.
from fedsim import lazy
from fedsim.cost import COST_MODEL  # both light: plain dicts
from fedsim.store.artifacts import STUDY_OUTPUTS

#: The study's output file names (kept under its old name for callers).
OUTPUTS = STUDY_OUTPUTS

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("RAY_MISSING", "Task", "TaskOutcome", "run_task"), "executors"),
    **dict.fromkeys(("resolved_study", "sweep_frame", "write_outputs"), "outputs"),
    **dict.fromkeys(("StudyPlan", "TaskPlan", "plan"), "planner"),
    **dict.fromkeys(("AxisRange", "RangeParams", "expand_range"), "ranges"),
    **dict.fromkeys(("StudyResult", "run", "sweep_progress"), "runner"),
    **dict.fromkeys(("Scheduler", "default_workers"), "schedule"),
    **dict.fromkeys(("MAX_CELLS", "Axis", "Cell", "Study", "StudySpec", "load"), "spec"),
}

__getattr__, __dir__ = lazy.exports(globals(), _EXPORTS)


__all__ = [
    "COST_MODEL",
    "MAX_CELLS",
    "OUTPUTS",
    "RAY_MISSING",
    "Axis",
    "AxisRange",
    "Cell",
    "RangeParams",
    "Scheduler",
    "Study",
    "StudyPlan",
    "StudyResult",
    "StudySpec",
    "Task",
    "TaskOutcome",
    "TaskPlan",
    "default_workers",
    "expand_range",
    "load",
    "plan",
    "resolved_study",
    "run",
    "run_task",
    "sweep_frame",
    "sweep_progress",
    "write_outputs",
]
