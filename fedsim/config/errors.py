"""The one formatter of validation errors, for scenarios and study files alike.

pydantic reports a problem at a location such as ``('system', 'clients',
'uplink', 'function-after[...]')``; the user wrote ``system.clients.uplink``.
`format_validation_error` maps every location onto the keys that exist in the
user's input, and writes one line per problem::

    scenarios/mobile.yaml: system.clients.uplink: '-3 Mbps' must be > 0
    study.yaml: study.axis: unknown key 'axis'; valid keys here: name, description, ...

An unknown key lists the valid keys of its level, found by walking the schema
(`fedsim.config.paths`); a bad value is quoted (cut: `fedsim.errors.quote`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from fedsim.config.paths import child_annotation, valid_keys
from fedsim.config.schema import Scenario
from fedsim.errors import quote

#: Longest message of one problem (characters), a bound on quoted input.
MAX_MESSAGE_CHARS = 400


def input_path(loc: tuple[Any, ...], raw: Any) -> tuple[list[str], Any]:
    """Map a pydantic error location onto keys that exist in the user's input
    (list positions as ``[i]``), and the input value found there: union tags
    and validator names in ``loc`` that are not input keys are dropped."""
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


def _unknown_key_hint(keys: list[str], schema: Any, sort_keys: bool) -> str:
    """``; valid keys here: ...`` for an unknown key at ``keys``, or "" where
    that level takes free labels."""
    annotation: Any = schema
    for key in keys[:-1]:
        annotation = child_annotation(annotation, key.strip("[]") if key.startswith("[") else key)
        if annotation is None:
            return ""
    valid = valid_keys(annotation)
    if not valid:
        return ""
    return f"; valid keys here: {', '.join(sorted(valid) if sort_keys else valid)}"


def format_validation_error(exc: ValidationError, raw: Any, source: str, schema: Any = Scenario,
                            *, sort_keys: bool = True) -> str:
    """One line per problem (each once): ``source: key.path: message``.

    Args:
        exc: what ``schema.model_validate(raw)`` raised.
        raw: the mapping that was validated (the user's keys).
        source: names the input in every line (a file, a study cell).
        schema: the model validated, whose fields an unknown key's hint lists
            (`Scenario`; a study file's own schema for its ``study:`` keys).
        sort_keys: list valid keys sorted (scenarios), or in schema order
            (study files, whose first keys are the important ones).

    A value error is followed by ``(got <value>)`` unless the message quotes
    the value already or the value is a mapping, and is cut to
    `MAX_MESSAGE_CHARS`; a model-level check that names its own key (``key:
    message``) is not prefixed with ``(top level)``.
    """
    lines: dict[str, None] = {}
    for error in exc.errors():
        loc = tuple(error["loc"])
        keys, value = input_path(loc, raw)
        dotted = ".".join(keys).replace(".[", "[") or "(top level)"
        kind = error["type"]
        if kind == "extra_forbidden":
            hint = _unknown_key_hint(keys, schema, sort_keys)
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
        lines[line] = None
    return "\n".join(lines)
