"""Quantities with units and the distributions of client attributes.

A client attribute of the ``system:`` section (`fedsim.system.spec`) is a
plain value or a distribution (``constant``, ``uniform``, ``normal``,
``lognormal``) whose values carry units (``"20 Mbps"``); `parse_distribution`
turns what the user wrote into SI floats and checks that every value it can
draw lies in the attribute's `Domain`; `draw_range` gives the smallest and
the largest value a client can draw, for checks that must hold whatever the
draws. Infinite floats are dumped as the string ``"inf"`` (JSON has none).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, PlainSerializer
from pydantic_core import PydanticCustomError

from fedsim.errors import quote
from fedsim.schema import Section
from fedsim.units import parse_quantity


def _dump_float(value: float) -> float | str:
    """Infinite floats as the string "inf" (JSON has no infinity)."""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


#: A finite float in SI units (sections refuse NaN and infinity by default).
SIFloat = Annotated[float, PlainSerializer(_dump_float, when_used="always")]
#: A float in SI units where ``inf`` means something: an unlimited link
#: (a constant bandwidth, the server's links) or no upper clip (``max``).
#: NaN is refused by the parsing validators.
SIFloatOrInf = Annotated[float, Field(allow_inf_nan=True),
                         PlainSerializer(_dump_float, when_used="always")]


def value_error(message: str) -> PydanticCustomError:
    # A custom error keeps pydantic from prefixing "Value error, " to the text.
    return PydanticCustomError("value_error", message)


@dataclass(frozen=True)
class Domain:
    """What values a quantity may take; ``kind`` names its unit (None: a plain number)."""

    kind: str | None
    low: float
    low_closed: bool
    high: float
    high_closed: bool

    def describe(self) -> str:
        if self.high == math.inf:
            return f">= {self.low:g}" if self.low_closed else f"> {self.low:g}"
        left = "[" if self.low_closed else "("
        right = "]" if self.high_closed else ")"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def contains(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def parse(self, raw: Any, what: str) -> float:
        """Parse ``raw`` in this domain's unit; ``what`` prefixes messages."""
        if self.kind is None:
            if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
                raise value_error(f"{what}{quote(raw)} is not a number")
            try:
                value = float(raw)
            except ValueError:
                raise value_error(f"{what}{quote(raw)} is not a number") from None
            if math.isnan(value):
                raise value_error(f"{what}{quote(raw)} is not a number")
            return value
        try:
            return parse_quantity(raw, self.kind)
        except ValueError as exc:
            raise value_error(f"{what}{exc}") from None

    def check(self, raw: Any, value: float, what: str) -> float:
        if not self.contains(value):
            raise value_error(f"{what}{quote(raw)} must be {self.describe()}")
        return value


BANDWIDTH = Domain("bandwidth", 0.0, False, math.inf, True)
LATENCY = Domain("duration", 0.0, True, math.inf, False)
SPEED = Domain(None, 0.0, False, math.inf, False)
PROBABILITY = Domain(None, 0.0, True, 1.0, True)


# --- distributions (fields in SI units, parsed by the attribute that owns them)


class Constant(Section):
    """Every client gets ``value``."""

    dist: Literal["constant"] = "constant"
    value: SIFloatOrInf


class Uniform(Section):
    """Uniform on [low, high]."""

    dist: Literal["uniform"]
    low: SIFloat
    high: SIFloat


class Normal(Section):
    """Normal(mean, std) clipped to [min, max] (None: the attribute's closed bound)."""

    dist: Literal["normal"]
    mean: SIFloat
    std: SIFloat
    min: SIFloat | None = None
    max: SIFloatOrInf | None = None


class LogNormal(Section):
    """``median * exp(sigma * Z)``, Z standard normal, clipped to [min, max] if given."""

    dist: Literal["lognormal"]
    median: SIFloat
    sigma: SIFloat
    min: SIFloat | None = None
    max: SIFloatOrInf | None = None


Distribution = Annotated[Constant | Uniform | Normal | LogNormal, Field(discriminator="dist")]

# name -> (fields in the attribute's unit, dimensionless fields)
DISTRIBUTIONS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "constant": (("value",), ()),
    "uniform": (("low", "high"), ()),
    "normal": (("mean", "std", "min", "max"), ()),
    "lognormal": (("median", "min", "max"), ("sigma",)),
}


def parse_distribution(raw: Any, domain: Domain) -> Any:
    """Turn a scalar or a ``{dist: ...}`` mapping into a distribution dict in SI
    units, checking that every value it can draw lies in ``domain``.

    Unknown sub-keys are passed through so that pydantic reports them (extra
    keys are forbidden); an unknown ``dist`` is reported here with the choices.
    """
    if isinstance(raw, (Constant, Uniform, Normal, LogNormal)):
        raw = raw.model_dump()
    if not isinstance(raw, Mapping):
        value = domain.parse(raw, "")
        return {"dist": "constant", "value": domain.check(raw, value, "")}
    name = raw.get("dist", "constant" if "value" in raw else None)
    if name not in DISTRIBUTIONS:
        choices = ", ".join(DISTRIBUTIONS)
        if name is None:
            raise value_error(f"a distribution needs a 'dist' key, one of: {choices}")
        raise value_error(f"unknown distribution {quote(name)}; valid: {choices}")
    quantity_keys, plain_keys = DISTRIBUTIONS[name]
    out: dict[str, Any] = dict(raw)
    out["dist"] = name
    values: dict[str, float] = {}
    for key in quantity_keys:
        if out.get(key) is not None:
            values[key] = out[key] = domain.parse(out[key], f"{key}: ")
    for key in plain_keys:
        if out.get(key) is not None:
            values[key] = out[key] = Domain(None, -math.inf, True, math.inf, True).parse(
                out[key], f"{key}: "
            )

    def check(key: str) -> None:
        if key in values:
            domain.check(raw[key], values[key], f"{key}: ")

    if name == "constant":
        check("value")
    elif name == "uniform":
        check("low")
        check("high")
        if {"low", "high"} <= values.keys() and values["low"] > values["high"]:
            raise value_error(f"low {quote(raw['low'])} must be <= high {quote(raw['high'])}")
    else:
        check("min")
        check("max")
        if name == "normal":
            if "std" in values and not values["std"] >= 0:
                raise value_error(f"std: {quote(raw['std'])} must be >= 0")
            if values.get("min") is None and not domain.low_closed:
                raise value_error(
                    f"a normal distribution here needs 'min' (values must be {domain.describe()})"
                )
            if values.get("max") is None and domain.high != math.inf and not domain.high_closed:
                raise value_error(
                    f"a normal distribution here needs 'max' (values must be {domain.describe()})"
                )
        else:
            if "median" in values and not values["median"] > 0:
                raise value_error(f"median: {quote(raw['median'])} must be > 0")
            if "sigma" in values and not values["sigma"] >= 0:
                raise value_error(f"sigma: {quote(raw['sigma'])} must be >= 0")
        low, high = values.get("min"), values.get("max")
        if low is not None and high is not None and low > high:
            raise value_error(f"min {quote(raw['min'])} must be <= max {quote(raw['max'])}")
    return out


CLIENT_DOMAINS: Mapping[str, Domain] = {
    "downlink": BANDWIDTH,
    "uplink": BANDWIDTH,
    "rtt": LATENCY,
    "speed": SPEED,
    "availability": PROBABILITY,
}


def draw_range(dist: Constant | Uniform | Normal | LogNormal, name: str) -> tuple[float, float]:
    """The smallest and the largest value that client attribute ``name`` can
    draw from ``dist`` (as ``fedsim.system.profiles.sample_attribute`` draws and
    clips), for checks that must hold whatever the draws: e.g. the fastest link
    of a lognormal without ``max`` is ``inf``; its slowest, 0 (an infimum)."""
    domain = CLIENT_DOMAINS[name]
    if isinstance(dist, Constant):
        return dist.value, dist.value
    if isinstance(dist, Uniform):
        return dist.low, dist.high
    if isinstance(dist, Normal):
        low, high = (dist.mean, dist.mean) if dist.std == 0 else (-math.inf, math.inf)
    else:
        low, high = (dist.median, dist.median) if dist.sigma == 0 else (0.0, math.inf)
    clip_low = dist.min if dist.min is not None else (domain.low if domain.low_closed else -math.inf)
    clip_high = dist.max if dist.max is not None else (domain.high if domain.high_closed else math.inf)
    return min(max(low, clip_low), clip_high), max(min(high, clip_high), clip_low)
