"""The study file: its schema, its axes and its cells (``fedsim.study.load``).

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

An axis is any dotted key path of the scenario schema with a list of values or
a range (`fedsim.study.ranges`). ``methods.<label>`` keys are the base
scenario's method labels; an axis may also set a whole method mapping
(``methods.hp-fl: [{remaining_rate: 0.8}, {level: 3}]``). Every cell is
validated by the scenario schema.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from fedsim import config
from fedsim.config import Scenario, paths
from fedsim.config.errors import format_validation_error
from fedsim.data.resolve import resolve_data_files
from fedsim.errors import InputError
from fedsim.schema import Section
from fedsim.study.ranges import (
    SI_UNITS,
    AxisRange,
    Quantity,
    axis_quantity,
    expand_range,
    label,
    numeric,
)

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


def _set_path(raw: dict[str, Any], parts: Sequence[str], value: Any, where: str) -> None:
    """`fedsim.config.paths.set_path`, its error said as a study's.

    Raises:
        InputError: a key on the way is a plain value in the base scenario.
    """
    try:
        paths.set_path(raw, parts, value)
    except paths.NotASectionError as exc:
        raise InputError(f"{where}: {exc.prefix} is {exc.value!r} in the base scenario, not a "
                         f"mapping; vary {exc.prefix} as a whole instead") from None


# --------------------------------------------------------------------------- study


@dataclass(frozen=True)
class Axis:
    """One axis of a study, with what it means (for the sweep and its report).

    Attributes:
        path: the dotted scenario key it sets (``system.clients.uplink``).
        values: the values set, in order (as written; SI numbers for a range).
        labels: each value as text ("0.5 Mbps").
        quantity: the kind of quantity it sets ("bandwidth", "duration",
            "size"; None: a plain number or not a quantity), from the unit
            written or the scenario field (`fedsim.study.ranges.axis_quantity`).
        unit: the unit the values were written in ("Mbps"; None: bare numbers,
            which are then in `si_unit`, or several units).
        title: the axis' title in figures (``axis_titles``, else ``path``).
    """

    path: str
    values: list[Any]
    labels: list[str]
    quantity: Quantity | None
    unit: str | None
    title: str

    @property
    def si_unit(self) -> str | None:
        """The unit of the axis' numbers in sweep.csv ("bit/s", "s", "B"; None:
        plain numbers)."""
        return SI_UNITS[self.quantity] if self.quantity is not None else None

    @property
    def is_bandwidth(self) -> bool:
        """Whether the axis sets a link speed (bit/s)."""
        return self.quantity == "bandwidth"

    @property
    def is_remaining_rate(self) -> bool:
        """Whether the axis sets a method's remaining rate
        (``methods.<label>.remaining_rate``)."""
        parts = paths.split_key_path(self.path)
        return len(parts) == 3 and parts[0] == "methods" and parts[2] == "remaining_rate"


@dataclass(frozen=True)
class Cell:
    """One scenario of a study.

    Attributes:
        id: ``c000``, ``c001``, ... in expansion order (first axis outermost,
            seeds innermost).
        index: the position of the cell in that order.
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
    """A loaded study: its spec, its axes (in order) and validated cells."""

    name: str
    description: str
    path: Path
    base_path: Path
    spec: StudySpec
    axes: dict[str, Axis]
    base: Scenario
    cells: list[Cell]

    @property
    def base_dir(self) -> Path:
        """Where relative paths of the base scenario (a trace file) resolve."""
        return self.base_path.parent

    @property
    def axis_labels(self) -> dict[str, list[str]]:
        """axis -> the labels of its values."""
        return {path: axis.labels for path, axis in self.axes.items()}


def _cell_ids(n: int) -> list[str]:
    width = max(3, len(str(n - 1)))
    return [f"c{i:0{width}d}" for i in range(n)]


#: The most cells a study may expand to: far beyond what can be trained, small
#: enough that validating them all stays within seconds to minutes.
MAX_CELLS = 10_000


def _read_spec(path: Path, overrides: Sequence[str]) -> tuple[StudySpec, list[str]]:
    """The validated ``study:`` mapping with the ``study.`` overrides applied,
    and the scenario overrides (every other key)."""
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
        raise InputError(format_validation_error(exc, raw, str(path), StudyFile,
                                                 sort_keys=False)) from None
    return spec, scenario_sets


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
    spec, scenario_sets = _read_spec(path, overrides)
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
        _set_path(base_raw, paths.check_key_path(key, base_raw, f"{path}: study.set.{key}"), value,
                  f"{path}: study.set.{key}")
    sets = "study.set and --set" if scenario_sets else "study.set"
    base = config.from_dict(base_raw, source=f"{base_path} (with {path}: {sets})")

    axes: dict[str, Axis] = {}
    parts: dict[str, list[str]] = {}
    for name, values in spec.axes.items():
        where = f"{path}: study.axes.{name}"
        if name == "seed" and spec.seeds is not None:
            raise InputError(f"{where}: 'seed' is an axis and study.seeds is given; use one of them")
        parts[name] = paths.check_key_path(name, base_raw, where)
        if isinstance(values, AxisRange):
            expanded, labels = expand_range(values, where)
        else:
            expanded, labels = list(values), [label(v) for v in values]
        if name in spec.set:
            raise InputError(f"{where}: the key is also in study.set; remove it from one of them")
        quantity, unit = axis_quantity(values, parts[name], where)
        axes[name] = Axis(name, expanded, labels, quantity, unit, spec.axis_titles.get(name, name))

    cells = _expand_cells(path, spec, axes, parts, base_raw)
    # data files (data.npz, an external partition) absolute and checked, as a run sees
    # them, so the planner keys cells as the pipeline does
    cells = [dataclasses.replace(c, scenario=resolve_data_files(c.scenario, base_path.parent))
             for c in cells]
    return Study(spec.name, spec.description, path, base_path, spec, axes, base, cells)


def _expand_cells(path: Path, spec: StudySpec, axes: Mapping[str, Axis],
                  parts: Mapping[str, list[str]], base_raw: Mapping[str, Any]) -> list[Cell]:
    """Every cell of the study (grid or zip, seeds innermost), validated.

    Raises:
        InputError: see `load`.
    """
    names = list(axes)
    seeds: list[int | None] = list(spec.seeds) if spec.seeds is not None else [None]
    sizes = [len(axes[a].values) for a in names]
    count = len(seeds) * (sizes[0] if spec.mode == "zip" else math.prod(sizes))
    if count > MAX_CELLS:
        raise InputError(f"{path}: study.axes: {count:,} cells (with seeds) exceed the {MAX_CELLS:,} "
                         "a study may have; split it or use fewer values")
    if spec.mode == "zip":
        lengths = {a: len(axes[a].values) for a in names}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{a}: {n}" for a, n in lengths.items())
            raise InputError(f"{path}: study.mode zip needs axes of equal length; got {listed}")
        combos = [tuple([i] * len(names)) for i in range(sizes[0])]
    else:
        combos = list(itertools.product(*(range(n) for n in sizes)))

    specs = [(combo, seed) for combo in combos for seed in seeds]
    ids = _cell_ids(len(specs))
    cells: list[Cell] = []
    for index, ((combo, seed), cell_id) in enumerate(zip(specs, ids, strict=True)):
        cell_raw = copy.deepcopy(dict(base_raw))
        values = {a: axes[a].values[i] for a, i in zip(names, combo, strict=True)}
        labels = {a: axes[a].labels[i] for a, i in zip(names, combo, strict=True)}
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
        found = [numeric(paths.get_path(c.scenario, parts[axis])) for c in cells]
        if all(v is not None for v in found):
            numbers[axis] = [float(v) for v in found]  # type: ignore[arg-type]
        else:
            position = {label(v): float(i) for i, v in enumerate(axes[axis].values)}
            numbers[axis] = [position.get(label(c.values[axis]), math.nan) for c in cells]
    return [Cell(c.id, c.index, c.values, {a: numbers[a][k] for a in names}, c.labels, c.seed,
                 c.scenario) for k, c in enumerate(cells)]
