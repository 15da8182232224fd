"""Human units for the report's tables and axes (private to fedsim.report).

Inside fedsim everything is bytes, seconds and fractions; only the report turns
them into what a person reads. Bytes are decimal, as in the paper's Table I
(1 MB = 10^6 B: 266,610 parameters x 4 B x 200 messages = 213.3 MB per round),
times are s / min / h / d, accuracies are percent.

Missing values (None, NaN, inf) format as ``MISSING`` ("—").
"""

from __future__ import annotations

import math

MISSING = "—"

_BYTE_UNITS: tuple[tuple[str, float], ...] = (
    ("B", 1.0),
    ("kB", 1e3),
    ("MB", 1e6),
    ("GB", 1e9),
    ("TB", 1e12),
    ("PB", 1e15),
)
# (name, seconds per unit, use this unit below this many seconds)
_TIME_UNITS: tuple[tuple[str, float, float], ...] = (
    ("ms", 1e-3, 1.0),
    ("s", 1.0, 120.0),
    ("min", 60.0, 7200.0),
    ("h", 3600.0, 48 * 3600.0),
    ("d", 86400.0, math.inf),
)
_BIT_RATE_UNITS: tuple[tuple[str, float], ...] = (
    ("bps", 1.0),
    ("kbps", 1e3),
    ("Mbps", 1e6),
    ("Gbps", 1e9),
    ("Tbps", 1e12),
)


_ENERGY_UNITS: tuple[tuple[str, float], ...] = (
    ("J", 1.0),
    ("kJ", 1e3),
    ("MJ", 1e6),
    ("GJ", 1e9),
)


def is_missing(value: object) -> bool:
    """True for None and for numbers that are NaN or infinite."""
    if value is None:
        return True
    try:
        return not math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True


def byte_unit(n_bytes: float) -> tuple[str, float]:
    """The largest decimal byte unit not above ``abs(n_bytes)``: ``("GB", 1e9)``.

    Used for an axis: pass the axis' largest value so every tick shares a unit.
    """
    magnitude = abs(float(n_bytes)) if not is_missing(n_bytes) else 0.0
    chosen = _BYTE_UNITS[0]
    for name, scale in _BYTE_UNITS:
        if magnitude >= scale:
            chosen = (name, scale)
    return chosen


def format_bytes(n_bytes: float | None, decimals: int = 1) -> str:
    """Decimal bytes with one unit: 213288000 -> "213.3 MB", 29.2e9 -> "29.2 GB".

    Below 1 kB the value is an integer count of bytes ("512 B").
    """
    if is_missing(n_bytes):
        return MISSING
    value = float(n_bytes)  # type: ignore[arg-type]
    name, scale = byte_unit(value)
    if scale == 1.0:
        return f"{value:.0f} B"
    index = [unit for unit, _ in _BYTE_UNITS].index(name)
    # 999.96 MB rounds to "1000.0 MB": say "1.0 GB" instead.
    if round(abs(value) / scale, decimals) >= 1000 and index + 1 < len(_BYTE_UNITS):
        name, scale = _BYTE_UNITS[index + 1]
    return f"{value / scale:.{decimals}f} {name}"


def energy_unit(joules: float) -> tuple[str, float]:
    """The largest of J, kJ, MJ, GJ not above ``abs(joules)``: ``("kJ", 1e3)``
    (for an axis: pass its largest value)."""
    magnitude = abs(float(joules)) if not is_missing(joules) else 0.0
    chosen = _ENERGY_UNITS[0]
    for name, scale in _ENERGY_UNITS:
        if magnitude >= scale:
            chosen = (name, scale)
    return chosen


def format_joules(joules: float | None, decimals: int = 1) -> str:
    """Energy with one unit: 12.3 -> "12.3 J", 45678 -> "45.7 kJ" (missing: "—")."""
    if is_missing(joules):
        return MISSING
    value = float(joules)  # type: ignore[arg-type]
    name, scale = energy_unit(value)
    if round(abs(value) / scale, decimals) >= 1000 and name != _ENERGY_UNITS[-1][0]:
        name, scale = _ENERGY_UNITS[[u for u, _ in _ENERGY_UNITS].index(name) + 1]
    return f"{value / scale:.{decimals}f} {name}"


def time_unit(seconds: float) -> tuple[str, float]:
    """The unit a person reads ``seconds`` in: ("ms", 1e-3), ("s", 1), ("min", 60),
    ("h", 3600) or ("d", 86400). Below 2 min: s; below 2 h: min; below 2 d: h.

    Used for an axis: pass the axis' largest value.
    """
    magnitude = abs(float(seconds)) if not is_missing(seconds) else 0.0
    if magnitude == 0.0:
        return ("s", 1.0)
    for name, scale, below in _TIME_UNITS:
        if magnitude < below:
            return (name, scale)
    return _TIME_UNITS[-1][:2]


def format_seconds(seconds: float | None, decimals: int = 1) -> str:
    """Seconds in the unit a person reads: 10 -> "10.0 s", 1350 -> "22.5 min",
    4.5e3 -> "75.0 min", 9e3 -> "2.5 h", 0.05 -> "50.0 ms"."""
    if is_missing(seconds):
        return MISSING
    value = float(seconds)  # type: ignore[arg-type]
    name, scale = time_unit(value)
    return f"{value / scale:.{decimals}f} {name}"


def format_percent(fraction: float | None, decimals: int = 1) -> str:
    """An accuracy fraction as percent: 0.9761 -> "97.6 %"."""
    if is_missing(fraction):
        return MISSING
    return f"{100.0 * float(fraction):.{decimals}f} %"  # type: ignore[arg-type]


def format_target(fraction: float) -> str:
    """A target accuracy as its shortest percent: 0.95 -> "95 %", 0.975 -> "97.5 %"."""
    text = f"{100.0 * float(fraction):.2f}".rstrip("0").rstrip(".")
    return f"{text} %"


def format_count(count: float | None) -> str:
    """An integer with thousands separators: 266610 -> "266,610"."""
    if is_missing(count):
        return MISSING
    return f"{round(float(count)):,d}"  # type: ignore[arg-type]


def format_rate(remaining_rate: float | None) -> str:
    """A remaining rate P_R with three significant digits: 0.1074 -> "0.107",
    0.41 -> "0.41", 1 -> "1.0"."""
    if is_missing(remaining_rate):
        return MISSING
    text = f"{float(remaining_rate):.3g}"  # type: ignore[arg-type]
    return text if any(c in text for c in ".e") else f"{text}.0"


def format_bit_rate(bits_per_s: float | None) -> str:
    """A link speed in decimal bit/s units: 1e7 -> "10 Mbps", 2.5e6 -> "2.5 Mbps"."""
    if is_missing(bits_per_s):
        return MISSING
    value = float(bits_per_s)  # type: ignore[arg-type]
    name, scale = _BIT_RATE_UNITS[0]
    for unit, unit_scale in _BIT_RATE_UNITS:
        if abs(value) >= unit_scale:
            name, scale = unit, unit_scale
    return f"{value / scale:.3g} {name}"


def format_signed(text_of_abs: str, negative: bool) -> str:
    """Prefix the formatted magnitude of a difference with its sign ("+" or "-")."""
    return f"{'-' if negative else '+'}{text_of_abs}"


def format_relative(value: float, reference: float) -> str:
    """The relative difference of ``value`` from ``reference`` in percent:
    (129, 134) -> "-3.7 %". Missing when the reference is 0 or either is missing."""
    if is_missing(value) or is_missing(reference) or float(reference) == 0.0:
        return MISSING
    relative = 100.0 * (float(value) - float(reference)) / abs(float(reference))
    return format_signed(f"{abs(relative):.1f} %", relative < 0)
