"""The scenario: schema, strict YAML loading, ``--set`` overrides, resolution.

A scenario file is validated once, here, at the edge. Every section is a frozen
pydantic model that forbids unknown keys; each domain owns its section's schema
(``fedsim.data.spec``, ``fedsim.learn.spec``, ``fedsim.system.spec``) and this
module composes them. Errors become :class:`fedsim.errors.InputError` messages
that name the file, the dotted key path, the bad value and what was expected::

    scenarios/mobile.yaml: system.clients.uplink: value must be > 0 (got '-3 Mbps')

After loading, code trusts the config and never re-checks it.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from fedsim.data.spec import DataConfig
from fedsim.errors import InputError
from fedsim.learn.spec import FLConfig, MethodConfig, ModelConfig, PretrainConfig
from fedsim.schema import Section
from fedsim.system.spec import SystemConfig


class RoundsConfig(Section):
    """How many FL rounds to train, and when to checkpoint."""

    max: int = Field(3000, ge=1, description="rounds to train per method")
    stop_when_reached: bool = Field(
        False, description="stop a method early once it has reached every target")
    checkpoint_every: int = Field(50, ge=1, description="save the global model every N rounds")


class ReportConfig(Section):
    """What the report contains."""

    formats: list[Literal["png", "pdf"]] = Field(default_factory=lambda: ["png", "pdf"])
    gantt_rounds: list[int] | None = Field(
        None, description="rounds shown in the Gantt figure (default: first and last)")
    reference: Literal["none", "paper"] = Field(
        "none", description="'paper': print the HP-FL paper's Table I/II values beside fedsim's")


class Scenario(Section):
    """A whole scenario: what to train, on which system, and what to report."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="used as the default output directory reports/<name>/")
    description: str = ""
    seed: int = Field(0, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    fl: FLConfig = Field(default_factory=FLConfig)
    methods: dict[str, MethodConfig] = Field(min_length=1)
    system: SystemConfig = Field(default_factory=SystemConfig)
    targets: list[float] = Field(default_factory=lambda: [0.95], min_length=1)
    rounds: RoundsConfig = Field(default_factory=RoundsConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    report: ReportConfig = Field(default_factory=ReportConfig)

    @model_validator(mode="before")
    @classmethod
    def _method_kind_defaults_to_label(cls, raw: Any) -> Any:
        """``methods: {hp-fl: {remaining_rate: 0.1}}`` means kind hp-fl; a label
        that is not a method kind (``hp-fl-0.41``) must give ``kind``."""
        if isinstance(raw, Mapping) and isinstance(raw.get("methods"), Mapping):
            methods = {}
            for label, settings in raw["methods"].items():
                if settings is None:
                    settings = {}
                if isinstance(settings, Mapping) and "kind" not in settings:
                    settings = {"kind": label, **settings}
                methods[label] = settings
            raw = {**raw, "methods": methods}
        return raw

    @model_validator(mode="after")
    def _methods_fit_pretraining(self) -> Scenario:
        """A pruning method's rate must match a level the pre-training makes."""
        from fedsim.learn.methods import required_iterations

        for label, method in self.methods.items():
            try:
                required_iterations(method, self.pretrain)
            except ValueError as exc:
                raise ValueError(f"methods.{label}.remaining_rate: {exc}") from None
        return self

    @field_validator("targets")
    @classmethod
    def _targets_are_accuracies(cls, targets: list[float]) -> list[float]:
        for target in targets:
            if not 0.0 < target <= 1.0:
                raise ValueError(f"target accuracy {target!r} must be in (0, 1] (e.g. 0.95 for 95 %)")
        return sorted(set(targets))


# --------------------------------------------------------------------------- loading


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file, turning I/O and syntax errors into InputError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read scenario file ({exc.strerror})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{path}:{where}: invalid YAML: {problem}") from exc


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a","b","c"], value); the value is YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise InputError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. system.clients.uplink='2 Mbps'")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise InputError(f"--set {text!r}: value is not valid YAML ({exc})") from exc
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key.path=value`` set (creating
    intermediate mappings). Unknown keys are caught by validation afterwards."""
    import copy

    result = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise InputError(f"--set {text!r}: {where} is a value ({child!r}), not a section")
            node = child
        node[path[-1]] = value
    return result


def load(path: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Load, override and validate a scenario file.

    Raises:
        InputError: unreadable file, invalid YAML, or a schema error; the message
            names the file, the dotted key path, the value and the expectation.
    """
    path = Path(path)
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a scenario must be a mapping of keys, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    raw.setdefault("name", path.stem)
    return from_dict(raw, source=str(path))


def from_dict(raw: Mapping[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate a scenario given as a mapping; ``source`` names it in errors."""
    try:
        return Scenario.model_validate(dict(raw))
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, raw, source)) from None


def select_methods(scenario: Scenario, labels: Sequence[str]) -> Scenario:
    """The scenario restricted to ``labels`` (``--methods a,b``)."""
    unknown = [label for label in labels if label not in scenario.methods]
    if unknown:
        raise InputError(f"--methods: unknown method(s) {', '.join(unknown)}; "
                         f"this scenario has: {', '.join(scenario.methods)}")
    methods = {label: scenario.methods[label] for label in labels}
    return scenario.model_copy(update={"methods": methods})


# --------------------------------------------------------------------------- errors


def annotation_keys(annotation: Any) -> set[str] | None:
    """The keys a mapping of this annotation (a section model, a union of them)
    may hold, or None if free-form (e.g. ``methods``' user labels)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return annotation_keys(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        keys: set[str] = set()
        for arg in typing.get_args(annotation):
            member = annotation_keys(arg)
            if member:
                keys |= member
        return keys or None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return set(annotation.model_fields)
    return None


def child_annotation(annotation: Any, key: str) -> Any:
    """The annotation of ``key`` inside ``annotation`` (None if there is none)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return child_annotation(typing.get_args(annotation)[0], key)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            child = child_annotation(arg, key)
            if child is not None:
                return child
        return None
    if origin is dict:
        return typing.get_args(annotation)[1]
    if origin is list:
        return typing.get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(key)
        return field.annotation if field else None
    return None


def _input_path(loc: tuple[Any, ...], raw: Any) -> tuple[list[str], Any]:
    """Map a pydantic error location onto keys that exist in the user's input:
    union tags and validator names in ``loc`` that are not input keys are dropped."""
    keys: list[str] = []
    node = raw
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            keys.append(str(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            keys.append(f"[{part}]")
            node = node[part]
    return keys, node


def format_validation_error(exc: ValidationError, raw: Any, source: str) -> str:
    """One line per problem: ``source: key.path: message (got value)``."""
    lines = []
    seen = set()
    for error in exc.errors():
        loc = tuple(error["loc"])
        keys, value = _input_path(loc, raw)
        dotted = ".".join(keys).replace(".[", "[") or "(top level)"
        kind = error["type"]
        if kind == "extra_forbidden":
            parent_keys = keys[:-1] if keys else []
            annotation: Any = Scenario
            for key in parent_keys:
                annotation = child_annotation(annotation, key.strip("[]") if key.startswith("[") else key)
            valid = annotation_keys(annotation) if annotation is not None else None
            hint = f"; valid keys here: {', '.join(sorted(valid))}" if valid else ""
            message = f"unknown key '{keys[-1] if keys else loc[-1]}'{hint}"
        elif kind == "missing":
            message = f"required key '{loc[-1]}' is missing"
            dotted = ".".join([*keys, str(loc[-1])])
        else:
            message = error["msg"].removeprefix("Value error, ")
            if not isinstance(value, Mapping) and repr(value) not in message:
                message += f" (got {value!r})"
        if not keys and re.match(r"^[\w.-]+: ", message):
            line = f"{source}: {message}"  # a model-level check that names its own key
        else:
            line = f"{source}: {dotted}: {message}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------- output


def to_plain(value: Any) -> Any:
    """A YAML-safe view of a dumped config: inf/nan as strings, paths as str."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="python")
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, Path):
        return str(value)
    return value


def resolved_yaml(scenario: Scenario) -> str:
    """The scenario with every default filled in, as YAML (scenario.resolved.yaml)."""
    return yaml.safe_dump(to_plain(scenario), sort_keys=False, allow_unicode=True)


def section_key(section: BaseModel) -> Any:
    """The canonical, default-free content of a section, for cache keys: values
    equal to their defaults are left out, so adding a setting with a default
    does not invalidate earlier results (open_lth's habit)."""
    return to_plain(section.model_dump(mode="python", exclude_defaults=True))


_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(text: str) -> str:
    """A file-name-safe form of a label."""
    return _SLUG.sub("_", text).strip("_") or "x"
