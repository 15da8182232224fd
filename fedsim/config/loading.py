"""Reading scenario files: strict YAML, ``--set`` overrides, validation.

Files are read defensively (`read_yaml`): a regular UTF-8 file of at most
`MAX_FILE_BYTES`, no duplicate keys, at most `MAX_DEPTH` levels of nesting and
`MAX_NODES` values with aliases expanded; quoted values are cut
(`fedsim.errors.quote`). Schema errors become `fedsim.errors.InputError`
messages that name the file, the dotted key path, the bad value and what was
expected (`fedsim.config.errors.format_validation_error`).
"""

from __future__ import annotations

import copy
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fedsim.config.errors import format_validation_error
from fedsim.config.paths import NotASectionError, set_path, split_key_path
from fedsim.config.schema import Scenario
from fedsim.errors import InputError, quote

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
    """Split ``a.b.c=value`` into (["a","b","c"], value); the value is YAML.
    A key part in double quotes may hold dots (`fedsim.config.paths.split_key_path`)."""
    key, sep, value = text.partition("=")
    parts = split_key_path(key.strip())
    if not sep or not parts:
        raise InputError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. system.clients.uplink='2 Mbps' "
                         f'(a label with dots in double quotes: methods."hp-fl-0.41".level=4)')
    try:
        parsed = yaml.load(value, Loader=_StrictLoader) if value.strip() else None
    except yaml.YAMLError as exc:
        raise InputError(f"--set {text!r}: value is not valid YAML ({exc})") from exc
    return parts, parsed


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key.path=value`` set (creating
    intermediate mappings). Unknown keys are caught by validation afterwards.

    Raises:
        InputError: an override that is not ``KEY.PATH=VALUE`` (`parse_override`),
            or whose path runs through a plain value.
    """
    result = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        try:
            set_path(result, path, value)
        except NotASectionError as exc:
            raise InputError(f"--set {text!r}: {exc}") from None
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
