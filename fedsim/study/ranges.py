"""The values of a study axis: ranges, labels, numbers and the quantity an axis sets.

An axis is a list of values or a ``geometric`` / ``linear`` range whose
endpoints may carry a unit ("0.5 Mbps", "50 ms", "1 MB"); a range's values go to
the scenario in SI units (bit/s, s, bytes) and are labelled in the start's
unit. `axis_quantity` says which kind of quantity an axis sets, from the unit
the user wrote or, failing that, from the scenario field it sets: the report
learns the link-speed axis from it instead of guessing from the axis' name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import yaml
from pydantic import Field, model_validator

from fedsim import units
from fedsim.errors import InputError, quote
from fedsim.schema import Section

#: The kinds of quantity an axis may set (`fedsim.units` parses each).
Quantity = Literal["bandwidth", "duration", "size"]
QUANTITIES: tuple[Quantity, ...] = ("bandwidth", "duration", "size")

#: The SI unit of each quantity: what the values of such an axis are in.
SI_UNITS: dict[Quantity, str] = {"bandwidth": "bit/s", "duration": "s", "size": "B"}


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


_QUANTITY = re.compile(r"^\s*[+-]?(?:\d+(?:_\d+)*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*(?P<unit>\S.*?)?\s*$")


@dataclass(frozen=True)
class Endpoint:
    """A value written by the user, in SI units, with the unit it was written in.

    Attributes:
        si: the value in SI units (bit/s, s, bytes; the number itself without unit).
        unit: the unit as written ("Mbps"), None for a bare number.
        unit_si: the SI value of 1 ``unit`` (1e6 for Mbps; 1.0 without unit).
        kind: the quantity of ``unit``, None for a bare number.
    """

    si: float
    unit: str | None
    unit_si: float
    kind: Quantity | None


def parse_endpoint(raw: float | str, where: str) -> Endpoint:
    """Parse a number, or a number with a bandwidth, duration or size unit
    (``fedsim.units``).

    Raises:
        InputError: not a number or a quantity, an unknown unit, or not finite
            (``where`` prefixes the message).
    """
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return _finite(Endpoint(float(raw), None, 1.0, None), raw, where)
    match = _QUANTITY.match(str(raw))
    if match is None:
        raise InputError(f"{where}: {quote(raw)} is not a number or a quantity like '0.5 Mbps'")
    unit = match.group("unit")
    if unit is None:
        return _finite(Endpoint(float(str(raw).replace("_", "")), None, 1.0, None), raw, where)
    for kind in QUANTITIES:
        try:
            value = units.parse_quantity(str(raw), kind)
            unit_si = units.parse_quantity(f"1 {unit}", kind)
        except ValueError:
            continue
        return _finite(Endpoint(value, unit, unit_si, kind), raw, where)
    raise InputError(f"{where}: {quote(raw)} has an unknown unit {unit!r}; units: bandwidth "
                     "(bps, kbps, Mbps, Gbps), duration (us, ms, s, min, h), size (B, kB, MB, GB)")


def _finite(endpoint: Endpoint, raw: float | str, where: str) -> Endpoint:
    """``endpoint``, if finite: a range through infinity has no values."""
    if not math.isfinite(endpoint.si):
        raise InputError(f"{where}: {quote(raw)} is not a finite number")
    return endpoint


def _round_sig(value: float, digits: int = 12) -> float:
    """``value`` to ``digits`` significant digits (hides float noise such as
    9.999999999e6 for 1e7 in the numbers of a range)."""
    return float(f"{value:.{digits}g}")


def _range_parts(spec: AxisRange, where: str) -> tuple[str, RangeParams, Endpoint, Endpoint]:
    """(kind, params, start, stop) of a range axis."""
    kind = "geometric" if spec.geometric is not None else "linear"
    params = spec.geometric if spec.geometric is not None else spec.linear
    assert params is not None
    start = parse_endpoint(params.start, f"{where}.{kind}.start")
    stop = parse_endpoint(params.stop, f"{where}.{kind}.stop")
    if start.kind != stop.kind:
        raise InputError(f"{where}.{kind}: start {params.start!r} and stop {params.stop!r} "
                         "are not quantities of the same kind")
    return kind, params, start, stop


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
    kind, params, start, stop = _range_parts(spec, where)
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


def label(value: Any) -> str:
    """An axis value as text, as the user wrote it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return yaml.safe_dump(value).strip().removesuffix("...").strip()
    if isinstance(value, (int, float)):
        return f"{value:g}"
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()


def numeric(value: Any) -> float | None:
    """A validated scenario value as a number (SI units), or None."""
    from fedsim.system.spec import Constant

    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Constant):
        return float(value.value)
    return None


# --------------------------------------------------------------------------- quantity


def field_quantity(parts: Sequence[str]) -> Quantity | None:
    """The quantity the scenario field at ``parts`` holds (None: a plain number
    or not a quantity). Client attributes take the kind of their domain in
    `fedsim.system.spec.CLIENT_DOMAINS`; the server's links are bandwidths and
    its aggregation time and the round deadline durations (the validators of
    `ServerSpec` and `RoundsSpec` parse them so)."""
    from fedsim.system.spec import CLIENT_DOMAINS

    if len(parts) == 3 and parts[:2] == ["system", "clients"] and parts[2] in CLIENT_DOMAINS:
        return CLIENT_DOMAINS[parts[2]].kind  # type: ignore[return-value]
    return _FIELD_QUANTITIES.get(".".join(parts))


_FIELD_QUANTITIES: dict[str, Quantity] = {
    "system.server.downlink": "bandwidth",
    "system.server.uplink": "bandwidth",
    "system.server.aggregation": "duration",
    "system.rounds.deadline": "duration",
}


def axis_quantity(values: AxisRange | Sequence[Any], parts: Sequence[str],
                  where: str) -> tuple[Quantity | None, str | None]:
    """(quantity, unit) of an axis: the kind and unit the user wrote (a range's
    endpoints, or a list whose every value is a quantity of one kind), else the
    kind of the scenario field it sets (`field_quantity`) with no unit (bare
    numbers, SI units). The unit is None where the values carry none or several.

    E.g. ``uplink: {geometric: {start: "0.5 Mbps", ...}}`` -> ("bandwidth",
    "Mbps"); ``uplink: [1e6, 2e6]`` -> ("bandwidth", None);
    ``methods.hp-fl.remaining_rate: [0.8, 0.4]`` -> (None, None).
    """
    if isinstance(values, AxisRange):
        _, _, start, _ = _range_parts(values, where)
        if start.kind is not None:
            return start.kind, start.unit
        return field_quantity(parts), None
    written: list[Endpoint] = []
    for value in values:
        if not isinstance(value, str):
            break
        try:
            written.append(parse_endpoint(value, where))
        except InputError:
            break
    kinds = {e.kind for e in written}
    if len(written) == len(values) and len(kinds) == 1 and None not in kinds:
        unit_names = {e.unit for e in written}
        return written[0].kind, unit_names.pop() if len(unit_names) == 1 else None
    return field_quantity(parts), None
