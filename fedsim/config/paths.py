"""Dotted key paths (``system.clients.uplink``): check, get and set them.

One implementation serves the scenario's ``--set key.path=value`` and a
study's ``set`` and ``axes`` keys. A path is checked against a schema (a
section model, `fedsim.config.schema.Scenario` unless told otherwise) by
walking its annotations: `valid_keys` lists the keys a level may hold,
`child_annotation` steps one key down. A mapping of free labels
(``methods: {hp-fl: ...}``) takes any label; every other level takes its
model's fields only.
"""

from __future__ import annotations

import copy
import re
import types
import typing
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from pydantic import BaseModel

from fedsim.config.schema import Scenario
from fedsim.errors import InputError


def valid_keys(annotation: Any) -> list[str] | None:
    """The keys a mapping of this annotation (a section model, a union of
    them) may hold, in schema order (a union: its members' keys in turn,
    each once), or None if free-form (e.g. ``methods``' user labels)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return valid_keys(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        keys: dict[str, None] = {}
        for arg in typing.get_args(annotation):
            keys.update(dict.fromkeys(valid_keys(arg) or ()))
        return list(keys) or None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return None


def annotation_keys(annotation: Any) -> set[str] | None:
    """`valid_keys` as a set (None if free-form)."""
    keys = valid_keys(annotation)
    return None if keys is None else set(keys)


def child_annotation(annotation: Any, key: str) -> Any:
    """The annotation of ``key`` inside ``annotation`` (None if there is none).

    Any key of a ``dict[str, X]`` gives X; a list gives its item type for an
    index only (an int, or its digits: ``"0"``), so that a union of a list and
    a model (a study axis: values or a range) resolves a key to the model.
    """
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
        is_index = isinstance(key, int) or (isinstance(key, str) and key.isdigit())
        return typing.get_args(annotation)[0] if is_index else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(key)
        return field.annotation if field else None
    return None


def _is_mapping_of_labels(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        return _is_mapping_of_labels(typing.get_args(annotation)[0])
    return typing.get_origin(annotation) is dict


def split_key_path(path: str) -> list[str]:
    """The parts of a dotted key path: ``system.clients.uplink`` ->
    ``["system", "clients", "uplink"]``. A part in double quotes may hold
    dots, for a label such as ``methods."hp-fl-0.41".remaining_rate``.

    Returns [] for a path that is not one: empty, an empty part
    (``a..b``), or an unclosed quote.
    """
    parts = re.findall(r'"([^"]*)"|([^."]+)', path)
    rebuilt = ".".join(f'"{q}"' if q else p for q, p in parts)
    if not path or rebuilt != path or any(not (q or p) for q, p in parts):
        return []
    return [q or p for q, p in parts]


def check_key_path(path: str, base: Mapping[str, Any], where: str, schema: Any = Scenario) -> list[str]:
    """Check that ``path`` (``system.clients.uplink``) names a key of ``schema``
    and return its parts. Under a mapping of labels (``methods``) the next part
    is a label: a deeper key (``methods.hp-fl.remaining_rate``) needs ``base``
    (the raw mapping the path will be set in) to have that label; a whole
    ``methods.<label>`` may be new.

    Args:
        where: prefixes every message (a file and the key it came from).

    Raises:
        InputError: not a dotted path, an unknown key (the message lists the
            valid keys at that level), a missing label, or a key under a plain
            value.
    """
    parts = split_key_path(path)
    if not parts:
        raise InputError(f"{where}: {path!r} is not a dotted key path such as system.clients.uplink "
                         f'(a label with dots in double quotes: methods."hp-fl-0.41".level)')
    annotation: Any = schema
    node: Any = base
    for i, part in enumerate(parts):
        prefix = ".".join(parts[:i])
        fields = annotation_keys(annotation)
        if fields is not None:
            if part not in fields:
                level = f"under {prefix}" if prefix else "at the top level"
                raise InputError(f"{where}: unknown key {part!r} {level}; valid keys: "
                                 f"{', '.join(sorted(fields))}")
            annotation = child_annotation(annotation, part)
        elif _is_mapping_of_labels(annotation):
            labels = list(node) if isinstance(node, Mapping) else []
            if i < len(parts) - 1 and part not in labels:
                raise InputError(
                    f"{where}: the base scenario has no {prefix} entry {part!r} (it has: "
                    f"{', '.join(labels) or 'none'}); add it to the base, or set the whole "
                    f"{prefix}.{part} mapping")
            annotation = child_annotation(annotation, part)
        else:
            raise InputError(f"{where}: {prefix} is a value, not a section; it has no key {part!r}")
        node = node.get(part) if isinstance(node, Mapping) else None
    return parts


class NotASectionError(ValueError):
    """`set_path` met a plain value where the path needs a mapping.

    Attributes:
        prefix: the dotted path of that value (``system.clients.uplink``).
        value: the value found there.
    """

    def __init__(self, prefix: str, value: Any) -> None:
        super().__init__(f"{prefix} is a value ({value!r}), not a section")
        self.prefix = prefix
        self.value = value


def set_path(raw: MutableMapping[str, Any], parts: Sequence[str], value: Any) -> None:
    """Set ``raw[parts[0]][parts[1]]... = value`` in place (a deep copy of
    ``value``, so that one value set in several mappings is not shared),
    creating a mapping for every missing or null key on the way.

    Raises:
        NotASectionError: a key on the way holds a plain value (callers turn it
            into an `InputError` that says where the path came from).
    """
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise NotASectionError(".".join(parts[: i + 1]), child)
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def get_path(obj: Any, parts: Sequence[str]) -> Any:
    """The value at ``parts`` in a mapping or a model (None where a key is missing)."""
    for part in parts:
        obj = obj.get(part) if isinstance(obj, Mapping) else getattr(obj, part, None)
    return obj
