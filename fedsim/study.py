"""Parameter studies: a base scenario, axes of values and replicate seeds.

A study file names a base scenario and the keys to vary (``fedsim sweep
STUDY.yaml``)::

    study:
      name: link_vs_pruning
      description: ...
      base: ../quickstart.yaml        # relative to the study file
      set: {rounds.max: 40}           # fixed overrides of every cell
      axes:
        system.clients.uplink: {geometric: {start: "0.5 Mbps", stop: "50 Mbps", num: 7}}
        methods.hp-fl.remaining_rate: [0.8, 0.64, 0.41, 0.21]
      mode: grid                      # grid (every combination) | zip (i-th with i-th)
      seeds: [0]                      # replicate seeds (each cell once per seed)
      axis_titles: {system.clients.uplink: client uplink}   # optional, for the figures

An axis is any dotted key path of the scenario schema with a list of values, a
``geometric`` or a ``linear`` range (``start``, ``stop``, ``num``; endpoints may
carry a unit, and the values then go to the scenario in SI units: bit/s, s,
bytes). ``methods.<label>`` keys are the base scenario's method labels; an axis
may also set a whole method mapping (``methods.hp-fl: [{remaining_rate: 0.8},
{level: 3}]``). Every cell is validated by the scenario schema.

Planning (``plan``): each cell is a scenario; each of its stages has a cache
key (``fedsim.pipeline``): the pre-training ticket, a training trace per method
and a system simulation per method. Cells that differ only in system settings
share their traces whenever participation does not depend on the system
(``SystemConfig.timing_decides_participation()`` false, every client in every
round), so a link-speed x pruning-rate grid needs one pre-training, one
training per method and rate, and one simulation per cell and method. The
plan counts them, checks the cache (``store.CacheEntry.valid()``) and
estimates the time with a cost model (`fedsim.cost.COST_MODEL`).

Execution: a cell runs as one task per method (``c003/hp-fl``:
``pipeline.compute`` of the cell restricted to that method), so the trainings
of one cell can run in parallel. A scheduler hands out tasks so that no two
workers ever compute the same stage at once: a task starts only when none of
the stages it would compute is being computed by a running task. In effect:
one task per pre-training first, then one task per training, then every other
task, whose traces come from the cache and which only simulate. A task
returns its metrics frame (small; timelines stay in the cache). Executors:
in-process (``workers=1``), a pool of spawned processes (``executor="local"``)
or Ray tasks (``executor="ray"``, optional extra). A failed task (an
exception, a killed worker) is reported and does not stop the others; running
the study again computes only what is missing, since every finished stage is
in the cache.

Outputs (``out_dir``, default ``reports/<study name>/``): ``sweep.csv`` and
``sweep.parquet`` (one row per cell x method x target: ``cell``, ``seed``, each
axis as a number in SI units and as ``<axis>_label`` text, then the columns of
metrics.csv), the figures, ``report.pdf`` and ``summary.md`` of
``fedsim.report.sweep.write_sweep_report``, ``study.resolved.yaml`` and, when
tasks failed, ``failures.csv``. Every file is written atomically.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import itertools
import logging
import math
import multiprocessing
import os
import platform
import re
import socket
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from fedsim import __version__, config, cost, pipeline, store, units
from fedsim.config import Scenario
from fedsim.cost import COST_MODEL
from fedsim.errors import InputError, quote
from fedsim.progress import Progress
from fedsim.schema import Section

log = logging.getLogger(__name__)

#: Output files of a study, relative to its output directory.
OUTPUTS = {
    "sweep": "sweep.csv",
    "sweep_parquet": "sweep.parquet",
    "failures": "failures.csv",
    "resolved": "study.resolved.yaml",
}

BeforeTask = Callable[[str], None]

# --------------------------------------------------------------------------- schema


class RangeParams(Section):
    """``start`` and ``stop`` (numbers, or quantities with a unit such as
    "0.5 Mbps", "50 ms", "1 MB"; both of one kind) and ``num`` >= 2 values,
    endpoints included."""

    start: float | str
    stop: float | str
    num: int = Field(strict=True, ge=2, le=1000)


class AxisRange(Section):
    """A range axis: ``geometric`` (equal ratios) or ``linear`` (equal steps)."""

    geometric: RangeParams | None = None
    linear: RangeParams | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.geometric is None) == (self.linear is None):
            raise ValueError("a range axis needs exactly one of 'geometric', 'linear'")
        return self


AxisValues = Annotated[list[Any], Field(min_length=1)]


class StudySpec(Section):
    """The ``study:`` mapping of a study file (see the module docstring)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      max_length=config.MAX_NAME_CHARS - len(".c00000"),
                      description="used as the default output directory reports/<name>/")
    description: str = ""
    base: str = Field(description="the base scenario, relative to the study file")
    set: dict[str, Any] = Field(default_factory=dict,
                                description="dotted key -> value applied to every cell")
    axes: dict[str, AxisValues | AxisRange] = Field(min_length=1)
    mode: Literal["grid", "zip"] = "grid"
    seeds: Annotated[list[Annotated[int, Field(strict=True, ge=0)]], Field(min_length=1)] | None = None
    axis_titles: dict[str, str] = Field(default_factory=dict,
                                        description="axis -> title in the figures")

    @field_validator("axes", mode="before")
    @classmethod
    def _axis_kinds(cls, raw: Any) -> Any:
        """A list or a range mapping; checked here so that the error names the axis
        instead of listing both union branches."""
        if isinstance(raw, Mapping):
            for axis, values in raw.items():
                if isinstance(values, Mapping):
                    unknown = set(values) - {"geometric", "linear"}
                    if unknown:
                        raise ValueError(f"axis {axis!r}: unknown range kind "
                                         f"{', '.join(map(repr, sorted(unknown)))}; "
                                         "valid: geometric, linear (or a list of values)")
                elif not isinstance(values, list):
                    raise ValueError(f"axis {axis!r}: expected a list of values or a range "
                                     f"mapping (geometric/linear), got {values!r}")
        return raw


class StudyFile(Section):
    """A study file: a single top-level ``study`` mapping."""

    study: StudySpec


def _format_errors(exc: ValidationError, raw: Any, source: str) -> str:
    """One line per problem: ``source: key.path: message``; unknown keys list the
    valid keys of their level."""
    models: dict[str, type[BaseModel]] = {"": StudyFile, "study": StudySpec}
    lines = []
    for error in exc.errors():
        keys: list[str] = []
        node = raw
        for part in error["loc"]:
            if isinstance(node, Mapping) and part in node:
                keys.append(str(part))
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                keys.append(f"[{part}]")
                node = node[part]
        dotted = ".".join(keys).replace(".[", "[") or "(top level)"
        if error["type"] == "extra_forbidden":
            parent = ".".join(keys[:-1])
            model = models.get(parent)
            if model is None and len(keys) >= 4 and keys[1] == "axes":
                model = AxisRange if len(keys) == 4 else RangeParams
            hint = f"; valid keys here: {', '.join(model.model_fields)}" if model else ""
            lines.append(f"{source}: {dotted}: unknown key '{keys[-1] if keys else ''}'{hint}")
        elif error["type"] == "missing":
            lines.append(f"{source}: {'.'.join([*keys, str(error['loc'][-1])])}: required key "
                         f"'{error['loc'][-1]}' is missing")
        else:
            message = error["msg"].removeprefix("Value error, ")
            if not isinstance(node, (Mapping, list)) and repr(node) not in message:
                message += f" (got {quote(node)})"
            lines.append(f"{source}: {dotted}: {message}")
    return "\n".join(dict.fromkeys(lines))


# --------------------------------------------------------------------------- values


_QUANTITY = re.compile(r"^\s*[+-]?(?:\d+(?:_\d+)*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*(?P<unit>\S.*?)?\s*$")


@dataclass(frozen=True)
class _Endpoint:
    """A range endpoint in SI units, with the unit it was written in."""

    si: float
    unit: str | None
    unit_si: float  # SI value of 1 unit
    kind: str | None


def _endpoint(raw: float | str, where: str) -> _Endpoint:
    """Parse a range endpoint: a number, or a number with a bandwidth, duration
    or size unit (``fedsim.units``)."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return _finite(_Endpoint(float(raw), None, 1.0, None), raw, where)
    match = _QUANTITY.match(str(raw))
    if match is None:
        raise InputError(f"{where}: {quote(raw)} is not a number or a quantity like '0.5 Mbps'")
    unit = match.group("unit")
    if unit is None:
        return _finite(_Endpoint(float(str(raw).replace("_", "")), None, 1.0, None), raw, where)
    for kind in ("bandwidth", "duration", "size"):
        try:
            value = units.parse_quantity(str(raw), kind)
            unit_si = units.parse_quantity(f"1 {unit}", kind)
        except ValueError:
            continue
        return _finite(_Endpoint(value, unit, unit_si, kind), raw, where)
    raise InputError(f"{where}: {quote(raw)} has an unknown unit {unit!r}; units: bandwidth "
                     "(bps, kbps, Mbps, Gbps), duration (us, ms, s, min, h), size (B, kB, MB, GB)")


def _finite(endpoint: _Endpoint, raw: float | str, where: str) -> _Endpoint:
    """``endpoint``, if finite: a range through infinity has no values."""
    if not math.isfinite(endpoint.si):
        raise InputError(f"{where}: {quote(raw)} is not a finite number")
    return endpoint


def _round_sig(value: float, digits: int = 12) -> float:
    """``value`` to ``digits`` significant digits (hides float noise such as
    9.999999999e6 for 1e7 in the numbers of a range)."""
    return float(f"{value:.{digits}g}")


def expand_range(spec: AxisRange, where: str = "range") -> tuple[list[float], list[str]]:
    """The values (SI units) and labels (in the start's unit) of a range axis.

    ``geometric``: start * (stop / start) ** (i / (num - 1)); ``linear``:
    start + (stop - start) * i / (num - 1); i = 0..num-1, endpoints exact.
    E.g. geometric 1 Mbps..100 Mbps, num 3 -> [1e6, 1e7, 1e8] bit/s labelled
    "1 Mbps", "10 Mbps", "100 Mbps".

    Raises:
        InputError: endpoints of different kinds of quantity, or a geometric
            range through zero or negative values.
    """
    kind = "geometric" if spec.geometric is not None else "linear"
    params = spec.geometric if spec.geometric is not None else spec.linear
    assert params is not None
    start = _endpoint(params.start, f"{where}.{kind}.start")
    stop = _endpoint(params.stop, f"{where}.{kind}.stop")
    if start.kind != stop.kind:
        raise InputError(f"{where}.{kind}: start {params.start!r} and stop {params.stop!r} "
                         "are not quantities of the same kind")
    n = params.num
    if kind == "geometric":
        if not (start.si > 0 and stop.si > 0):
            raise InputError(f"{where}.geometric: start and stop must be > 0 "
                             f"(got {params.start!r}, {params.stop!r})")
        values = [start.si * (stop.si / start.si) ** (i / (n - 1)) for i in range(n)]
    else:
        values = [start.si + (stop.si - start.si) * i / (n - 1) for i in range(n)]
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{where}.{kind}: the values from {quote(params.start)} to "
                         f"{quote(params.stop)} overflow a float")
    values = [start.si, *(_round_sig(v) for v in values[1:-1]), stop.si]
    if start.unit is None:
        labels = [f"{v:.3g}" for v in values]
    else:
        labels = [f"{v / start.unit_si:.3g} {start.unit}" for v in values]
    return values, labels


def _label(value: Any) -> str:
    """An axis value as text, as the user wrote it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return yaml.safe_dump(value).strip().removesuffix("...").strip()
    if isinstance(value, (int, float)):
        return f"{value:g}"
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()


def _numeric(value: Any) -> float | None:
    """A validated scenario value as a number (SI units), or None."""
    from fedsim.system.spec import Constant

    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Constant):
        return float(value.value)
    return None


# --------------------------------------------------------------------------- key paths


def _is_mapping_of_labels(annotation: Any) -> bool:
    import typing

    if typing.get_origin(annotation) is typing.Annotated:
        return _is_mapping_of_labels(typing.get_args(annotation)[0])
    return typing.get_origin(annotation) is dict


def check_key_path(path: str, base: Mapping[str, Any], where: str) -> list[str]:
    """Check that ``path`` (``system.clients.uplink``) names a key of the
    scenario schema and return its parts. Under ``methods`` the next part is a
    method label: a deeper key (``methods.hp-fl.remaining_rate``) needs the base
    scenario to have that label; a whole ``methods.<label>`` may be new.

    Raises:
        InputError: an unknown key (the message lists the valid keys at that
            level), a missing method label, or a key under a plain value.
    """
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise InputError(f"{where}: {path!r} is not a dotted key path such as system.clients.uplink")
    annotation: Any = Scenario
    node: Any = base
    for i, part in enumerate(parts):
        prefix = ".".join(parts[:i])
        fields = config.annotation_keys(annotation)
        if fields is not None:
            if part not in fields:
                level = f"under {prefix}" if prefix else "at the top level"
                raise InputError(f"{where}: unknown key {part!r} {level}; valid keys: "
                                 f"{', '.join(sorted(fields))}")
            annotation = config.child_annotation(annotation, part)
        elif _is_mapping_of_labels(annotation):
            labels = list(node) if isinstance(node, Mapping) else []
            if i < len(parts) - 1 and part not in labels:
                raise InputError(
                    f"{where}: the base scenario has no {prefix} entry {part!r} (it has: "
                    f"{', '.join(labels) or 'none'}); add it to the base, or set the whole "
                    f"{prefix}.{part} mapping")
            annotation = config.child_annotation(annotation, part)
        else:
            raise InputError(f"{where}: {prefix} is a value, not a section; it has no key {part!r}")
        node = node.get(part) if isinstance(node, Mapping) else None
    return parts


def _set_path(raw: dict[str, Any], parts: Sequence[str], value: Any, where: str) -> None:
    """Set ``raw[parts[0]][parts[1]]... = value``, creating mappings on the way."""
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            raise InputError(f"{where}: {prefix} is {child!r} in the base scenario, not a mapping; "
                             f"vary {prefix} as a whole instead")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def _get_path(obj: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        obj = obj.get(part) if isinstance(obj, Mapping) else getattr(obj, part, None)
    return obj


# --------------------------------------------------------------------------- study


@dataclass(frozen=True)
class Cell:
    """One scenario of a study.

    Attributes:
        id: ``c000``, ``c001``, ... in expansion order (first axis outermost,
            seeds innermost).
        values: axis -> the value set (as written, or SI numbers of a range).
        numbers: axis -> the value as a number in SI units (bit/s, s, bytes;
            the value's position along its axis when it is not a number).
        labels: axis -> the value as text ("0.5 Mbps").
        seed: the scenario seed.
        scenario: the validated scenario.
    """

    id: str
    index: int
    values: dict[str, Any]
    numbers: dict[str, float]
    labels: dict[str, str]
    seed: int
    scenario: Scenario

    def describe(self) -> str:
        """``system.clients.uplink=0.5 Mbps, seed 0``."""
        return ", ".join([*(f"{a}={v}" for a, v in self.labels.items()), f"seed {self.seed}"])


@dataclass(frozen=True)
class Study:
    """A loaded study: its spec, expanded axes and validated cells."""

    name: str
    description: str
    path: Path
    base_path: Path
    spec: StudySpec
    axes: dict[str, list[Any]]
    axis_labels: dict[str, list[str]]
    base: Scenario
    cells: list[Cell]

    @property
    def base_dir(self) -> Path:
        """Where relative paths of the base scenario (a trace file) resolve."""
        return self.base_path.parent


def _cell_ids(n: int) -> list[str]:
    width = max(3, len(str(n - 1)))
    return [f"c{i:0{width}d}" for i in range(n)]


#: The most cells a study may expand to: far beyond what can be trained, small
#: enough that validating them all stays within seconds to minutes.
MAX_CELLS = 10_000


def load(path: str | Path, overrides: Sequence[str] = ()) -> Study:
    """Load and validate a study file, expand its cells and validate each one
    with the scenario schema.

    ``overrides`` (``fedsim validate STUDY --set KEY=VALUE``): a key under
    ``study.`` sets that key of the study file (``study.mode=zip``); any other
    key is a scenario key set in every cell, after ``study.set``.

    Raises:
        InputError: unreadable or invalid study file (or a scenario file: the
            message says to use ``fedsim scenario``), a missing base scenario, an
            axis, ``set`` or override key that is not in the scenario schema
            (naming the valid keys), zipped axes of unequal lengths, more than
            `MAX_CELLS` cells, or a cell that the scenario schema rejects (naming
            the cell, the key and the value).
    """
    path = Path(path)
    raw = config.read_yaml(path, "study file")
    if isinstance(raw, dict) and "study" not in raw and raw.keys() & Scenario.model_fields.keys():
        raise InputError(f"{path}: is a scenario file (no top-level 'study' key); run it with "
                         f"`fedsim scenario {path}`")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a study file must be a mapping with a top-level 'study' key")
    study_sets = [o for o in overrides if o.startswith("study.")]
    scenario_sets = [o for o in overrides if not o.startswith("study.")]
    raw = config.apply_overrides(raw, study_sets)
    try:
        spec = StudyFile.model_validate(raw).study
    except ValidationError as exc:
        raise InputError(_format_errors(exc, raw, str(path))) from None
    if scenario_sets:
        pairs = [config.parse_override(o) for o in scenario_sets]
        spec = spec.model_copy(update={"set": {**spec.set, **{".".join(k): v for k, v in pairs}}})

    base_path = (path.parent / spec.base).resolve()
    base_raw = config.read_yaml(base_path) if base_path.exists() else None
    if base_raw is None or not isinstance(base_raw, dict):
        why = "does not exist" if not base_path.exists() else "is not a scenario mapping"
        raise InputError(f"{path}: study.base: {spec.base!r} ({base_path}) {why}")
    base_raw.setdefault("name", base_path.stem)

    for key, value in spec.set.items():
        _set_path(base_raw, check_key_path(key, base_raw, f"{path}: study.set.{key}"), value,
                  f"{path}: study.set.{key}")
    sets = "study.set and --set" if scenario_sets else "study.set"
    base = config.from_dict(base_raw, source=f"{base_path} (with {path}: {sets})")

    axes: dict[str, list[Any]] = {}
    axis_labels: dict[str, list[str]] = {}
    parts: dict[str, list[str]] = {}
    for axis, values in spec.axes.items():
        where = f"{path}: study.axes.{axis}"
        if axis == "seed" and spec.seeds is not None:
            raise InputError(f"{where}: 'seed' is an axis and study.seeds is given; use one of them")
        parts[axis] = check_key_path(axis, base_raw, where)
        if isinstance(values, AxisRange):
            axes[axis], axis_labels[axis] = expand_range(values, where)
        else:
            axes[axis], axis_labels[axis] = list(values), [_label(v) for v in values]
        if axis in spec.set:
            raise InputError(f"{where}: the key is also in study.set; remove it from one of them")

    names = list(axes)
    seeds: list[int | None] = list(spec.seeds) if spec.seeds is not None else [None]
    count = len(seeds) * (len(axes[names[0]]) if spec.mode == "zip" else math.prod(map(len, axes.values())))
    if count > MAX_CELLS:
        raise InputError(f"{path}: study.axes: {count:,} cells (with seeds) exceed the {MAX_CELLS:,} "
                         "a study may have; split it or use fewer values")
    if spec.mode == "zip":
        lengths = {a: len(v) for a, v in axes.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{a}: {n}" for a, n in lengths.items())
            raise InputError(f"{path}: study.mode zip needs axes of equal length; got {listed}")
        combos = [tuple([i] * len(names)) for i in range(len(axes[names[0]]))]
    else:
        combos = list(itertools.product(*(range(len(axes[a])) for a in names)))

    specs = [(combo, seed) for combo in combos for seed in seeds]
    ids = _cell_ids(len(specs))
    cells: list[Cell] = []
    for index, ((combo, seed), cell_id) in enumerate(zip(specs, ids, strict=True)):
        cell_raw = copy.deepcopy(base_raw)
        values = {a: axes[a][i] for a, i in zip(names, combo, strict=True)}
        labels = {a: axis_labels[a][i] for a, i in zip(names, combo, strict=True)}
        for axis, value in values.items():
            _set_path(cell_raw, parts[axis], value, f"{path}: study.axes.{axis}")
        if seed is not None:
            cell_raw["seed"] = seed
        cell_raw["name"] = f"{spec.name}.{cell_id}"
        described = ", ".join(f"{a}={v}" for a, v in labels.items())
        scenario = config.from_dict(cell_raw, source=f"{path}: cell {cell_id} ({described})")
        cells.append(Cell(cell_id, index, values, {}, labels, scenario.seed, scenario))

    # numbers: the validated values (SI units) where every cell has one, else positions
    numbers: dict[str, list[float]] = {}
    for axis in names:
        found = [_numeric(_get_path(c.scenario, parts[axis])) for c in cells]
        if all(v is not None for v in found):
            numbers[axis] = [float(v) for v in found]  # type: ignore[arg-type]
        else:
            position = {_label(v): float(i) for i, v in enumerate(axes[axis])}
            numbers[axis] = [position.get(_label(c.values[axis]), math.nan) for c in cells]
    cells = [Cell(c.id, c.index, c.values, {a: numbers[a][k] for a in names}, c.labels, c.seed,
                  c.scenario) for k, c in enumerate(cells)]
    return Study(spec.name, spec.description, path, base_path, spec, axes, axis_labels, base, cells)


# --------------------------------------------------------------------------- planning

# The cost model of the time estimate lives in fedsim.cost (shared with the progress display).

_StageKey = tuple[str, str]  # (stage, key)


@dataclass
class TaskPlan:
    """One method of one cell: the stages it touches, (stage, key) -> demand
    (pre-training iterations, training rounds, 0 for a simulation), and the
    estimated seconds of computing each (1 thread; 0 when cached)."""

    cell: Cell
    label: str
    demands: dict[_StageKey, int]
    costs_s: dict[_StageKey, float]
    torch_keys: set[_StageKey] = field(default_factory=set)

    @property
    def id(self) -> str:
        """``c003/hp-fl``."""
        return f"{self.cell.id}/{self.label}"

    @property
    def order(self) -> tuple[int, int]:
        return self.cell.index, list(self.cell.scenario.methods).index(self.label)


def _everyone_every_round(scenario: Scenario) -> bool:
    """True when the config guarantees that every client is aggregated in
    every round (then training uses participation "all" and its cache key
    does not depend on the system at all)."""
    from fedsim.system.spec import Constant

    system = scenario.system
    rounds = system.rounds
    clients = scenario.data.partition.num_clients
    availability = system.clients.availability
    return (not system.timing_decides_participation() and rounds.dropout == 0
            and rounds.kept_count(clients) == clients and system.clients.trace is None
            and isinstance(availability, Constant) and availability.value >= 1.0)


def _trace_file(scenario: Scenario, base_dir: Path) -> str | None:
    trace = scenario.system.clients.trace
    if not trace:
        return None
    trace_path = Path(trace) if Path(trace).is_absolute() else base_dir / trace
    return store.sha256_file(trace_path) if trace_path.exists() else str(trace_path)


def _counts_key(scenario: Scenario, label: str) -> Any:
    """What determines a method's mask counts, hence its payload and work:
    dense, or the pruning level (layer-wise: the counts of a level are known in
    advance and equal for hp-fl and random pruning), or the ticket and rate."""
    from fedsim.learn import methods as learn_methods

    method = scenario.methods[label]
    if not learn_methods.get(method.kind).pruned:
        return "dense"
    if scenario.pretrain.scope == "layerwise":
        level = pipeline.needed_iterations(scenario, method)
        if level == 0:
            return "dense"  # level 0 keeps every weight: a dense payload
        return ["level", level,
                config.section_key(scenario.pretrain).get("prune_fraction")]
    return ["global", pipeline.pretrain_key(scenario), method.remaining_rate, method.level]


def train_group(scenario: Scenario, label: str, base_dir: Path) -> str:
    """The config-level key of a method's training: equal keys share one trace.

    When the config guarantees that every client takes part in every round,
    this is the pipeline's own ``train_key`` (participation "all"). Otherwise
    participation comes from the system simulation; the key then adds the
    participation-relevant system config (all of it when timing decides who
    is aggregated; else the round policy, availability and trace), which
    groups conservatively: equal groups always mean equal traces.
    """
    import torch

    method = scenario.methods[label]
    device = torch.device(pipeline.device_type(scenario))
    if _everyone_every_round(scenario):
        return pipeline.train_key(scenario, method, None, device)
    system = scenario.system
    if system.timing_decides_participation():
        part: Any = {"system": config.section_key(system)}
    else:
        part = {"rounds": config.section_key(system.rounds),
                "availability": config.to_plain(system.clients.availability)}
    return store.stable_hash({
        "stage": "train-group", **pipeline.data_key(scenario), "fl": config.section_key(scenario.fl),
        "start": pipeline.method_key(scenario, method), "device": device.type,
        "participation": {**part, "trace": _trace_file(scenario, base_dir),
                          "rounds_max": scenario.rounds.max},
    })


def system_group(scenario: Scenario, label: str, base_dir: Path) -> str:
    """The config-level key of a method's system simulation (equal keys give
    the same ``pipeline.system_key``)."""
    return store.stable_hash({
        "stage": "system-group", "system": config.section_key(scenario.system),
        "trace": _trace_file(scenario, base_dir), "counts": _counts_key(scenario, label),
        **pipeline.data_key(scenario), "rounds": scenario.rounds.max,
    })


class _CacheProbe:
    """What the cache already holds, with the exact keys where they can be
    computed cheaply: the ticket's levels, the traces' rounds, and (when the
    ticket is cached, so masks are known) the system entries."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._tickets: dict[str, Any] = {}
        self._samples: dict[str, np.ndarray] = {}

    def pretrain_levels(self, key: str) -> int:
        """Levels of the cached ticket of ``key`` (-1: none)."""
        entry = store.CacheEntry("pretrain", key)
        if not entry.valid():
            return -1
        return int(((entry.manifest() or {}).get("info") or {}).get("iterations", -1))

    def train_rounds(self, key: str, scenario: Scenario) -> int:
        """Rounds of the cached trace of ``key`` (-1: none); a trace that reached
        every target under ``stop_when_reached`` counts as complete."""
        entry = store.CacheEntry("train", key)
        if not entry.valid():
            return -1
        rounds = int(((entry.manifest() or {}).get("info") or {}).get("rounds", 0))
        if rounds < scenario.rounds.max and scenario.rounds.stop_when_reached:
            from fedsim.learn.trace import TrainingTrace

            files = sorted((entry.manifest() or {}).get("files", {}))
            try:
                trace = TrainingTrace.load(entry.path / next(f for f in files if f.startswith("trace")))
            except (OSError, ValueError, StopIteration):
                return -1
            accuracy = trace.accuracy
            if len(accuracy) and all(np.nanmax(accuracy) >= t for t in scenario.targets):
                return scenario.rounds.max
        return rounds

    def _ticket(self, scenario: Scenario) -> Any:
        from fedsim.learn.pretrain import Ticket

        key = pipeline.pretrain_key(scenario)
        if key not in self._tickets:
            entry = store.CacheEntry("pretrain", key)
            try:
                self._tickets[key] = Ticket.load(entry.path / "ticket.npz") if entry.valid() else None
            except (OSError, ValueError, KeyError):
                self._tickets[key] = None
        return self._tickets[key]

    def _client_samples(self, scenario: Scenario) -> np.ndarray:
        from fedsim import seeding
        from fedsim.data import load as load_dataset
        from fedsim.data import make_partition, split_unlabeled

        key = store.stable_hash(pipeline.data_key(scenario))
        if key not in self._samples:
            dataset = load_dataset(scenario.data.dataset)
            splits = split_unlabeled(len(dataset.train_labels), scenario.data.unlabeled,
                                     seeding.rng(scenario.seed, "split"))
            labels = dataset.train_labels[splits.labeled_idx]
            parts = make_partition(scenario.data.partition, labels,
                                   seeding.rng(scenario.seed, "partition"))
            self._samples[key] = np.array([len(p) for p in parts], dtype=np.int64)
        return self._samples[key]

    def system(self, scenario: Scenario, label: str) -> tuple[bool, str | None]:
        """(the simulation is cached, the exact training key when it could be
        derived from the cached simulation's participation)."""
        import torch

        from fedsim.learn import methods as learn_methods
        from fedsim.system import payload as system_payload
        from fedsim.system.sim import load_result

        ticket = self._ticket(scenario)
        method = scenario.methods[label]
        if ticket is None or ticket.iterations < pipeline.needed_iterations(scenario, method):
            return False, None
        try:
            start = learn_methods.build(method, ticket, seed=scenario.seed)
        except ValueError:
            return False, None
        weights, surviving, biases = pipeline.method_counts(start.mask)
        payload = system_payload.payload_bytes(weights, surviving, biases, scenario.system.payload)
        work = system_payload.work_fraction(scenario.system.compute, weights, surviving, biases)
        samples = self._client_samples(scenario)
        entry = store.CacheEntry("system", pipeline.system_key(scenario, payload, work, samples,
                                                               self.base_dir))
        if not entry.valid():
            return False, None
        if _everyone_every_round(scenario):
            return True, None
        try:
            participation = load_result(entry.path).participation
        except (OSError, ValueError, KeyError):
            return True, None
        everyone = all(len(p) == len(samples) for p in participation)
        key = pipeline.train_key(scenario, method, None if everyone else participation,
                                 torch.device(pipeline.device_type(scenario)))
        return True, key


def _plan_task(cell: Cell, label: str, probe: _CacheProbe,
               cached: dict[_StageKey, int]) -> TaskPlan:
    """The stages of one method of a cell with their demands and costs;
    ``cached`` collects what the cache holds (stage key -> levels or rounds)."""
    scenario = cell.scenario
    method = scenario.methods[label]
    rounds = scenario.rounds.max

    pre: _StageKey = ("pretrain", pipeline.pretrain_key(scenario))
    sim: _StageKey = ("system", system_group(scenario, label, probe.base_dir))
    train: _StageKey = ("train", train_group(scenario, label, probe.base_dir))
    iterations = pipeline.needed_iterations(scenario, method)
    if pre not in cached:
        cached[pre] = probe.pretrain_levels(pre[1])
    if sim not in cached:
        is_cached, exact = probe.system(scenario, label)
        cached[sim] = 0 if is_cached else -1
        if exact is not None and train not in cached:
            cached[train] = probe.train_rounds(exact, scenario)
    if train not in cached:
        exact_key = train[1] if _everyone_every_round(scenario) else None
        cached[train] = probe.train_rounds(exact_key, scenario) if exact_key else -1

    costs = {
        pre: (max(0, iterations - max(cached[pre], 0)) * scenario.pretrain.epochs
              * cost.pretrain_epoch_s(scenario)),
        train: max(0, rounds - max(cached[train], 0)) * cost.round_s(scenario),
        sim: 0.0 if cached[sim] >= 0 else cost.simulation_s(scenario),
    }
    return TaskPlan(cell, label, {pre: iterations, train: rounds, sim: 0}, costs, {pre, train})


class _Scheduler:
    """Hands out tasks so that no stage is computed by two workers at once.

    A stage is *done* once a finished task computed it (or the cache holds it)
    with at least the demand asked for (pre-training levels, training rounds);
    a pending task is *ready* when none of its stages that are not done is
    claimed by a running task. Among ready tasks the one with the most work
    left goes first (pre-training, then training, then simulation only). A
    failed task releases its claims, so another task that needs the stage
    computes it (resuming from the checkpoints the failed one left)."""

    def __init__(self, tasks: Sequence[TaskPlan], done: Mapping[_StageKey, int]) -> None:
        self.pending: list[TaskPlan] = list(tasks)
        self.done: dict[_StageKey, int] = {k: v for k, v in done.items() if v >= 0}
        self.claimed: dict[_StageKey, str] = {}
        self.claims: dict[str, set[_StageKey]] = {}

    def todo(self, task: TaskPlan) -> set[_StageKey]:
        """The stages ``task`` would compute now."""
        return {k for k, d in task.demands.items() if self.done.get(k, -1) < d}

    def ready(self) -> list[TaskPlan]:
        """The pending tasks that could start now, most work first."""
        ready = []
        for task in self.pending:
            todo = self.todo(task)
            if not any(k in self.claimed for k in todo):
                ready.append((-sum(task.costs_s.get(k, 0.0) for k in todo) - 1e-9 * len(todo),
                              task.cell.index, task))
        return [t for *_, t in sorted(ready, key=lambda r: r[:2])]

    def next_ready(self) -> TaskPlan | None:
        """The next task to start (its stages claimed), or None if none is ready."""
        for task in self.ready():
            todo = self.todo(task)
            if any(k in self.claimed for k in todo):
                continue
            self.pending.remove(task)
            for key in todo:
                self.claimed[key] = task.id
            self.claims[task.id] = todo
            return task
        return None

    def finish(self, task: TaskPlan, ok: bool) -> None:
        """``task`` ended; on success its stages are done."""
        for key in self.claims.pop(task.id, set()):
            self.claimed.pop(key, None)
        if ok:
            for key, demand in task.demands.items():
                self.done[key] = max(self.done.get(key, -1), demand)


def default_workers(tasks: int) -> int:
    """min(CPU count, tasks), at least 1."""
    return max(1, min(os.cpu_count() or 1, tasks))


def _threads_for(running: int, workers: int) -> int:
    """Torch threads of a task that starts while ``running`` tasks (itself
    included) run: the cores // workers, or more while fewer tasks can run
    (a lone pre-training gets every core)."""
    cpus = os.cpu_count() or 1
    return max(1, cpus // workers, cpus // max(1, running))


@dataclass
class Plan:
    """What a study needs: distinct stages, what the cache holds, the tasks'
    roles and an estimated time."""

    study: Study
    tasks: list[TaskPlan]
    cached: dict[_StageKey, int]
    workers: int
    roles: dict[str, str]
    estimate_s: float
    executor: str = "local"
    #: task id -> its estimated seconds in the planned schedule (the weight of
    #: the task in the sweep's progress: tasks differ hugely in cost)
    task_estimates_s: dict[str, float] = field(default_factory=dict)

    @property
    def threads(self) -> int:
        """Torch threads per task when every worker is busy."""
        return max(1, (os.cpu_count() or 1) // self.workers)

    def _count(self, stage: str) -> tuple[int, int]:
        need: dict[_StageKey, int] = {}
        for task in self.tasks:
            for key, demand in task.demands.items():
                if key[0] == stage:
                    need[key] = max(need.get(key, -1), demand)
        cached = sum(1 for k, d in need.items() if self.cached.get(k, -1) >= d)
        return len(need), cached

    @property
    def stage_counts(self) -> dict[str, tuple[int, int]]:
        """stage -> (distinct stages, of which cached)."""
        return {stage: self._count(stage) for stage in ("pretrain", "train", "system")}

    def describe(self) -> str:
        """The plan as text (``fedsim sweep --plan``)."""
        study = self.study
        spec = study.spec
        sizes = " x ".join(f"{len(v)} {a}" for a, v in study.axes.items())
        seeds = len(spec.seeds) if spec.seeds else 1
        methods = len(self.tasks) // max(1, len(study.cells))
        lines = [f"study {study.name} ({study.path}): {len(study.cells)} cells = {sizes} "
                 f"({spec.mode}) x {seeds} seed{'s' if seeds != 1 else ''}; "
                 f"{len(self.tasks)} tasks (cell x method, {methods} methods)",
                 f"base scenario: {study.base_path}"]
        if spec.set:
            lines.append("set: " + ", ".join(f"{k}={v}" for k, v in spec.set.items()))
        names = {"pretrain": "pre-trainings", "train": "trainings", "system": "simulations"}
        lines.append("distinct stages:")
        for stage, (total, cached) in self.stage_counts.items():
            lines.append(f"  {names[stage]:<14} {total:>5}   ({cached} cached, {total - cached} to run)")
        roles = {role: sum(1 for r in self.roles.values() if r == role)
                 for role in ("pre-train", "train", "simulate", "cached")}
        lines.append(f"tasks: {roles['pre-train']} pre-train, {roles['train']} train, "
                     f"{roles['simulate']} only simulate (traces from the cache), "
                     f"{roles['cached']} only read the cache")
        lines.append(f"execution: {self.executor}, {self.workers} worker"
                     f"{'s' if self.workers != 1 else ''}; no stage is computed by two at once")
        lines.append(f"estimated time: {_format_duration(self.estimate_s)} (cost model "
                     "fedsim.study.COST_MODEL, calibrated on a 2-core development CPU)")
        return "\n".join(lines)


def _format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _role(todo: set[_StageKey]) -> str:
    stages = {k[0] for k in todo}
    for stage, role in (("pretrain", "pre-train"), ("train", "train"), ("system", "simulate")):
        if stage in stages:
            return role
    return "cached"


def _simulate_schedule(tasks: Sequence[TaskPlan], cached: Mapping[_StageKey, int], workers: int,
                       ) -> tuple[float, dict[str, str], dict[str, float]]:
    """Run the scheduler on estimated durations: (makespan s, task -> role,
    task -> estimated seconds)."""
    scheduler = _Scheduler(tasks, cached)
    roles: dict[str, str] = {}
    durations: dict[str, float] = {}
    clock = 0.0
    running: list[tuple[float, int, TaskPlan]] = []
    counter = itertools.count()
    while scheduler.pending or running:
        batch = []
        while len(running) + len(batch) < workers and (task := scheduler.next_ready()) is not None:
            batch.append(task)
        threads = _threads_for(len(running) + len(batch), workers)
        for task in batch:
            todo = scheduler.claims[task.id]
            torch_s = sum(task.costs_s[k] for k in todo if k in task.torch_keys)
            other_s = sum(task.costs_s[k] for k in todo if k not in task.torch_keys)
            roles[task.id] = _role(todo)
            duration = COST_MODEL["task_s"] + other_s + torch_s / math.sqrt(threads)
            durations[task.id] = duration
            running.append((clock + duration, next(counter), task))
        if not running:
            break
        running.sort(key=lambda r: r[:2])
        clock, _, task = running.pop(0)
        scheduler.finish(task, ok=True)
    return clock, roles, durations


def plan(study: Study, *, workers: int | None = None, executor: str = "local") -> Plan:
    """Plan ``study``: its distinct pre-trainings, trainings and simulations,
    which the cache holds, the tasks' roles and an estimated time for
    ``workers`` workers (default: min(CPU count, tasks)). Reads the cache and
    runs nothing heavy (a cached ticket and the dataset's labels may be loaded
    to derive the exact simulation keys)."""
    probe = _CacheProbe(study.base_dir)
    cached: dict[_StageKey, int] = {}
    tasks = [_plan_task(cell, label, probe, cached)
             for cell in study.cells for label in cell.scenario.methods]
    workers = workers or default_workers(len(tasks))
    makespan_s, roles, durations = _simulate_schedule(tasks, cached, workers)
    estimate_s = makespan_s + COST_MODEL["report_s"] + (COST_MODEL["startup_s"] if workers > 1 else 0)
    return Plan(study, tasks, cached, workers, roles, estimate_s, executor, durations)


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """What a worker needs to compute one method of one cell."""

    task_id: str
    scenario: Scenario
    base_dir: str
    threads: int | None = None
    before_task: BeforeTask | None = None
    cached_only: bool = False


@dataclass
class TaskOutcome:
    """A task's result: its metrics frame (or the error), where and how long."""

    task_id: str
    metrics: pd.DataFrame | None
    seconds: float
    worker: str
    stage_seconds: dict[str, float] = field(default_factory=dict)
    cache_keys: dict[str, str] = field(default_factory=dict)
    threads: int | None = None
    error: str | None = None
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_task(task: Task) -> TaskOutcome:
    """Compute one task (``pipeline.compute`` of a cell restricted to one
    method) and return its metrics frame; an exception becomes an outcome with
    ``error`` set (never raised, so that every executor reports it alike)."""
    start = time.perf_counter()
    if task.threads:
        import torch

        torch.set_num_threads(task.threads)
    try:
        if task.before_task is not None:
            task.before_task(task.task_id)
        result = pipeline.compute(task.scenario, base_dir=Path(task.base_dir), cached_only=task.cached_only)
    except Exception as exc:  # reported per task; the study goes on
        return TaskOutcome(task.task_id, None, time.perf_counter() - start, _worker_name(),
                           threads=task.threads, error=f"{type(exc).__name__}: {exc}",
                           traceback=traceback.format_exc())
    return TaskOutcome(task.task_id, result.metrics, time.perf_counter() - start, _worker_name(),
                       dict(result.stage_seconds), dict(result.cache_keys), task.threads)


def _init_worker() -> None:
    """Pool worker start: quiet logs (the parent reports every task)."""
    logging.getLogger("fedsim").setLevel(logging.WARNING)


class _InProcess:
    """workers=1: every task in this process (simplest to debug)."""

    name = "in-process"

    def __init__(self, make_task: Callable[[TaskPlan, int | None], Task]) -> None:
        self.make_task = make_task
        self.done: deque[tuple[TaskPlan, TaskOutcome]] = deque()

    def slots(self) -> int:
        return 0 if self.done else 1

    def running(self) -> int:
        return len(self.done)

    def submit(self, task: TaskPlan, threads: int) -> None:
        self.done.append((task, run_task(self.make_task(task, None))))

    def wait_any(self) -> list[tuple[TaskPlan, TaskOutcome]]:
        return [self.done.popleft()]

    def close(self, wait: bool = True) -> None:
        pass


class _LocalPool:
    """A pool of spawned worker processes. When a worker dies the pool breaks
    and fails every running task; unless one task ran alone, those tasks run
    again one at a time (a fresh pool after each death), so only the task that
    kills its worker is reported failed."""

    name = "local"

    def __init__(self, workers: int, make_task: Callable[[TaskPlan, int | None], Task]) -> None:
        self.workers = workers
        self.make_task = make_task
        self.context = multiprocessing.get_context("spawn")
        self.pool = self._new_pool(workers)
        self.futures: dict[cf.Future[TaskOutcome], TaskPlan] = {}
        self.isolate: deque[tuple[TaskPlan, int]] = deque()
        self.threads: dict[str, int] = {}

    def _new_pool(self, workers: int) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=workers, mp_context=self.context,
                                      initializer=_init_worker)

    def slots(self) -> int:
        return 0 if self.isolate else self.workers - len(self.futures)

    def running(self) -> int:
        return len(self.futures) + len(self.isolate)

    def submit(self, task: TaskPlan, threads: int) -> None:
        self.threads[task.id] = threads
        self.futures[self.pool.submit(run_task, self.make_task(task, threads))] = task

    def wait_any(self) -> list[tuple[TaskPlan, TaskOutcome]]:
        if self.isolate:
            return [self._run_alone(*self.isolate.popleft())]
        done, _ = cf.wait(list(self.futures), return_when=cf.FIRST_COMPLETED)
        results, broken = [], []
        for future in done:
            task = self.futures.pop(future)
            exc = future.exception()
            if isinstance(exc, cf.process.BrokenProcessPool):
                broken.append(task)
            elif exc is not None:
                results.append((task, TaskOutcome(task.id, None, 0.0, "local worker",
                                                  error=f"{type(exc).__name__}: {exc}")))
            else:
                results.append((task, future.result()))
        if broken:
            # the whole pool is gone: every running task fails with it
            alone = len(broken) == 1 and not self.futures and not results
            for future, task in list(self.futures.items()):
                try:
                    results.append((task, future.result()))
                except Exception:  # BrokenProcessPool, or a pickling error
                    broken.append(task)
            self.futures.clear()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = self._new_pool(self.workers)
            if alone:  # it ran by itself: it is the one
                return [(broken[0], self._died(broken[0], 0.0, None))]
            log.warning("a worker process died; running %d task(s) again one at a time to find "
                        "the one that kills it: %s", len(broken), ", ".join(t.id for t in broken))
            cpus = os.cpu_count() or 1
            self.isolate.extend((t, cpus) for t in sorted(broken, key=lambda t: t.order))
            if not results:
                results.append(self._run_alone(*self.isolate.popleft()))
        return results

    def _run_alone(self, task: TaskPlan, threads: int) -> tuple[TaskPlan, TaskOutcome]:
        start = time.perf_counter()
        try:
            return task, self.pool.submit(run_task, self.make_task(task, threads)).result()
        except cf.process.BrokenProcessPool:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = self._new_pool(self.workers)
            return task, self._died(task, time.perf_counter() - start, threads)

    @staticmethod
    def _died(task: TaskPlan, seconds: float, threads: int | None) -> TaskOutcome:
        return TaskOutcome(
            task.id, None, seconds, "local worker", threads=threads,
            error="worker process died (killed, out of memory or a crash in native code); "
                  "run the study again to retry this task")

    def close(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)


RAY_MISSING = "the ray executor needs the optional extra: pip install 'fedsim-cost[ray]'"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(RAY_MISSING) from None
    return ray


def _shared_env() -> dict[str, str]:
    """FEDSIM_CACHE / FEDSIM_DATA as absolute paths for the Ray workers (on a
    cluster both must be shared storage mounted at the same path everywhere)."""
    return {"FEDSIM_CACHE": str(store.cache_dir().resolve()),
            "FEDSIM_DATA": str(store.data_dir().resolve())}


class _Ray:
    """Each task a Ray task with ``num_cpus`` = its torch threads and
    ``num_gpus=1`` where its device is CUDA. Without ``address`` a local Ray
    runtime is started (and shut down by ``close``)."""

    name = "ray"

    def __init__(self, address: str | None, workers: int | None, tasks: int,
                 make_task: Callable[[TaskPlan, int | None], Task]) -> None:
        ray = _import_ray()
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"runtime_env": {"env_vars": _shared_env()},
                                      "log_to_driver": False, "logging_level": logging.WARNING}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **kwargs)
            self.started = True
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1)))
        self.workers = workers or max(1, min(self.cpus, tasks))
        self.make_task = make_task
        self.remote = ray.remote(run_task)
        self.refs: dict[Any, TaskPlan] = {}

    def slots(self) -> int:
        return self.workers - len(self.refs)

    def running(self) -> int:
        return len(self.refs)

    def submit(self, task: TaskPlan, threads: int) -> None:
        threads = max(1, self.cpus // self.workers)
        gpus = 1 if pipeline.device_type(task.cell.scenario) == "cuda" else 0
        ref = self.remote.options(num_cpus=threads, num_gpus=gpus, max_retries=1,
                                  name=f"fedsim-{task.id}").remote(self.make_task(task, threads))
        self.refs[ref] = task

    def wait_any(self) -> list[tuple[TaskPlan, TaskOutcome]]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        results = []
        for ref in ready:
            task = self.refs.pop(ref)
            try:
                results.append((task, self.ray.get(ref)))
            except self.ray.exceptions.RayError as exc:
                text = str(exc).strip()
                first = text.splitlines()[0] if text else ""
                results.append((task, TaskOutcome(task.id, None, 0.0, "ray worker",
                                                  error=f"{type(exc).__name__}: {first}")))
        return results

    def close(self, wait: bool = True) -> None:
        if self.started:
            self.ray.shutdown()


# --------------------------------------------------------------------------- running


@dataclass
class StudyResult:
    """A finished study: the sweep frame, every task's outcome, failures."""

    study: Study
    plan: Plan
    sweep: pd.DataFrame
    outcomes: dict[str, TaskOutcome]
    out_dir: Path
    seconds: dict[str, float]
    written: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[TaskOutcome]:
        """The outcomes of the tasks that failed, in cell and method order."""
        return [o for o in self.outcomes.values() if not o.ok]


def sweep_progress(the_plan: Plan, enabled: bool = True, **options: Any) -> Progress:
    """The progress display of a study: its tasks weighted by the planner's
    estimated seconds (`Plan.task_estimates_s`), not counted, since a task that
    pre-trains and trains costs thousands of times one that only reads the
    cache. ``options`` go to `Progress` (stream, clock, ...)."""
    total = sum(the_plan.task_estimates_s.get(t.id, COST_MODEL["task_s"]) for t in the_plan.tasks)
    return Progress("study", {"tasks": total}, enabled=enabled, **options)


def _execute(the_plan: Plan, backend: Any, bar: Progress) -> dict[str, TaskOutcome]:
    """Run the plan's tasks on ``backend``; ``bar`` advances by each finished
    (or failed) task's estimated seconds."""
    scheduler = _Scheduler(the_plan.tasks, the_plan.cached)
    outcomes: dict[str, TaskOutcome] = {}
    failed = 0
    total = len(the_plan.tasks)

    def status() -> str:
        text = f"{len(outcomes)}/{total} tasks done, {backend.running()} running ({backend.name})"
        return text + (f", {failed} failed" if failed else "")

    with bar:
        while scheduler.pending or backend.running():
            batch = []
            while backend.slots() > len(batch) and (task := scheduler.next_ready()) is not None:
                batch.append(task)
            threads = _threads_for(backend.running() + len(batch), the_plan.workers)
            for task in batch:
                backend.submit(task, threads)
            if batch:
                bar.status(status())
            if not backend.running():
                break  # nothing runs, so nothing is claimed and every task was ready
            for task, outcome in backend.wait_any():
                scheduler.finish(task, outcome.ok)
                outcomes[task.id] = outcome
                if outcome.ok:
                    stages = ", ".join(f"{k} {v:.1f} s" for k, v in outcome.stage_seconds.items()
                                       if v >= 0.05)
                    line = (f"{task.id} ({task.cell.describe()}): {outcome.seconds:.1f} s"
                            f" [{stages}]")
                    if bar.enabled:
                        bar.write(line)  # above the progress line
                    else:
                        log.info("%s", line)
                else:
                    failed += 1
                    log.warning("%s (%s) failed: %s", task.id, task.cell.describe(), outcome.error)
                bar.advance("tasks", the_plan.task_estimates_s.get(task.id, COST_MODEL["task_s"]),
                            status())
    return outcomes


def run(study: Study, *, out_dir: str | Path | None = None, executor: str = "local",
        address: str | None = None, workers: int | None = None, progress: bool = False,
        command: Sequence[str] | None = None, before_task: BeforeTask | None = None,
        cached_only: bool = False) -> StudyResult:
    """Plan and run ``study`` (one task per cell and method), then write its
    outputs into ``out_dir`` (default ``reports/<study name>/``).

    Args:
        executor: ``local`` (default; ``workers=1`` runs in this process, more
            in a pool of spawned processes, each task with CPU count // workers
            torch threads, more while fewer tasks can run) or ``ray`` (Ray
            tasks on the cluster at ``address``, e.g. ``auto`` or
            ``HOST:6379``; without it a local Ray runtime).
        workers: tasks in parallel (default min(CPU count, tasks); for Ray
            min(cluster CPUs, tasks)).
        command: the command line, recorded in study.resolved.yaml.
        cached_only: train nothing (`pipeline.compute`'s ``cached_only``):
            each task reports its method up to the last cached round, and a
            task whose pre-training or training is not cached fails, naming
            it. For a study's report from a cache trained elsewhere.
        before_task: called with the task id (``c003/hp-fl``) in the worker
            before the task runs: a seam for tests and debugging (a hook that
            raises or exits simulates a failing task or a dying worker). Must
            be picklable (a module-level function).

    Returns:
        A `StudyResult`; ``failed`` lists the tasks that failed (their finished
        stages are cached, so running the study again resumes).

    Raises:
        InputError: an unknown executor, bad ``workers``, or ``ray`` without the
            optional extra.
    """
    if executor not in ("local", "ray"):
        raise InputError(f"--executor: unknown executor {executor!r}; choose local or ray")
    if workers is not None and workers < 1:
        raise InputError(f"--workers: {workers} must be >= 1")
    if address and executor != "ray":
        raise InputError("--address applies only to --executor ray")
    out = Path(out_dir) if out_dir is not None else Path("reports") / study.name
    timings: dict[str, float] = {}
    start = time.perf_counter()
    base_dir = str(study.base_dir)

    def make_task(task: TaskPlan, threads: int | None) -> Task:
        scenario = config.select_methods(task.cell.scenario, [task.label])
        return Task(task.id, scenario, base_dir, threads, before_task, cached_only)

    if executor == "ray":
        _import_ray()
    the_plan = plan(study, workers=workers, executor=executor)
    timings["plan_s"] = time.perf_counter() - start
    log.info("%s", the_plan.describe())

    backend: Any
    if executor == "ray":
        backend = _Ray(address, workers, len(the_plan.tasks), make_task)
        the_plan.workers = backend.workers
    elif the_plan.workers == 1:
        backend = _InProcess(make_task)
    else:
        backend = _LocalPool(the_plan.workers, make_task)
    started = time.perf_counter()
    try:
        outcomes = _execute(the_plan, backend, sweep_progress(the_plan, progress))
    except BaseException:
        backend.close(wait=False)  # Ctrl-C: finished stages are cached, do not wait
        raise
    backend.close()
    timings["tasks_s"] = time.perf_counter() - started
    ordered = {t.id: outcomes[t.id] for t in the_plan.tasks if t.id in outcomes}

    started = time.perf_counter()
    result = StudyResult(study, the_plan, sweep_frame(study, ordered), ordered, out, timings)
    timings["total_s"] = time.perf_counter() - start  # provisional, for the resolved study
    result.written = write_outputs(result, command=command, executor=backend.name)
    timings["outputs_s"] = time.perf_counter() - started
    timings["total_s"] = time.perf_counter() - start
    log.info("study %s: %d tasks in %.1f s (%d failed) -> %s", study.name, len(the_plan.tasks),
             timings["total_s"], len(result.failed), out)
    return result


# --------------------------------------------------------------------------- outputs


def _task_ids(cell: Cell) -> list[tuple[str, str]]:
    return [(label, f"{cell.id}/{label}") for label in cell.scenario.methods]


def sweep_frame(study: Study, outcomes: Mapping[str, TaskOutcome]) -> pd.DataFrame:
    """One row per successful cell x method x target: ``cell``, ``seed``, each
    axis (number, SI units) and ``<axis>_label``, then the metrics.csv columns."""
    frames = []
    axes = list(study.axes)
    for cell in study.cells:
        for _, task_id in _task_ids(cell):
            outcome = outcomes.get(task_id)
            if outcome is None or not outcome.ok or outcome.metrics is None:
                continue
            metrics = outcome.metrics.reset_index(drop=True)
            head: dict[str, Any] = {"cell": cell.id}
            if "seed" not in axes:
                head["seed"] = cell.seed
            head.update({axis: cell.numbers[axis] for axis in axes})
            head.update({f"{axis}_label": cell.labels[axis] for axis in axes})
            frames.append(pd.concat([pd.DataFrame([head] * len(metrics)), metrics], axis=1))
    if not frames:
        return pd.DataFrame(columns=["cell", "seed", *axes, *(f"{a}_label" for a in axes)])
    return pd.concat(frames, ignore_index=True)


def _failures_frame(study: Study, outcomes: Mapping[str, TaskOutcome]) -> pd.DataFrame:
    rows = []
    for cell in study.cells:
        for label, task_id in _task_ids(cell):
            outcome = outcomes.get(task_id)
            if outcome is not None and not outcome.ok:
                rows.append({"cell": cell.id, "method": label, "seed": cell.seed,
                             **{a: cell.labels[a] for a in study.axes},
                             "error": outcome.error, "worker": outcome.worker,
                             "seconds": round(outcome.seconds, 2),
                             "traceback": outcome.traceback or ""})
    return pd.DataFrame(rows)


def _cell_status(cell: Cell, outcomes: Mapping[str, TaskOutcome]) -> dict[str, Any]:
    status = {}
    for label, task_id in _task_ids(cell):
        outcome = outcomes.get(task_id)
        status[label] = ("not run" if outcome is None else "ok" if outcome.ok
                         else f"failed: {outcome.error}")
    return status


def _provenance(result: StudyResult, command: Sequence[str] | None, executor: str) -> dict[str, Any]:
    import torch

    return {
        "fedsim": __version__,
        "git_commit": pipeline.git_commit(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "command": " ".join(command) if command else " ".join(
            [Path(sys.argv[0]).name, *sys.argv[1:]]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "executor": executor,
        "workers": result.plan.workers,
        "torch_threads_per_task": result.plan.threads,
        "host": platform.node(),
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
        "estimated_s": round(result.plan.estimate_s, 1),
    }


def resolved_study(result: StudyResult, provenance: Mapping[str, Any]) -> str:
    """The study with its axes expanded, every cell's values and outcome, the
    base scenario with every default, and the provenance (study.resolved.yaml)."""
    study = result.study
    spec = study.spec
    doc = {
        "study": {
            "name": study.name,
            "description": study.description,
            "source": str(study.path),
            "base": str(study.base_path),
            "set": config.to_plain(dict(spec.set)),
            "axes": {a: config.to_plain(v) for a, v in study.axes.items()},
            "axis_labels": study.axis_labels,
            "mode": spec.mode,
            "seeds": list(spec.seeds) if spec.seeds is not None else None,
        },
        "cells": [{"cell": c.id, "seed": c.seed, "values": c.labels,
                   "methods": _cell_status(c, result.outcomes)} for c in study.cells],
        "plan": {stage: {"distinct": n, "cached_before": k}
                 for stage, (n, k) in result.plan.stage_counts.items()},
        "provenance": dict(provenance),
        "base_scenario": config.to_plain(study.base),
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def write_outputs(result: StudyResult, *, command: Sequence[str] | None = None,
                  executor: str = "local") -> dict[str, Path]:
    """Write sweep.csv/.parquet, failures.csv (removed when nothing failed),
    study.resolved.yaml and the sweep report (figures, report.pdf, summary.md).
    Every file is written atomically."""
    from fedsim.report.sweep import write_sweep_report

    study = result.study
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    store.write_text(out / OUTPUTS["sweep"], result.sweep.to_csv(index=False))
    written[OUTPUTS["sweep"]] = out / OUTPUTS["sweep"]
    with store.atomic_write(out / OUTPUTS["sweep_parquet"]) as handle:
        result.sweep.to_parquet(handle, index=False)
    written[OUTPUTS["sweep_parquet"]] = out / OUTPUTS["sweep_parquet"]
    failures = _failures_frame(study, result.outcomes)
    if len(failures):
        store.write_text(out / OUTPUTS["failures"], failures.to_csv(index=False))
        written[OUTPUTS["failures"]] = out / OUTPUTS["failures"]
    else:
        (out / OUTPUTS["failures"]).unlink(missing_ok=True)
    provenance = _provenance(result, command, executor)
    store.write_text(out / OUTPUTS["resolved"], resolved_study(result, provenance))
    written[OUTPUTS["resolved"]] = out / OUTPUTS["resolved"]

    if len(result.sweep):
        targets = sorted({t for c in study.cells for t in c.scenario.targets})
        meta = {
            "name": study.name,
            "description": study.description,
            "axes": list(study.axes),
            "mode": study.spec.mode,
            "methods": list(study.base.methods),
            "targets": targets,
            "axis_labels": dict(study.spec.axis_titles),
            "provenance": {k: str(v) for k, v in provenance.items()
                           if k in ("fedsim", "git_commit", "command", "created", "executor")},
        }
        formats = list(study.base.report.formats)
        written.update({name: out / name for name in write_sweep_report(
            out, result.sweep, meta, formats=formats)})
    return written


# --------------------------------------------------------------------------- benchmark


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _bench_files(directory: Path, cells: int, rounds: int) -> Path:
    """The benchmark's base scenario (the paper setup: 100 clients x 400
    samples, ``rounds`` rounds, FL without pre-training, a mobile network with
    a contended server link) and its link-speed study; returns the study path."""
    base = {
        "name": "bench-paper",
        "description": "paper setup (100 clients x 400 samples) on a mobile network",
        "seed": 0,
        "data": {"dataset": "mnist", "unlabeled": 20000,
                 "partition": {"scheme": "shards", "num_clients": 100, "shard_size": 200,
                               "shards_per_client": 2}},
        "pretrain": {"iterations": 0},
        "methods": {"original": {}},
        "system": {
            "clients": {"downlink": {"dist": "lognormal", "median": "20 Mbps", "sigma": 0.5},
                        "uplink": "5 Mbps", "rtt": "50 ms",
                        "speed": {"dist": "uniform", "low": 0.5, "high": 2.0}},
            "server": {"downlink": "1 Gbps", "uplink": "1 Gbps", "aggregation": "0.5 s"},
        },
        "targets": [0.95],
        "rounds": {"max": rounds},
        "device": "cpu",
        "report": {"formats": ["png"]},
    }
    study = {"study": {
        "name": "bench-link-speed",
        "description": f"{cells} client uplink speeds, paper setup, cached trace",
        "base": "base.yaml",
        "axes": {"system.clients.uplink": {"geometric": {"start": "0.5 Mbps", "stop": "50 Mbps",
                                                         "num": cells}}},
    }}
    store.write_text(directory / "base.yaml", yaml.safe_dump(base, sort_keys=False))
    store.write_text(directory / "study.yaml", yaml.safe_dump(study, sort_keys=False))
    return directory / "study.yaml"


def synthetic_trace(rounds: int, clients: int, samples: int, batch_size: int, local_epochs: int,
                    ) -> Any:
    """A STAND-IN training trace for the benchmark: accuracy 0.976 - 0.876 exp(-r / 40)
    (reaches 95 % at round 141, near the paper's NRA@95 of 134 for FL), every
    client in every round. Its values do not change what a study costs."""
    from fedsim.learn.trace import TrainingTrace

    r = np.arange(1, rounds + 1, dtype=np.int64)
    accuracy = 0.976 - 0.876 * np.exp(-r / 40.0)
    round_frame = pd.DataFrame({"round_num": r, "accuracy": accuracy,
                                "loss": -np.log(np.clip(accuracy, 1e-6, 1.0)),
                                "participants": np.full(rounds, clients, dtype=np.int64)})
    steps = math.ceil(samples / batch_size) * local_epochs
    client_frame = pd.DataFrame({
        "round_num": np.repeat(r, clients),
        "client_id": np.tile(np.arange(clients, dtype=np.int64), rounds),
        "samples": np.full(rounds * clients, samples, dtype=np.int64),
        "local_steps": np.full(rounds * clients, steps, dtype=np.int64),
    })
    return TrainingTrace(round_frame, client_frame, {"synthetic": "stand-in accuracy curve"})


def _inject_trace(scenario: Scenario) -> None:
    """Put the pre-training ticket (0 iterations: Θ0 only, real) and a synthetic
    3000-round trace of every method into the cache under their real keys."""
    import torch

    device = torch.device(pipeline.device_type(scenario))
    data = pipeline.prepare_data(scenario)
    ticket = pipeline.pretrain_stage(scenario, data, 0, device)
    samples = int(data.client_samples[0])
    for label, method in scenario.methods.items():
        key = pipeline.train_key(scenario, method, None, device)
        entry = store.CacheEntry("train", key)
        trace = synthetic_trace(scenario.rounds.max, len(data.client_samples), samples,
                                scenario.fl.batch_size, scenario.fl.local_epochs)
        names = [f"trace.r{scenario.rounds.max:06d}.npz", f"params.r{scenario.rounds.max:06d}.npz"]
        trace.save(entry.file(names[0]))
        with store.atomic_write(entry.file(names[1])) as handle:
            np.savez(handle, **ticket.theta0_encoder.to_numpy())
        entry.seal(names, {"rounds": scenario.rounds.max, "label": label, "synthetic": True})


def bench_sweep(progress: bool = False, *, cells: int = 100, rounds: int = 3000,
                workers: int | None = None) -> dict[str, Any]:
    """Time a ``cells``-cell link-speed study of the paper setup (100 clients x
    400 samples, ``rounds`` rounds, one method) whose training trace is cached:
    plan + every cell's simulation, join and metrics + sweep.csv and report,
    through the real code path (``run``, local executor).

    The cached trace is a SYNTHETIC STAND-IN (`synthetic_trace`): training the
    paper setup for 3000 rounds takes hours, and the accuracy values do not
    change the cost of the study. It is written into a temporary FEDSIM_CACHE
    under the real training key, before the clock starts.

    Returns: ``sweep_<cells>_cells_s`` (wall seconds), ``sweep_cells_per_s``,
    the plan, cells and outputs seconds, workers, the per-cell mean of the
    stage seconds, and ``sweep_trace: "synthetic stand-in"``.
    """
    quiet = logging.getLogger("fedsim")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # no line per task in the benchmark's output
    try:
        with tempfile.TemporaryDirectory(prefix="fedsim-bench-sweep-") as tmp, \
                _environ(FEDSIM_CACHE=str(Path(tmp) / "cache")):
            directory = Path(tmp)
            spec = load(_bench_files(directory, cells, rounds))
            setup = time.perf_counter()
            _inject_trace(spec.cells[0].scenario)
            setup_s = time.perf_counter() - setup
            start = time.perf_counter()
            result = run(spec, out_dir=directory / "out", workers=workers, progress=progress)
            total_s = time.perf_counter() - start
    finally:
        quiet.setLevel(level)
    if result.failed:
        raise RuntimeError(f"bench sweep: {len(result.failed)} tasks failed: "
                           f"{result.failed[0].error}")
    outcomes = list(result.outcomes.values())
    stage_means: dict[str, float] = {}
    for outcome in outcomes:
        for stage, seconds in outcome.stage_seconds.items():
            stage_means[stage] = stage_means.get(stage, 0.0) + seconds / len(outcomes)
    return {
        f"sweep_{cells}_cells_s": round(total_s, 2),
        "sweep_cells_per_s": round(cells / total_s, 3),
        "sweep_plan_s": round(result.seconds["plan_s"], 2),
        "sweep_tasks_s": round(result.seconds["tasks_s"], 2),
        "sweep_outputs_s": round(result.seconds["outputs_s"], 2),
        "sweep_workers": result.plan.workers,
        "sweep_cell_mean_s": round(float(np.mean([o.seconds for o in outcomes])), 2),
        **{f"sweep_cell_{k}_s": round(v, 3) for k, v in stage_means.items()},
        "sweep_client_rounds_per_cell": rounds * 100,
        "sweep_setup_s": round(setup_s, 2),
        "sweep_trace": "synthetic stand-in (accuracy curve; cost-neutral)",
    }


__all__ = [
    "COST_MODEL",
    "OUTPUTS",
    "AxisRange",
    "Cell",
    "Plan",
    "Study",
    "StudyResult",
    "StudySpec",
    "Task",
    "TaskOutcome",
    "TaskPlan",
    "bench_sweep",
    "check_key_path",
    "default_workers",
    "expand_range",
    "load",
    "plan",
    "run",
    "run_task",
    "sweep_frame",
    "sweep_progress",
    "synthetic_trace",
    "system_group",
    "train_group",
    "write_outputs",
]
