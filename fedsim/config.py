"""The scenario: schema, strict YAML loading, ``--set`` overrides, resolution.

A scenario file is validated once, here, at the edge. Every section is a frozen
pydantic model that forbids unknown keys; each domain owns its section's schema
(``fedsim.data.spec``, ``fedsim.learn.spec``, ``fedsim.system.spec``) and this
module composes them. Errors become :class:`fedsim.errors.InputError` messages
that name the file, the dotted key path, the bad value and what was expected::

    scenarios/mobile.yaml: system.clients.uplink: value must be > 0 (got '-3 Mbps')

Files are read defensively (`read_yaml`): a regular UTF-8 file of at most
`MAX_FILE_BYTES`, no duplicate keys, at most `MAX_DEPTH` levels of nesting and
`MAX_NODES` values with aliases expanded; quoted values are cut
(`fedsim.errors.quote`). Checks across sections refuse scenarios in which
nothing could ever train (`fastest_round_s`).

After loading, code trusts the config and never re-checks it.
"""

from __future__ import annotations

import math
import os
import re
import stat
import tempfile
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from fedsim.data.spec import DataConfig
from fedsim.errors import InputError, quote
from fedsim.learn.spec import FLConfig, MethodConfig, ModelConfig, PretrainConfig
from fedsim.schema import Section
from fedsim.system.spec import SystemConfig

#: Longest scenario or study name: a file name of its own (reports/<name>/, and a
#: study's cells are named <study>.c000) within the 255 bytes that Linux, macOS
#: and Windows file systems allow for one path component.
MAX_NAME_CHARS = 200


class RoundsConfig(Section):
    """How many FL rounds to train, and when to checkpoint."""

    max: int = Field(3000, ge=1, description="rounds to train per method")
    stop_when_reached: bool = Field(
        False, description="stop a method early once it has reached every target")
    checkpoint_every: int = Field(50, ge=1, description="save the global model every N rounds")


class ReportConfig(Section):
    """What the report contains."""

    formats: list[Literal["png", "pdf", "svg"]] = Field(default_factory=lambda: ["png", "pdf"])
    gantt_rounds: Annotated[list[Annotated[int, Field(strict=True, ge=1)]], Field(min_length=1)] | None = Field(
        None, description="rounds shown in the Gantt figure (default: first and last); "
                          "each <= rounds.max")
    reference: Literal["none", "paper"] = Field(
        "none", description="'paper': print the HP-FL paper's Table I/II values beside fedsim's")


class Scenario(Section):
    """A whole scenario: what to train, on which system, and what to report."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_NAME_CHARS,
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
        """A pruning method's level or rate must be one that ``pretrain.iterations``
        makes, and a method that needs pre-training needs unlabeled data."""
        from fedsim.learn.methods import required_iterations

        for label, method in self.methods.items():
            key = next((f"methods.{label}.{name}" for name in ("level", "remaining_rate")
                        if getattr(method, name) is not None), f"methods.{label}")
            try:
                needed = required_iterations(method, self.pretrain)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
            if needed > 0 and self.data.unlabeled == 0:
                raise ValueError(f"methods.{label}: method {method.kind!r} pre-trains on the "
                                 "unlabeled pool, but data.unlabeled is 0")
        return self

    @model_validator(mode="after")
    def _gantt_rounds_run(self) -> Scenario:
        late = [r for r in self.report.gantt_rounds or () if r > self.rounds.max]
        if late:
            raise ValueError(f"report.gantt_rounds: round {late[0]} is beyond rounds.max "
                             f"{self.rounds.max}")
        return self

    @model_validator(mode="after")
    def _deadline_leaves_time(self) -> Scenario:
        """A deadline shorter than the fastest possible round of every method
        means that no update can ever arrive (see `fastest_round_s`)."""
        deadline = self.system.rounds.deadline
        if deadline is None or self.system.clients.trace is not None:
            return self  # a trace's links are read at run time
        fastest = min((fastest_round_s(self, label) for label in self.methods), key=lambda f: f[0])
        if deadline < fastest[0]:
            raise ValueError(f"system.rounds.deadline: {deadline:g} s is shorter than the fastest "
                             f"possible round of any method ({fastest[1]}); no update could "
                             "ever arrive in time")
        return self

    @field_validator("targets")
    @classmethod
    def _targets_are_accuracies(cls, targets: list[float]) -> list[float]:
        for target in targets:
            if not 0.0 < target <= 1.0:
                raise ValueError(f"target accuracy {target!r} must be in (0, 1] (e.g. 0.95 for 95 %)")
        return sorted(set(targets))


def fastest_round_s(scenario: Scenario, label: str) -> tuple[float, str]:
    """A lower bound (seconds) on any client's round in method ``label``, and
    how it was found: the smallest RTT a client can draw (half before the
    model arrives, half before the update does) plus a download and an upload
    of the method's payload after round 1 at the fastest rate a client's link
    can draw, capped by the server's link. Computation counts as 0 (a client's
    speed may be unbounded). A global-pruning method's survivors are unknown
    before training and count as 0 (biases and the mask encoding only).

    Raises:
        ValueError: as `fedsim.learn.methods.required_iterations` (a level or
            rate that the pre-training does not make).
    """
    from fedsim.learn.masks import level_counts
    from fedsim.learn.methods import get, required_iterations
    from fedsim.learn.model import LENET_SIZES, layer_shapes
    from fedsim.learn.pretrain import iter_level_counts
    from fedsim.system.payload import payload_bytes
    from fedsim.system.spec import draw_range

    method = scenario.methods[label]
    shapes = layer_shapes(LENET_SIZES)
    weights = level_counts(shapes, scenario.pretrain.prune_fraction, 0)
    surviving = weights
    if get(method.kind).pruned:
        level = required_iterations(method, scenario.pretrain)
        surviving = tuple(0 for _ in weights)
        if scenario.pretrain.scope == "layerwise":
            for k, counts in enumerate(iter_level_counts(scenario.pretrain)):
                if k == level or counts == surviving:  # surviving: the last level's counts
                    surviving = counts
                    break
                surviving = counts
    system = scenario.system
    payload = payload_bytes(weights, surviving, sum(LENET_SIZES[1:]), system.payload)
    down_bps = min(draw_range(system.clients.downlink, "downlink")[1], system.server.downlink)
    up_bps = min(draw_range(system.clients.uplink, "uplink")[1], system.server.uplink)
    rtt_s = draw_range(system.clients.rtt, "rtt")[0]
    seconds = rtt_s + 8 * payload.down_bytes / down_bps + 8 * payload.up_bytes / up_bps
    how = (f"{label}: {payload.down_bytes:,} B down at {down_bps / 1e6:g} Mbps, "
           f"{payload.up_bytes:,} B up at {up_bps / 1e6:g} Mbps, RTT {rtt_s * 1e3:g} ms: "
           f"{seconds:.3g} s")
    return seconds, how


# --------------------------------------------------------------------------- loading


#: The largest scenario or study file read (bytes): far above any real one (a
#: few KB), small enough that endless input (/dev/zero) or a huge file fails fast.
MAX_FILE_BYTES = 1 << 20
#: The deepest nesting of mappings and sequences accepted (a scenario needs 5).
MAX_DEPTH = 32
#: The most nodes a document may hold with every alias expanded: a "billion
#: laughs" bomb (9 levels of 10 aliases) would expand to 10^9.
MAX_NODES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys (the last one would
    silently win), nesting deeper than `MAX_DEPTH` (the composer recurses) and
    documents that expand to more than `MAX_NODES` nodes or loop on themselves."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Any) -> Any:
        _count_nodes(node, {}, set())
        return super().construct_document(node)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *base" may be overridden by explicit keys
                key = self.construct_object(key_node, deep=True)
                try:
                    line = first_line.get(key)
                except TypeError:
                    continue  # unhashable: PyYAML reports it below
                if line is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {quote(key)} (first on line {line}); "
                        "the last would silently win", key_node.start_mark)
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _count_nodes(node: Any, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Nodes under ``node`` with every alias expanded (each shared node counted
    once per use, computed once); raises ComposerError past `MAX_NODES` or on a
    node that contains itself."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    if id(node) in open_nodes:
        raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it",
                                          node.start_mark)
    total = 1
    if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
        open_nodes.add(id(node))
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [child for pair in node.value for child in pair]
        for child in children:
            total += _count_nodes(child, sizes, open_nodes)
            if total > MAX_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"the document expands to more than {MAX_NODES:,} values "
                    "(aliases counted at every use)", node.start_mark)
        open_nodes.discard(id(node))
    sizes[id(node)] = total
    return total


def read_text(path: str | Path, what: str = "scenario file") -> str:
    """The text of a regular, UTF-8 file of at most `MAX_FILE_BYTES` bytes.

    Raises:
        InputError: the path is missing, unreadable, a directory, a FIFO or a
            device, larger than `MAX_FILE_BYTES`, or not UTF-8; the message names
            the path and ``what`` was expected.
    """
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what} ({exc.strerror})") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
            raise InputError(f"{path}: is {kind}; expected a {what} (YAML)")
        chunks, size = [], 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what} ({exc.strerror})") from exc
    finally:
        os.close(fd)
    if size > MAX_FILE_BYTES:
        raise InputError(f"{path}: larger than {MAX_FILE_BYTES:,} bytes; a {what} is a few KB of YAML")
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start}); save the {what} as UTF-8") from None


def read_yaml(path: str | Path, what: str = "scenario file") -> Any:
    """Parse a YAML file read by `read_text`, refusing duplicate keys, deep
    nesting and alias bombs (see `_StrictLoader`).

    Raises:
        InputError: as `read_text`, or invalid YAML (naming the line and column).
    """
    path = Path(path)
    text = read_text(path, what)
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{path}:{where} invalid YAML: {problem}") from exc
    except RecursionError:  # a last resort: MAX_DEPTH stops nesting long before
        raise InputError(f"{path}: invalid YAML: nested too deeply") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a","b","c"], value); the value is YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise InputError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. system.clients.uplink='2 Mbps'")
    try:
        parsed = yaml.load(value, Loader=_StrictLoader) if value.strip() else None
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
    if "study" in raw:
        raise InputError(f"{path}: is a study file (top-level 'study' key); run it with "
                         f"`fedsim sweep {path}`")
    raw = apply_overrides(raw, overrides)
    raw.setdefault("name", path.stem)
    return from_dict(raw, source=str(path))


def from_dict(raw: Mapping[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate a scenario given as a mapping; ``source`` names it in errors."""
    try:
        return Scenario.model_validate(dict(raw))
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, raw, source)) from None


def check_output_dir(path: str | Path) -> None:
    """Check, before anything runs, that a report can be written into ``path``:
    it is a directory or can be created as one, a file can be created in it (or
    in its nearest existing parent; the probe file is removed at once), and no
    part of it is too long a file name.

    Raises:
        InputError: ``path`` (or the nearest existing parent) is a file, or not
            writable, or a component exceeds the file system's name limit.
    """
    path = Path(path)
    existing = path

    def exists(candidate: Path) -> bool:
        try:
            return candidate.exists()
        except OSError:  # e.g. a name too long: reported below
            return False

    while not exists(existing) and existing != existing.parent:
        existing = existing.parent
    try:
        name_max = os.pathconf(existing if existing.is_dir() else existing.parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    for part in path.parts:
        if len(part.encode()) > name_max:
            raise InputError(f"--out {quote(str(path))}: the name {quote(part)} is longer than the "
                             f"{name_max} bytes the file system allows")
    if not existing.is_dir():
        raise InputError(f"--out {quote(str(path))}: {existing} is a file, not a directory")
    try:  # a real probe: permission bits say nothing of a read-only mount, or to root
        fd, probe = tempfile.mkstemp(prefix=".fedsim-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"--out {quote(str(path))}: cannot write in {existing} "
                         f"({exc.strerror})") from None


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


#: Longest message of one problem (characters), a bound on quoted input.
MAX_MESSAGE_CHARS = 400


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
                message += f" (got {quote(value)})"
            if len(message) > MAX_MESSAGE_CHARS:  # a check that quoted a huge value in full
                message = message[: MAX_MESSAGE_CHARS - 1] + "… (cut)"
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
