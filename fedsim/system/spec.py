"""The scenario's ``system:`` section: clients, server, round policy, payload, compute.

Every quantity is written with its unit in the YAML and stored here as an SI
float (bits/s, seconds, bytes). NaN is never accepted and infinity only where
it means something: a constant client link or a server link (unlimited), a
distribution's ``max`` (no clip), ``deadline: inf`` (none). Infinite values are
dumped as the string ``"inf"`` so that a dumped config is valid JSON and loads
back unchanged. The defaults are the paper's idealised setting (HP-FL paper, Sec. IV-A): infinite
bandwidths, no latency, identical devices (speed 1), every client in every
round, no deadline or dropout, values only at 32 bits, 10 s of computation for
the full model on 400 samples.

```yaml
system:
  clients:
    downlink: {dist: lognormal, median: "20 Mbps", sigma: 0.6}   # or "20 Mbps", or "inf"
    uplink:   {dist: lognormal, median: "5 Mbps", sigma: 0.6}
    rtt: "50 ms"                  # or {dist: uniform, low: "20 ms", high: "120 ms"}
    speed: {dist: normal, mean: 1.0, std: 0.3, min: 0.2, max: 3.0}
    availability: 1.0
    trace: null                   # or "profiles.csv" (replaces the five above)
  server:
    downlink: inf                 # server egress, shared by all clients' downloads
    uplink: inf                   # server ingress, shared by all clients' uploads
    aggregation: "0 s"
  rounds:
    participation: 1.0            # fraction of clients (float) or a count (int >= 2)
    overcommit: 0.0
    deadline: null
    dropout: 0.0
  payload:
    value_bits: 32
    mask_encoding: none           # none | bitmask | indices
    mask_every_round: false
    overhead: "0 B"
  compute:
    t_comp_full: "10 s"
    reference_samples: 400
    work: remaining_rate          # remaining_rate | flops | dense
```

A client attribute is a plain value (a constant) or a distribution:
``constant`` (value), ``uniform`` (low, high), ``normal`` (mean, std, clipped to
[min, max]), ``lognormal`` (median, sigma: ``median * exp(sigma * Z)``, clipped
to [min, max] when given). Where an attribute's domain has a closed bound
(rtt >= 0, 0 <= availability <= 1) draws are clipped to it by default; where the
bound is open (bandwidth > 0, speed > 0) a normal distribution needs an explicit
``min`` above it. See docs/network-model.md for the model itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, PlainSerializer, field_validator, model_validator
from pydantic_core import PydanticCustomError

from fedsim.errors import quote
from fedsim.schema import Section
from fedsim.units import parse_quantity

__all__ = [
    "CLIENT_DOMAINS",
    "DISTRIBUTIONS",
    "ClientsSpec",
    "ComputeSpec",
    "Constant",
    "Distribution",
    "LogNormal",
    "Normal",
    "PayloadSpec",
    "RoundsSpec",
    "ServerSpec",
    "SystemConfig",
    "Uniform",
    "draw_range",
]


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


def _error(message: str) -> PydanticCustomError:
    # A custom error keeps pydantic from prefixing "Value error, " to the text.
    return PydanticCustomError("value_error", message)


@dataclass(frozen=True)
class _Domain:
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
                raise _error(f"{what}{quote(raw)} is not a number")
            try:
                value = float(raw)
            except ValueError:
                raise _error(f"{what}{quote(raw)} is not a number") from None
            if math.isnan(value):
                raise _error(f"{what}{quote(raw)} is not a number")
            return value
        try:
            return parse_quantity(raw, self.kind)
        except ValueError as exc:
            raise _error(f"{what}{exc}") from None

    def check(self, raw: Any, value: float, what: str) -> float:
        if not self.contains(value):
            raise _error(f"{what}{quote(raw)} must be {self.describe()}")
        return value


BANDWIDTH = _Domain("bandwidth", 0.0, False, math.inf, True)
LATENCY = _Domain("duration", 0.0, True, math.inf, False)
SPEED = _Domain(None, 0.0, False, math.inf, False)
PROBABILITY = _Domain(None, 0.0, True, 1.0, True)


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


def _parse_distribution(raw: Any, domain: _Domain) -> Any:
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
            raise _error(f"a distribution needs a 'dist' key, one of: {choices}")
        raise _error(f"unknown distribution {quote(name)}; valid: {choices}")
    quantity_keys, plain_keys = DISTRIBUTIONS[name]
    out: dict[str, Any] = dict(raw)
    out["dist"] = name
    values: dict[str, float] = {}
    for key in quantity_keys:
        if out.get(key) is not None:
            values[key] = out[key] = domain.parse(out[key], f"{key}: ")
    for key in plain_keys:
        if out.get(key) is not None:
            values[key] = out[key] = _Domain(None, -math.inf, True, math.inf, True).parse(
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
            raise _error(f"low {quote(raw['low'])} must be <= high {quote(raw['high'])}")
    else:
        check("min")
        check("max")
        if name == "normal":
            if "std" in values and not values["std"] >= 0:
                raise _error(f"std: {quote(raw['std'])} must be >= 0")
            if values.get("min") is None and not domain.low_closed:
                raise _error(
                    f"a normal distribution here needs 'min' (values must be {domain.describe()})"
                )
            if values.get("max") is None and domain.high != math.inf and not domain.high_closed:
                raise _error(
                    f"a normal distribution here needs 'max' (values must be {domain.describe()})"
                )
        else:
            if "median" in values and not values["median"] > 0:
                raise _error(f"median: {quote(raw['median'])} must be > 0")
            if "sigma" in values and not values["sigma"] >= 0:
                raise _error(f"sigma: {quote(raw['sigma'])} must be >= 0")
        low, high = values.get("min"), values.get("max")
        if low is not None and high is not None and low > high:
            raise _error(f"min {quote(raw['min'])} must be <= max {quote(raw['max'])}")
    return out


CLIENT_DOMAINS: Mapping[str, _Domain] = {
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


class ClientsSpec(Section):
    """Per-client link, latency, device speed and availability.

    ``downlink``/``uplink``: the client's own link rates (bits/s), which cap its
    transfers; ``rtt``: round-trip time (s), half of which delays every message;
    ``speed``: compute speed factor (2 = twice as fast as the reference device);
    ``availability``: probability that the client can be selected in a round.

    ``trace``: a CSV file (relative to the scenario's directory) with one row per
    client and the columns ``client_id, downlink, uplink, rtt, speed,
    availability``; cells carry their units (``"20 Mbps"``, ``"50 ms"``), bare
    numbers are in the implied SI unit. A trace replaces the five attributes,
    which must then stay at their defaults. Client ``k`` gets the row whose
    ``client_id`` is ``k``.
    """

    downlink: Distribution = Constant(value=math.inf)
    uplink: Distribution = Constant(value=math.inf)
    rtt: Distribution = Constant(value=0.0)
    speed: Distribution = Constant(value=1.0)
    availability: Distribution = Constant(value=1.0)
    trace: str | None = None

    @field_validator("downlink", "uplink", "rtt", "speed", "availability", mode="before")
    @classmethod
    def _parse_units(cls, raw: Any, info: Any) -> Any:
        return _parse_distribution(raw, CLIENT_DOMAINS[info.field_name])

    @field_validator("availability")
    @classmethod
    def _someone_available(cls, dist: Distribution) -> Distribution:
        if draw_range(dist, "availability")[1] <= 0:
            raise _error("every client's availability is 0: no client could ever be selected")
        return dist

    @field_validator("trace")
    @classmethod
    def _trace_not_empty(cls, trace: str | None) -> str | None:
        if trace is not None and not trace.strip():
            raise _error("trace: an empty path; use null for no trace")
        return trace

    @model_validator(mode="after")
    def _trace_replaces_attributes(self) -> ClientsSpec:
        if self.trace is None:
            return self
        defaults = type(self)()
        clashing = [name for name in CLIENT_DOMAINS if getattr(self, name) != getattr(defaults, name)]
        if clashing:
            raise _error(
                f"trace {self.trace!r} gives every client's {', '.join(CLIENT_DOMAINS)}; "
                f"remove {', '.join(clashing)} (or the trace)"
            )
        return self

    def attribute(self, name: str) -> Distribution:
        """The distribution of attribute ``name`` (one of the five above)."""
        if name not in CLIENT_DOMAINS:
            raise KeyError(f"unknown client attribute {quote(name)}; valid: {', '.join(CLIENT_DOMAINS)}")
        return getattr(self, name)


def _quantity_validator(domain: _Domain) -> Any:
    def validate(cls: type, raw: Any) -> float:
        return domain.check(raw, domain.parse(raw, ""), "")

    return classmethod(validate)


class ServerSpec(Section):
    """The server's shared link and its aggregation time.

    ``downlink`` is the server's egress (server -> clients), shared max-min
    fairly by all the clients' downloads; ``uplink`` its ingress (clients ->
    server), shared by all uploads. ``inf`` (the default) means the server link
    is never the bottleneck. ``aggregation``: seconds per round after the last
    kept update arrives.
    """

    downlink: SIFloatOrInf = math.inf
    uplink: SIFloatOrInf = math.inf
    aggregation: SIFloat = 0.0

    _links = field_validator("downlink", "uplink", mode="before")(_quantity_validator(BANDWIDTH))
    _aggregation = field_validator("aggregation", mode="before")(
        _quantity_validator(_Domain("duration", 0.0, True, math.inf, False))
    )


class RoundsSpec(Section):
    """The per-round policy of synchronous FedAvg rounds.

    ``participation``: a float in (0, 1] is the fraction of the K clients whose
    updates a round aggregates (m = round(fraction * K), at least 1); an int >= 2
    is that count m. ``1`` is refused as ambiguous (write 1.0 for every client).
    ``overcommit``: the server selects ceil(m * (1 + overcommit)) available
    clients and keeps the first m to deliver. ``deadline``: seconds from the
    round's start after which the server stops waiting (null: none).
    ``dropout``: probability that a selected client quits during its training,
    in [0, 1). A deadline shorter than any possible round is refused by the
    scenario (``fedsim.config.fastest_round_s``), an availability that is 0 for
    every client by `ClientsSpec`.
    """

    participation: float | int = 1.0
    overcommit: float = 0.0
    deadline: SIFloat | None = None
    dropout: float = 0.0

    @field_validator("participation", mode="before")
    @classmethod
    def _participation(cls, raw: Any) -> float | int:
        if isinstance(raw, bool):
            raise _error(f"{quote(raw)} is not a fraction or a count of clients")
        if isinstance(raw, int):
            if raw == 1:
                raise _error("1 is ambiguous: write 1.0 for every client, or a count >= 2")
            if raw < 1:
                raise _error(f"{quote(raw)} must be a count >= 2 or a fraction in (0, 1]")
            return raw
        value = _Domain(None, 0.0, False, 1.0, True).parse(raw, "")
        if not 0.0 < value <= 1.0:
            raise _error(f"{quote(raw)} must be a fraction in (0, 1] or an int count >= 2")
        return value

    @field_validator("overcommit", mode="before")
    @classmethod
    def _overcommit(cls, raw: Any) -> float:
        domain = _Domain(None, 0.0, True, math.inf, False)
        return domain.check(raw, domain.parse(raw, ""), "")

    @field_validator("deadline", mode="before")
    @classmethod
    def _deadline(cls, raw: Any) -> float | None:
        if raw is None:
            return None
        domain = _Domain("duration", 0.0, False, math.inf, False)
        value = domain.parse(raw, "")
        if value == math.inf:
            return None  # "inf": no deadline
        return domain.check(raw, value, "")

    @field_validator("dropout", mode="before")
    @classmethod
    def _dropout(cls, raw: Any) -> float:
        domain = _Domain(None, 0.0, True, 1.0, False)
        return domain.check(raw, domain.parse(raw, ""), "")

    def kept_count(self, n_clients: int) -> int:
        """m, the number of updates a round wants, for K = ``n_clients``."""
        if isinstance(self.participation, int):
            return min(self.participation, n_clients)
        return max(1, min(n_clients, math.floor(self.participation * n_clients + 0.5)))

    def selected_count(self, n_clients: int) -> int:
        """ceil(m * (1 + overcommit)), at most K."""
        m = self.kept_count(n_clients)
        # round() first so that 100 * 1.1 = 110.00000000000001 selects 110, not 111
        return min(n_clients, math.ceil(round(m * (1.0 + self.overcommit), 9)))


class PayloadSpec(Section):
    """What a message carries (see ``fedsim.system.payload.payload_bytes``).

    ``value_bits``: bits per sent value (surviving weights and all biases);
    ``mask_encoding``: how a sparse method's mask travels: ``none`` (the clients
    know it), ``bitmask`` (1 bit per weight of the full model) or ``indices``
    (ceil(log2(layer size)) bits per surviving weight); ``mask_every_round``:
    false sends the mask once, with the first round's download; true attaches
    it to every message, both directions. ``overhead``: bytes added to every
    message (headers, framing).
    """

    value_bits: int = Field(default=32, ge=1, le=64)
    mask_encoding: Literal["none", "bitmask", "indices"] = "none"
    mask_every_round: bool = False
    overhead: int = 0

    @field_validator("overhead", mode="before")
    @classmethod
    def _overhead(cls, raw: Any) -> int:
        domain = _Domain("size", 0.0, True, math.inf, False)
        value = domain.check(raw, domain.parse(raw, ""), "")
        if not float(value).is_integer():
            raise _error(f"{quote(raw)} is not a whole number of bytes")
        return int(value)


class ComputeSpec(Section):
    """Local training time: ``t_comp_full * work_fraction * (samples /
    reference_samples) / speed`` seconds per round (HP-FL paper, Sec. IV-A:
    t_comp = 10 s for the full LeNet on a client's 400 samples, 10 P_R s for a
    subnetwork). ``work``: ``remaining_rate`` (work fraction = P_R, the paper),
    ``flops`` (the sparse share of a dense training step's FLOPs) or ``dense``
    (work fraction 1: the device trains the masked model with dense kernels,
    as most mobile runtimes would, so pruning saves traffic but no time).
    """

    t_comp_full: SIFloat = 10.0
    reference_samples: int = Field(default=400, gt=0)
    work: Literal["remaining_rate", "flops", "dense"] = "remaining_rate"

    _t_comp = field_validator("t_comp_full", mode="before")(
        _quantity_validator(_Domain("duration", 0.0, True, math.inf, False))
    )


class SystemConfig(Section):
    """The whole ``system:`` section. Defaults: the paper's idealised setting."""

    clients: ClientsSpec = ClientsSpec()
    server: ServerSpec = ServerSpec()
    rounds: RoundsSpec = RoundsSpec()
    payload: PayloadSpec = PayloadSpec()
    compute: ComputeSpec = ComputeSpec()

    def timing_decides_participation(self) -> bool:
        """True when who is aggregated depends on times (a deadline or
        over-commit); otherwise participation depends only on availability,
        selection and dropout draws, and one cached participation serves every
        network and device setting."""
        return self.rounds.deadline is not None or self.rounds.overcommit > 0
