"""Plain forms of a validated config: YAML-safe values, the resolved YAML,
cache-key content, file-name slugs.

`section_key` decides what every cache key contains (existing cache entries
depend on its exact output: tests/test_config_paths.py pins it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_origin

import yaml
from pydantic import BaseModel

if TYPE_CHECKING:
    from fedsim.config.schema import Scenario


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
    does not invalidate earlier results (open_lth's habit).

    One exception: a sub-section of another class than its field's default (an
    ``iid`` partition where ``shards`` is the default, a ``lognormal`` link where
    a constant is) keeps its discriminator (``scheme``, ``dist``, ``kind``),
    which is always its class's default and would otherwise be left out: without
    it, two schemes with equal other settings would share one key."""
    dumped = section.model_dump(mode="python", exclude_defaults=True)
    return to_plain(_with_discriminators(section, dumped))


def _with_discriminators(model: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if not isinstance(value, BaseModel):
            continue
        sub = dumped.get(name)
        if sub is None:
            continue  # equal to its default: left out whole
        default = field.get_default(call_default_factory=True)
        if type(default) is not type(value):
            literals = {f: getattr(value, f) for f, info in type(value).model_fields.items()
                        if get_origin(info.annotation) is Literal}
            sub = {**literals, **sub}
        dumped[name] = _with_discriminators(value, sub)
    return dumped


_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(text: str) -> str:
    """A file-name-safe form of a label."""
    return _SLUG.sub("_", text).strip("_") or "x"
