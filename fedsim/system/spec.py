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
    device_trace: null            # or "devices.csv": s_per_sample or flops_per_s per client (replaces speed)
    sessions: null                # or "sessions.csv" (online intervals), or {model: diurnal, ...}
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
  energy:                         # read after the simulation (fedsim.system.energy_spec)
    preset: lte                   # lte | wifi | 5g; each number overridable
    compute_w: 2.0                # device power while training (W)
```

A client attribute is a plain value (a constant) or a distribution:
``constant`` (value), ``uniform`` (low, high), ``normal`` (mean, std, clipped to
[min, max]), ``lognormal`` (median, sigma: ``median * exp(sigma * Z)``, clipped
to [min, max] when given). Where an attribute's domain has a closed bound
(rtt >= 0, 0 <= availability <= 1) draws are clipped to it by default; where the
bound is open (bandwidth > 0, speed > 0) a normal distribution needs an explicit
``min`` above it (the distributions and their parsing: `fedsim.system.distributions`,
whose names this module re-exports). See docs/network-model.md for the model itself.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fedsim.errors import quote
from fedsim.schema import Section
from fedsim.system.availability_spec import DiurnalSpec, parse_sessions
from fedsim.system.distributions import (
    BANDWIDTH,
    CLIENT_DOMAINS,
    DISTRIBUTIONS,
    Constant,
    Distribution,
    Domain,
    LogNormal,
    Normal,
    SIFloat,
    SIFloatOrInf,
    Uniform,
    draw_range,
    parse_distribution,
    value_error,
)
from fedsim.system.dynamics_spec import DynamicsSpec
from fedsim.system.energy_spec import EnergySpec

__all__ = [
    "CLIENT_DOMAINS",
    "DISTRIBUTIONS",
    "CellSpec",
    "ClientsSpec",
    "ComputeSpec",
    "Constant",
    "Distribution",
    "DynamicsSpec",
    "EnergySpec",
    "LogNormal",
    "Normal",
    "PayloadSpec",
    "RoundsSpec",
    "ServerSpec",
    "SystemConfig",
    "Uniform",
    "draw_range",
]


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
    #: per-client device speed (seconds per sample or FLOP/s) from a CSV,
    #: replacing ``speed`` (`fedsim.system.devices`, docs/network-model.md)
    device_trace: str | None = None
    dynamics: DynamicsSpec | None = None
    #: when each client is online: None, a CSV of intervals, or a diurnal
    #: generator (`fedsim.system.availability_spec`, docs/network-model.md)
    sessions: str | DiurnalSpec | None = None

    @field_validator("downlink", "uplink", "rtt", "speed", "availability", mode="before")
    @classmethod
    def _parse_units(cls, raw: Any, info: Any) -> Any:
        return parse_distribution(raw, CLIENT_DOMAINS[info.field_name])

    @field_validator("availability")
    @classmethod
    def _someone_available(cls, dist: Distribution) -> Distribution:
        if draw_range(dist, "availability")[1] <= 0:
            raise value_error("every client's availability is 0: no client could ever be selected")
        return dist

    _sessions = field_validator("sessions", mode="before")(classmethod(lambda cls, raw: parse_sessions(raw)))

    @field_validator("trace")
    @classmethod
    def _trace_not_empty(cls, trace: str | None) -> str | None:
        if trace is not None and not trace.strip():
            raise value_error("trace: an empty path; use null for no trace")
        return trace

    @model_validator(mode="after")
    def _trace_replaces_attributes(self) -> ClientsSpec:
        if self.trace is None:
            return self
        defaults = type(self)()
        clashing = [name for name in CLIENT_DOMAINS if getattr(self, name) != getattr(defaults, name)]
        if clashing:
            raise value_error(
                f"trace {self.trace!r} gives every client's {', '.join(CLIENT_DOMAINS)}; "
                f"remove {', '.join(clashing)} (or the trace)"
            )
        return self

    @model_validator(mode="after")
    def _device_trace_replaces_speed(self) -> ClientsSpec:
        if self.device_trace is None:
            return self
        if not self.device_trace.strip():
            raise value_error("device_trace: an empty path; use null for no device trace")
        if self.trace is not None:
            raise value_error(f"device_trace {self.device_trace!r} and trace {self.trace!r} both give every "
                              "client's speed; keep one")
        if self.speed != type(self)().speed:
            raise value_error(f"device_trace {self.device_trace!r} gives every client's speed; remove speed")
        return self

    @model_validator(mode="after")
    def _trace_replaces_links(self) -> ClientsSpec:
        if self.dynamics is None or self.dynamics.model != "trace":
            return self
        defaults = type(self)()
        clashing = [name for name in ("downlink", "uplink") if getattr(self, name) != getattr(defaults, name)]
        if clashing:
            raise value_error(f"dynamics.trace {self.dynamics.trace!r} gives every client's downlink and "
                              f"uplink over time; remove {', '.join(clashing)}")
        return self

    def attribute(self, name: str) -> Distribution:
        """The distribution of attribute ``name`` (one of the five above)."""
        if name not in CLIENT_DOMAINS:
            raise KeyError(f"unknown client attribute {quote(name)}; valid: {', '.join(CLIENT_DOMAINS)}")
        return getattr(self, name)


def _quantity_validator(domain: Domain) -> Any:
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
        _quantity_validator(Domain("duration", 0.0, True, math.inf, False))
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
            raise value_error(f"{quote(raw)} is not a fraction or a count of clients")
        if isinstance(raw, int):
            if raw == 1:
                raise value_error("1 is ambiguous: write 1.0 for every client, or a count >= 2")
            if raw < 1:
                raise value_error(f"{quote(raw)} must be a count >= 2 or a fraction in (0, 1]")
            return raw
        value = Domain(None, 0.0, False, 1.0, True).parse(raw, "")
        if not 0.0 < value <= 1.0:
            raise value_error(f"{quote(raw)} must be a fraction in (0, 1] or an int count >= 2")
        return value

    @field_validator("overcommit", mode="before")
    @classmethod
    def _overcommit(cls, raw: Any) -> float:
        domain = Domain(None, 0.0, True, math.inf, False)
        return domain.check(raw, domain.parse(raw, ""), "")

    @field_validator("deadline", mode="before")
    @classmethod
    def _deadline(cls, raw: Any) -> float | None:
        if raw is None:
            return None
        domain = Domain("duration", 0.0, False, math.inf, False)
        value = domain.parse(raw, "")
        if value == math.inf:
            return None  # "inf": no deadline
        return domain.check(raw, value, "")

    @field_validator("dropout", mode="before")
    @classmethod
    def _dropout(cls, raw: Any) -> float:
        domain = Domain(None, 0.0, True, 1.0, False)
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
        domain = Domain("size", 0.0, True, math.inf, False)
        value = domain.check(raw, domain.parse(raw, ""), "")
        if not float(value).is_integer():
            raise value_error(f"{quote(raw)} is not a whole number of bytes")
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
        _quantity_validator(Domain("duration", 0.0, True, math.inf, False))
    )


class CellSpec(Section):
    """A cell (or access point) between its clients and the server's link:
    ``capacity_down`` carries its clients' downloads, ``capacity_up`` their
    uploads (bits/s, > 0; ``inf`` for no limit)."""

    capacity_down: SIFloatOrInf = math.inf
    capacity_up: SIFloatOrInf = math.inf

    _links = field_validator("capacity_down", "capacity_up", mode="before")(_quantity_validator(BANDWIDTH))


class SystemConfig(Section):
    """The whole ``system:`` section. Defaults: the paper's idealised setting.

    ``cells``: named cells (`CellSpec`); none by default (clients reach the
    server's link directly). ``cell_assignment``: ``round_robin`` (client k in
    the (k mod C)-th cell, in the order written) or ``{cell: fraction}``
    (contiguous blocks of client ids, sizes by largest remainder).
    """

    clients: ClientsSpec = ClientsSpec()
    cells: dict[str, CellSpec] = Field(default_factory=dict)
    cell_assignment: Literal["round_robin"] | dict[str, float] = "round_robin"
    server: ServerSpec = ServerSpec()
    rounds: RoundsSpec = RoundsSpec()
    payload: PayloadSpec = PayloadSpec()
    compute: ComputeSpec = ComputeSpec()
    energy: EnergySpec = EnergySpec()  # read after the simulation only (fedsim.system.energy)

    @model_validator(mode="after")
    def _assignment_names_cells(self) -> SystemConfig:
        if isinstance(self.cell_assignment, str):
            return self
        if not self.cells:
            raise value_error("cell_assignment names cells, but system.cells is empty")
        unknown = [name for name in self.cell_assignment if name not in self.cells]
        if unknown:
            raise value_error(f"cell_assignment: no cell {quote(unknown[0])}; cells: {', '.join(self.cells)}")
        fractions = list(self.cell_assignment.values())
        if min(fractions) < 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
            raise value_error(f"cell_assignment: fractions {quote(fractions)} must be >= 0 and sum to 1")
        return self

    def timing_decides_participation(self) -> bool:
        """True when who is aggregated depends on times (a deadline or
        over-commit); otherwise participation depends only on availability,
        selection and dropout draws, and one cached participation serves every
        network and device setting."""
        # sessions: a client leaves when its session ends, which times decide
        return (self.rounds.deadline is not None or self.rounds.overcommit > 0
                or self.clients.sessions is not None)
