"""The Python API: run a scenario or a study, load a report, register models,
datasets and methods, and get pandas frames back (docs/python-api.md).

The command line is a thin shell over the same functions: a scenario given to
`run` is validated as ``fedsim scenario`` validates it (`fedsim.config.load`
and `fedsim.config.from_dict`, then every input file before any stage runs),
and runs through `fedsim.pipeline.runner` (with a report) or
`fedsim.pipeline.compute` (frames only); `study` is `fedsim.study.runner`;
`replay` is `fedsim.replay.run.replay`. Bad input raises
`fedsim.errors.InputError` (the CLI's exit status 2) with the message the CLI
prints.

Registries:

* `register_model` / `register_dataset` give a model factory or an ``.npz``
  dataset a name that a scenario *passed to this module* can use in
  ``model.arch`` / ``data.dataset``. A name is an alias: it is replaced by
  ``model.factory: "module:function"`` or ``data.npz: PATH`` before
  validation, so the scenario's cache keys, resolved YAML and report are those
  of the scenario written out in full (the same cache entries). The command
  line does not know these names: there, write the factory or the file (or
  register a model under the entry-point group ``fedsim.models``).
* `register_method` is `fedsim.learn.methods.register`, which the scenario
  schema consults; it holds for this process (a study's worker processes
  import their methods anew: register them in an imported module).

Importing this module imports neither torch nor simpy; `run`, `study` and
`replay` do.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedsim import config
from fedsim.errors import InputError
from fedsim.store.artifacts import SCENARIO_OUTPUTS, STUDY_OUTPUTS

__all__ = ["Result", "load_report", "load_scenario", "register_dataset", "register_method",
           "register_model", "registered_datasets", "registered_models", "replay", "run", "study"]

#: ``register_model`` names -> ``"module:function"``.
_MODELS: dict[str, str] = {}
#: ``register_dataset`` names -> absolute ``.npz`` path.
_DATASETS: dict[str, str] = {}


@dataclass(frozen=True)
class Result:
    """A scenario's frames, as `run` returns them and `load_report` reads them.

    Attributes:
        rounds: one row per (method, round), the frame of ``rounds.csv``:
            `fedsim.metrics.ROUNDS_COLUMNS`, then
            `fedsim.metrics.ENERGY_ROUNDS_COLUMNS` (`fedsim.metrics.rounds_table`).
        metrics: one row per (method, target), the frame of ``metrics.csv``:
            `fedsim.metrics.METRICS_COLUMNS`, then
            `fedsim.metrics.ENERGY_METRICS_COLUMNS`.
        timeline: one row per (method, round, client), the frame of
            ``timeline.parquet``: ``method``, `fedsim.system.frames.TIMELINE_COLUMNS`,
            `fedsim.system.energy.CLIENT_ENERGY_COLUMNS`; None for a report
            directory without one.
        scenario: the resolved scenario, every setting with its default, as
            plain data (what ``scenario.resolved.yaml`` holds).
        out_dir: the report's directory; None when `run` wrote no report.
        provenance: ``provenance.json`` (versions, device, command, stage
            seconds, cache keys); None when no report was written.
    """

    rounds: pd.DataFrame
    metrics: pd.DataFrame
    timeline: pd.DataFrame | None
    scenario: dict[str, Any]
    out_dir: Path | None = None
    provenance: dict[str, Any] | None = None


# ----------------------------------------------------------------------------- registries


def register_model(name: str, factory: Callable[..., Any] | str) -> None:
    """Let scenarios given to this module say ``model: {arch: NAME, kwargs: ...}``.

    Args:
        name: the alias; not a built-in architecture nor a ``fedsim.models``
            entry point.
        factory: ``"package.module:function"``, or a function defined at the
            top level of an importable module (also ``__main__``), called with
            ``model.kwargs`` and returning a ``torch.nn.Module``
            (`fedsim.learn.zoo.resolve` imports and checks it when a run starts).

    Raises:
        ValueError: the name is taken, or the factory cannot be named by
            ``module:function`` (a lambda, a nested function: define it at
            module level).
    """
    from fedsim.learn.counts import BUILTIN_ARCHS
    from fedsim.learn.spec import FACTORY_SYNTAX, entry_point_names

    if name in BUILTIN_ARCHS or name in entry_point_names():
        raise ValueError(f"model {name!r} is a built-in or an entry point; choose another name")
    target = factory if isinstance(factory, str) else _import_path(factory)
    if not FACTORY_SYNTAX.fullmatch(target):
        raise ValueError(f"model {name!r}: {target!r} is not \"package.module:function\"")
    if _MODELS.get(name, target) != target:
        raise ValueError(f"model {name!r} is already registered as {_MODELS[name]!r}")
    _MODELS[name] = target


def _import_path(factory: Callable[..., Any]) -> str:
    """``module:qualname`` of ``factory``, checked to name that very object."""
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    target = f"{module}:{qualname}"
    obj: Any = importlib.import_module(module) if module else None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is not factory:
        raise ValueError(f"factory {target!r} cannot be imported by that name (a lambda or a nested "
                         "function?); define it at the top level of a module, or pass "
                         "\"package.module:function\"")
    return target


def register_dataset(name: str, npz: str | Path) -> None:
    """Let scenarios given to this module say ``data: {dataset: NAME, ...}`` for
    the user dataset in ``npz`` (the format of `fedsim.data.user`; write one
    from arrays or torchvision datasets with
    `fedsim.data.torchvision_adapter.save_npz`).

    Raises:
        ValueError: ``name`` is a built-in dataset or registered to another file.
        InputError: the file fails the checks of `fedsim.data.user.load_npz`
            (missing, not an npz, bad arrays), naming the file and the array.
    """
    from fedsim.data.registry import DATASET_NAMES
    from fedsim.data.user import load_npz

    if name in DATASET_NAMES:
        raise ValueError(f"dataset {name!r} is built in; choose another name")
    path = str(Path(npz).resolve())
    if _DATASETS.get(name, path) != path:
        raise ValueError(f"dataset {name!r} is already registered as {_DATASETS[name]!r}")
    load_npz(path)  # checked now, not when the run starts
    _DATASETS[name] = path


def register_method(name: str, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Register an FL method: `fedsim.learn.methods.register` (its ``options``,
    e.g. ``pruned=True``); the scenario's ``methods.<label>.kind`` then
    accepts ``name``. With ``fn`` it registers ``fn`` and returns it; without,
    it is a decorator.

    Raises:
        ValueError: ``name`` is taken (from `fedsim.learn.methods.register`).
    """
    from fedsim.learn import methods

    decorate = methods.register(name, **options)
    return decorate if fn is None else decorate(fn)


def registered_models() -> dict[str, str]:
    """`register_model`'s names and their ``module:function``."""
    return dict(_MODELS)


def registered_datasets() -> dict[str, str]:
    """`register_dataset`'s names and their ``.npz`` paths."""
    return dict(_DATASETS)


def _expand_aliases(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with registered model and dataset names written out (a copy)."""
    model, data = raw.get("model"), raw.get("data")
    out = dict(raw)
    if isinstance(model, Mapping) and model.get("arch") in _MODELS and "factory" not in model:
        out["model"] = {**{k: v for k, v in model.items() if k != "arch"},
                        "factory": _MODELS[model["arch"]]}
    if isinstance(data, Mapping) and data.get("dataset") in _DATASETS and "npz" not in data:
        out["data"] = {**{k: v for k, v in data.items() if k != "dataset"},
                       "npz": _DATASETS[data["dataset"]]}
    return out


# ----------------------------------------------------------------------------- scenarios


def load_scenario(scenario: str | Path | Mapping[str, Any], *, overrides: Sequence[str] = (),
                  methods: Sequence[str] | None = None, rounds: int | None = None,
                  device: str | None = None) -> config.Scenario:
    """A validated `fedsim.config.Scenario`, as ``fedsim scenario`` builds it.

    Args:
        scenario: a YAML file (its ``name`` defaults to the file's stem), or
            the same keys as a plain dict (``name`` required).
        overrides: ``"key.path=value"`` strings, as ``--set``.
        methods: a subset of the scenario's method labels (``--methods``).
        rounds: ``rounds.max`` (``--rounds``).
        device: ``auto``, ``cpu`` or ``cuda`` (``--device``).

    Raises:
        InputError: an unreadable file, invalid YAML, a study file, a bad
            override or a schema error, naming the file (``<dict>`` for a
            dict), the key path and the value.
    """
    overrides = list(overrides)
    if rounds is not None:
        overrides.append(f"rounds.max={rounds}")
    if device is not None:
        overrides.append(f"device={device}")
    if isinstance(scenario, Mapping):
        raw, source = dict(scenario), "<dict>"
    else:
        path = Path(scenario)
        raw, source = config.read_yaml(path), str(path)
        if not isinstance(raw, dict) or "study" in raw:
            return config.load(path, overrides)  # raises its error for these
        raw.setdefault("name", path.stem)
    raw = _expand_aliases(config.apply_overrides(raw, overrides))
    loaded = config.from_dict(raw, source=source)
    return loaded if methods is None else config.select_methods(loaded, list(methods))


def _base_dir(scenario: str | Path | Mapping[str, Any], base_dir: str | Path | None) -> Path:
    """Where the scenario's relative file names are resolved: ``base_dir``,
    the scenario file's folder, or (a dict) the working directory."""
    if base_dir is not None:
        return Path(base_dir).resolve()
    return Path.cwd() if isinstance(scenario, Mapping) else Path(scenario).resolve().parent


def run(scenario: str | Path | Mapping[str, Any], *, overrides: Sequence[str] = (),
        methods: Sequence[str] | None = None, rounds: int | None = None,
        out: str | Path | None = None, device: str | None = None, progress: bool = False,
        base_dir: str | Path | None = None, force: bool = False,
        cached_only: bool = False) -> Result:
    """Run a scenario (every stage cached, as ``fedsim scenario``) and return its frames.

    Args:
        scenario, overrides, methods, rounds, device: see `load_scenario`.
        out: write the full report there (tables, figures, ``report.pdf``,
            ``provenance.json``), as ``--out``. None: write nothing, only
            compute the frames (`fedsim.pipeline.compute`); the stages are
            cached all the same.
        progress: the progress line on stderr.
        base_dir: where relative files (``data.npz``, traces) are found;
            default the scenario file's folder, or the working directory for
            a dict.
        force, cached_only: as ``--force`` and ``--cached-only``.

    Returns:
        A `Result`; ``out_dir`` and ``provenance`` are None without ``out``.

    Raises:
        InputError: bad input (see `load_scenario`), an ``out`` that cannot be
            written, bad data or trace files, a model factory that does not
            import or fit the data; all before any stage runs.
    """
    from fedsim import pipeline

    loaded = load_scenario(scenario, overrides=overrides, methods=methods, rounds=rounds,
                           device=device)
    where = _base_dir(scenario, base_dir)
    if out is None:
        result = pipeline.compute(loaded, base_dir=where, force=force, progress=progress,
                                  cached_only=cached_only)
        return Result(result.rounds, result.metrics, result.timeline, config.to_plain(loaded))
    config.check_output_dir(out)
    source = "<dict>" if isinstance(scenario, Mapping) else str(scenario)
    pipeline.run(loaded, out_dir=Path(out), base_dir=where, force=force, progress=progress,
                 cached_only=cached_only, command=["fedsim.api.run", source, *overrides])
    return load_report(out)


def replay(run_csv: str | Path, system: str | Path | Mapping[str, Any], *,
           overrides: Sequence[str] = (), method: str | None = None,
           out: str | Path | None = None, progress: bool = False,
           base_dir: str | Path | None = None) -> Result:
    """The cost of a run trained elsewhere on ``system``'s network, as
    ``fedsim replay RUN.csv --system SCENARIO`` (docs/replay.md).

    Args:
        run_csv: the run file (round, accuracy[, participants, down_bytes, up_bytes]).
        system: the scenario whose network, devices, clients and targets are used.
        method: the run's label (``--method``).
        out: write the report there; None: frames only.

    Raises:
        InputError: a malformed run file (naming the row and column), or bad input
            as in `run`.
    """
    from fedsim.pipeline.outputs import write_outputs
    from fedsim.replay.run import replay as replay_run

    loaded = load_scenario(system, overrides=overrides)
    if out is not None:
        config.check_output_dir(out)
    result = replay_run(run_csv, loaded, label=method, base_dir=_base_dir(system, base_dir),
                        progress=progress, write=False)
    if out is None:
        return Result(result.rounds, result.metrics, result.timeline, config.to_plain(result.scenario))
    write_outputs(result, Path(out), ["fedsim.api.replay", str(run_csv)], progress)
    return load_report(out)


def study(path: str | Path, *, overrides: Sequence[str] = (), out: str | Path | None = None,
          executor: str = "local", workers: int | None = None, progress: bool = False,
          cached_only: bool = False) -> pd.DataFrame:
    """Run a study (as ``fedsim sweep``, docs/studies.md) and return its sweep
    frame, the table of ``sweep.csv`` (columns: `fedsim.study.outputs.sweep_frame`).

    Args:
        overrides: ``key=value`` as ``fedsim validate STUDY --set`` takes them
            (``study.`` keys set the study, others every cell).
        out: the study's outputs (default ``reports/<study name>/``); a study
            always writes them.
        executor, workers: ``local`` (``workers=1``: in this process) or ``ray``.
        cached_only: train nothing (see `fedsim.study.runner.run`).

    Raises:
        InputError: an invalid study file, executor or output directory.
    """
    from fedsim import study as study_pkg

    spec = study_pkg.load(path, overrides=overrides)
    if out is not None:
        config.check_output_dir(out)
    result = study_pkg.run(spec, out_dir=out, executor=executor, workers=workers,
                           progress=progress, command=["fedsim.api.study", str(path)],
                           cached_only=cached_only)
    return result.sweep


# ----------------------------------------------------------------------------- reports


def load_report(path: str | Path) -> Result:
    """A finished scenario report directory (``fedsim scenario --out DIR``,
    `run` with ``out``, ``fedsim replay``) as a `Result`. Frames come from the
    Parquet files where present (exact dtypes), else from the CSV files;
    file names are `fedsim.store.artifacts.SCENARIO_OUTPUTS`.

    Raises:
        InputError: ``path`` is not a directory, is a study's output (read its
            ``sweep.parquet``), or lacks the rounds or metrics table.
    """
    import yaml

    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory; expected a fedsim report directory")
    if (folder / STUDY_OUTPUTS["sweep"]).exists():
        raise InputError(f"{folder}: is a study's output, not a scenario report; read "
                         f"{folder / STUDY_OUTPUTS['sweep_parquet']} with pandas.read_parquet")

    def table(parquet: str, csv: str) -> pd.DataFrame:
        if (folder / SCENARIO_OUTPUTS[parquet]).is_file():
            return pd.read_parquet(folder / SCENARIO_OUTPUTS[parquet])
        if (folder / SCENARIO_OUTPUTS[csv]).is_file():
            return pd.read_csv(folder / SCENARIO_OUTPUTS[csv])
        raise InputError(f"{folder}: not a fedsim report (no {SCENARIO_OUTPUTS[parquet]} or "
                         f"{SCENARIO_OUTPUTS[csv]}); `fedsim scenario PATH --out DIR` writes one")

    rounds, metrics = table("rounds_parquet", "rounds"), table("metrics_parquet", "metrics")
    timeline_path = folder / SCENARIO_OUTPUTS["timeline"]
    timeline = pd.read_parquet(timeline_path) if timeline_path.is_file() else None
    resolved = folder / SCENARIO_OUTPUTS["resolved"]
    scenario = yaml.safe_load(resolved.read_text(encoding="utf-8")) if resolved.is_file() else {}
    prov_path = folder / SCENARIO_OUTPUTS["provenance"]
    provenance = json.loads(prov_path.read_text(encoding="utf-8")) if prov_path.is_file() else None
    return Result(rounds, metrics, timeline, scenario or {}, folder, provenance)
