"""The ``system.energy:`` section: which radio power model and device power.

```yaml
system:
  energy:
    preset: lte            # lte | wifi | 5g  (fedsim.system.power.PRESETS)
    compute_w: 2.0         # device power while training (W)
    # any number of the preset may be overridden:
    base_w: 1.28804        # radio power while a transfer is active (W)
    down_w_per_mbps: 0.05197
    up_w_per_mbps: 0.43839
    tail_w: 1.06           # power during the tail after a transfer (W)
    tail_s: "11.576 s"     # tail length (a duration, units allowed)
    promotion_w: 1.2107
    promotion_s: "260.1 ms"
```

Energy is computed from the simulated timeline after the system stage
(`fedsim.system.energy`); the simulation does not read this section, so it is
left out of the system stage's cache key (`fedsim.pipeline.keys.system_facts`):
changing a power re-computes only the report's energy columns. Models and
sources: `fedsim.system.power` and docs/network-model.md, "Energy".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from pydantic import field_validator

from fedsim.errors import quote
from fedsim.schema import Section
from fedsim.system.distributions import Domain, SIFloat, value_error
from fedsim.system.power import COMPUTE_W, PRESETS, RadioPower

__all__ = ["EnergySpec"]

_POWER = Domain(None, 0.0, True, math.inf, True)
_DURATION = Domain("duration", 0.0, True, math.inf, True)
_RADIO_FIELDS = tuple(field.name for field in dataclasses.fields(RadioPower))


def _finite(raw: Any, value: float) -> float:
    if math.isinf(value):
        raise value_error(f"{quote(raw)} must be finite")
    return value


class EnergySpec(Section):
    """Radio technology (``preset``), per-number overrides and device power.

    ``preset``: ``lte`` (default), ``wifi`` or ``5g``; each field of
    `fedsim.system.power.RadioPower` left null takes the preset's value.
    ``compute_w``: the device's power while training (W, default
    ``COMPUTE_W`` = 2 W). Powers are plain numbers in W (or W per Mbit/s),
    ``>= 0`` and finite; ``tail_s`` and ``promotion_s`` are durations.
    """

    preset: Literal["lte", "wifi", "5g"] = "lte"
    compute_w: float = COMPUTE_W
    base_w: float | None = None
    down_w_per_mbps: float | None = None
    up_w_per_mbps: float | None = None
    tail_w: float | None = None
    tail_s: SIFloat | None = None
    promotion_w: float | None = None
    promotion_s: SIFloat | None = None

    @field_validator("compute_w", "base_w", "down_w_per_mbps", "up_w_per_mbps", "tail_w",
                     "promotion_w", mode="before")
    @classmethod
    def _power(cls, raw: Any) -> float | None:
        if raw is None:
            return None
        return _finite(raw, _POWER.check(raw, _POWER.parse(raw, ""), ""))

    @field_validator("tail_s", "promotion_s", mode="before")
    @classmethod
    def _duration(cls, raw: Any) -> float | None:
        if raw is None:
            return None
        return _finite(raw, _DURATION.check(raw, _DURATION.parse(raw, ""), ""))

    def radio(self) -> RadioPower:
        """The preset's `RadioPower` with this section's overrides applied."""
        overrides = {name: getattr(self, name) for name in _RADIO_FIELDS if getattr(self, name) is not None}
        return dataclasses.replace(PRESETS[self.preset], **overrides)
