"""The ``system.clients.sessions`` setting: when each client is online.

``sessions: null`` (the default) keeps the per-round availability coin alone
(``system.clients.availability``). Otherwise it is either

* a path (relative to the scenario's directory) to a CSV of online intervals,
  header ``client_id,start_s,end_s`` (`fedsim.system.availability.read_sessions`),
  or
* a diurnal generator (`DiurnalSpec`)::

      sessions: {model: diurnal, mean: 0.5, amplitude: 0.3, session: "30 min",
                 peak: "0 h", spread: "0 h", start: "0 h", period: "24 h"}

A client is selectable only while online at the round's start (and its
availability coin says yes); one that goes offline during its round is dropped
with reason ``offline``. The model and its sources: docs/network-model.md,
section Availability. This module imports neither numpy nor simpy.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import field_validator, model_validator

from fedsim.errors import quote
from fedsim.schema import Section
from fedsim.system.distributions import Domain, SIFloat, value_error

__all__ = ["DiurnalSpec", "parse_sessions"]

_DURATION = Domain("duration", 0.0, True, math.inf, False)
_POSITIVE_DURATION = Domain("duration", 0.0, False, math.inf, False)
_FRACTION = Domain(None, 0.0, True, 1.0, True)


def _duration(domain: Domain) -> Any:
    def validate(cls: type, raw: Any) -> float:
        return domain.check(raw, domain.parse(raw, ""), "")

    return classmethod(validate)


class DiurnalSpec(Section):
    """On/off sessions whose online probability follows the time of day.

    Client k's target probability of being online at simulated time t (s) is

        p_k(t) = mean + amplitude * cos(2 pi (t + start + phi_k - peak) / period)

    with phi_k, its local-time offset, uniform in [-spread/2, spread/2]
    (stream ``rng(seed, "sessions", "phase")``). Sessions are a two-state
    continuous-time Markov chain: an online session lasts an exponential time
    of mean ``session`` (off-rate mu = 1 / session); an offline client comes
    online at rate lambda_k(t) = mu p_k(t) / (1 - p_k(t)), so that the chain's
    stationary online probability is p_k(t) wherever the rates change slowly
    against the session length. Units: seconds (written with units in YAML).

    Attributes:
        model: ``"diurnal"``.
        mean: mean online probability, in (0, 1).
        amplitude: its daily swing, >= 0, with mean - amplitude >= 0 and
            mean + amplitude < 1 (lambda must stay finite).
        session: mean length of an online session (s, > 0).
        peak: local time of day of the highest probability (s, in [0, period)).
        spread: width of the clients' local-time offsets (s, in [0, period]);
            0: one time zone, ``period``: uniform around the globe.
        start: local time of day at simulated time 0 in the reference zone (s).
        period: the length of a day (s, > 0).
    """

    model: Literal["diurnal"] = "diurnal"
    mean: float = 0.5
    amplitude: float = 0.3
    session: SIFloat = 1800.0
    peak: SIFloat = 0.0
    spread: SIFloat = 0.0
    start: SIFloat = 0.0
    period: SIFloat = 86400.0

    _fractions = field_validator("mean", "amplitude", mode="before")(_duration(_FRACTION))
    _positive = field_validator("session", "period", mode="before")(_duration(_POSITIVE_DURATION))
    _durations = field_validator("peak", "spread", "start", mode="before")(_duration(_DURATION))

    @model_validator(mode="after")
    def _probabilities(self) -> DiurnalSpec:
        if not 0.0 < self.mean < 1.0:
            raise value_error(f"mean: {quote(self.mean)} must be in (0, 1)")
        if self.mean - self.amplitude < 0.0 or self.mean + self.amplitude >= 1.0:
            raise value_error(
                f"amplitude: {quote(self.amplitude)} with mean {self.mean:g} gives probabilities "
                f"outside [0, 1): need mean - amplitude >= 0 and mean + amplitude < 1"
            )
        for name in ("peak", "start"):
            if getattr(self, name) >= self.period:
                raise value_error(f"{name}: {getattr(self, name):g} s must be below the period "
                                  f"({self.period:g} s)")
        if self.spread > self.period:
            raise value_error(f"spread: {self.spread:g} s must be at most the period ({self.period:g} s)")
        return self


def parse_sessions(raw: Any) -> Any:
    """Validate the raw ``sessions`` value before pydantic's union: None, a
    non-empty path string, or a mapping with ``model: diurnal``.

    Raises:
        PydanticCustomError: anything else (quoted).
    """
    if raw is None or isinstance(raw, DiurnalSpec):
        return raw
    if isinstance(raw, str):
        if not raw.strip():
            raise value_error("an empty path; use null for no sessions")
        return raw
    if isinstance(raw, dict):
        if raw.get("model", "diurnal") != "diurnal":
            raise value_error(f"model: {quote(raw.get('model'))} is unknown; valid: diurnal")
        return raw
    raise value_error(f"{quote(raw)} is not a CSV path or a {{model: diurnal, ...}} mapping")
