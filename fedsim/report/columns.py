"""Column contracts of the frames a report reads: checked once, at the report's
edge, then numeric columns made float (the contracts: docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    """Raise ValueError naming the missing columns of ``frame`` (the ``name``
    frame's contract is in docs/architecture.md)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{name} frame lacks columns {missing}; it has {sorted(map(str, frame.columns))}"
        )


def with_float_columns(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy of ``frame`` with the present ``columns`` as float64: nullable
    integers (``nra`` is ``Int64``) become floats, pd.NA becomes NaN.

    (Not `fedsim.data.as_float`, which scales uint8 images to [0, 1].)"""
    present = [c for c in columns if c in frame.columns]
    return frame.assign(
        **{c: pd.to_numeric(frame[c], errors="coerce").astype("float64") for c in present}
    )
