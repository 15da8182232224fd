"""The ``system.clients.dynamics`` section: how client links change over
simulated time (the model itself: `fedsim.system.dynamics`). Kept apart from
`fedsim.system.spec` as the availability and energy sections are.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fedsim.schema import Section
from fedsim.system.distributions import BANDWIDTH, Domain, SIFloat, value_error

__all__ = ["DynamicsSpec"]


class DynamicsSpec(Section):
    """How client links change over simulated time (`fedsim.system.dynamics`).

    ``model``: ``lte`` (the LTE preset of lognormal AR(1) variation around each
    client's drawn link), ``lognormal_ar1`` (the same with ``sigma``, the
    log-space standard deviation, ``correlation``, the lag-1 correlation in
    [0, 1), and ``interval``, the seconds per step; for ``lte`` these override
    the preset), or ``trace`` (a CSV of absolute capacities, ``trace``,
    relative to the scenario's folder; ``unit`` for bare ``downlink``/
    ``uplink`` columns, e.g. ``Mbps``).
    """

    model: Literal["lte", "lognormal_ar1", "trace"]
    sigma: float | None = Field(default=None, ge=0.0)
    correlation: float | None = Field(default=None, ge=0.0, lt=1.0)
    interval: SIFloat | None = None
    trace: str | None = None
    unit: str | None = None

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, raw: Any) -> float | None:
        if raw is None:
            return None
        domain = Domain("duration", 0.0, False, math.inf, False)
        return domain.check(raw, domain.parse(raw, ""), "")

    @field_validator("unit")
    @classmethod
    def _unit(cls, unit: str | None) -> str | None:
        if unit is not None:
            BANDWIDTH.parse(f"1 {unit}", "unit ")
        return unit

    @model_validator(mode="after")
    def _complete(self) -> DynamicsSpec:
        ar1 = ("sigma", "correlation", "interval")
        if self.model == "trace":
            if self.trace is None or not self.trace.strip():
                raise value_error("model 'trace' needs trace: <file.csv>")
            given = [name for name in ar1 if getattr(self, name) is not None]
            if given:
                raise value_error(f"model 'trace' takes no {', '.join(given)}")
        else:
            if self.trace is not None or self.unit is not None:
                raise value_error(f"model {self.model!r} takes no trace or unit (use model: trace)")
            missing = [name for name in ar1 if getattr(self, name) is None]
            if self.model == "lognormal_ar1" and missing:
                raise value_error(f"model 'lognormal_ar1' needs {', '.join(missing)}")
        return self

    def ar1(self) -> tuple[float, float, float]:
        """(sigma, correlation, interval_s), the LTE preset filling gaps."""
        from fedsim.system.dynamics import LTE_PRESET

        return (LTE_PRESET["sigma"] if self.sigma is None else self.sigma,
                LTE_PRESET["correlation"] if self.correlation is None else self.correlation,
                LTE_PRESET["interval"] if self.interval is None else self.interval)
