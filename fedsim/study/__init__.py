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
* `fedsim.study.plan`: the tasks (one per cell and method), the stages they
  share (grouped by `fedsim.pipeline.keys`), what the cache holds, the estimate;
* `fedsim.study.schedule`: which task runs next (no stage computed twice at
  once) and with how many torch threads;
* `fedsim.study.executors`: in-process, a local process pool, or Ray;
* `fedsim.study.run`: `run` (plan, execute, write);
* `fedsim.study.outputs`: sweep.csv/.parquet, failures.csv, study.resolved.yaml
  and the sweep report.

See docs/studies.md for the study file and its outputs.
"""

from fedsim.cost import COST_MODEL
from fedsim.store.artifacts import STUDY_OUTPUTS
from fedsim.study.executors import RAY_MISSING, Task, TaskOutcome, run_task
from fedsim.study.outputs import resolved_study, sweep_frame, write_outputs
from fedsim.study.plan import StudyPlan, TaskPlan, plan
from fedsim.study.ranges import AxisRange, RangeParams, expand_range
from fedsim.study.run import StudyResult, run, sweep_progress
from fedsim.study.schedule import Scheduler, default_workers
from fedsim.study.spec import MAX_CELLS, Axis, Cell, Study, StudySpec, load

#: The study's output file names (kept under its old name for callers).
OUTPUTS = STUDY_OUTPUTS

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
