"""The base of every config section: strict, frozen pydantic models.

Unknown keys are errors (``extra="forbid"``), values are never coerced silently
between kinds (``strict`` where it matters is set per field), and a validated
config is immutable: code downstream trusts it and never re-checks it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base class of all scenario config sections."""

    # allow_inf_nan=False: no float setting admits NaN or infinity unless its
    # field says so (an unlimited link: fedsim.system.spec.SIFloatOrInf)
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)
