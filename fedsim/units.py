"""Physical quantities at the edges: parse "20 Mbps", print "1.1 MB".

Inside fedsim every quantity is an SI float: bandwidth in bits per second,
durations in seconds, sizes in bytes. Humans write units only in scenario files
and read them only in reports; this module is the only translation.

Parsing (``parse_bandwidth``, ``parse_duration``, ``parse_size``):

* a number followed by a unit, with or without a space: ``"20 Mbps"``,
  ``"1.5Gbps"``, ``"50 ms"``, ``"2 min"``, ``"20 MB"``, ``"1 MiB"``;
* ``"inf"`` (also ``"infinity"``, any case) or ``float("inf")``: unbounded;
* a bare number (``20``, ``0.05``, ``"300"``) is read in the unit that the key
  implies, which is always the SI base unit: bits/s for a bandwidth, seconds for
  a duration, bytes for a size. So ``uplink: 5000000`` is 5 Mbps and
  ``deadline: 60`` is one minute.

Units (decimal prefixes are powers of 1000, binary ones powers of 1024):

* bandwidth: ``bps``, ``kbps``, ``Mbps``, ``Gbps``, ``Tbps`` (case-insensitive;
  ``bit/s``, ``kbit/s``, ``Mbit/s``, ``Gbit/s`` too);
* duration: ``us`` (or ``µs``), ``ms``, ``s`` (``sec``), ``min``, ``h``;
* size: ``B``, ``kB`` (= ``KB``), ``MB``, ``GB``, ``TB`` (decimal) and ``KiB``,
  ``MiB``, ``GiB``, ``TiB`` (binary). Sizes are case-sensitive because ``Mb``
  (megabits) is not ``MB`` (megabytes); a bit unit in a size is an error.

Signs are parsed, not judged: ``parse_bandwidth("-3 Mbps")`` returns -3e6 and
the config validators, which know the key, reject it with its name. Every
parse error is a ``ValueError`` that quotes the value and lists the units, e.g.
``'20 Mbsp' is not a bandwidth; expected e.g. '20 Mbps' (units: bps, kbps,
Mbps, Gbps)``.

Formatting (``format_bytes``, ``format_seconds``, ``format_bandwidth``) follows
the paper's tables: decimal units, one decimal below 100 and none above, a
trailing ``.0`` dropped: 266,610 x 4 B -> ``"1.1 MB"``, 213.3e6 B -> ``"213 MB"``,
882 s -> ``"14.7 min"``, 10 s -> ``"10 s"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

__all__ = [
    "BANDWIDTH_UNITS",
    "DURATION_UNITS",
    "SIZE_UNITS",
    "format_bandwidth",
    "format_bytes",
    "format_seconds",
    "parse_bandwidth",
    "parse_duration",
    "parse_quantity",
    "parse_size",
]

# Multipliers to SI base units. Bandwidth units are matched case-insensitively
# (keys are lower case); size units are case-sensitive (MB vs Mb).
BANDWIDTH_UNITS: Mapping[str, float] = {
    "bps": 1.0,
    "bit/s": 1.0,
    "kbps": 1e3,
    "kbit/s": 1e3,
    "mbps": 1e6,
    "mbit/s": 1e6,
    "gbps": 1e9,
    "gbit/s": 1e9,
    "tbps": 1e12,
    "tbit/s": 1e12,
}
DURATION_UNITS: Mapping[str, float] = {
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "min": 60.0,
    "h": 3600.0,
}
SIZE_UNITS: Mapping[str, float] = {
    "B": 1.0,
    "kB": 1e3,
    "KB": 1e3,
    "MB": 1e6,
    "GB": 1e9,
    "TB": 1e12,
    "KiB": 1024.0,
    "MiB": 1024.0**2,
    "GiB": 1024.0**3,
    "TiB": 1024.0**4,
}

# kind -> (unit table, case-sensitive, example, units listed in messages, noun)
_KINDS: dict[str, tuple[Mapping[str, float], bool, str, str, str]] = {
    "bandwidth": (BANDWIDTH_UNITS, False, "20 Mbps", "bps, kbps, Mbps, Gbps", "a bandwidth"),
    "duration": (DURATION_UNITS, True, "50 ms", "us, ms, s, min, h", "a duration"),
    "size": (SIZE_UNITS, True, "20 MB", "B, kB, MB, GB, KiB, MiB, GiB", "a size"),
}

_NUMBER_UNIT = re.compile(
    r"^\s*(?P<num>[+-]?(?:\d+(?:_\d+)*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>[^\s\d].*?)?\s*$"
)
_INF = re.compile(r"^\s*(?P<sign>[+-]?)(?:inf|infinity)\s*$", re.IGNORECASE)


def parse_quantity(value: str | float | int, kind: str) -> float:
    """Parse ``value`` as a quantity of ``kind`` ("bandwidth", "duration",
    "size") and return it in SI base units (bits/s, s, bytes).

    Bare numbers are taken in the base unit; ``"inf"`` gives ``math.inf``.

    Raises:
        ValueError: the value is not a number with a unit of this kind (the
            message quotes the value and lists the accepted units), or is NaN.
        KeyError: ``kind`` is not one of the three kinds.
    """
    table, case_sensitive, example, listed, noun = _KINDS[kind]

    def bad(hint: str = "") -> ValueError:
        return ValueError(
            f"{value!r} is not {noun}; expected e.g. {example!r} (units: {listed}){hint}"
        )

    if isinstance(value, bool):
        raise bad()
    if isinstance(value, (int, float)):
        number = float(value)
        if math.isnan(number):
            raise bad()
        return number
    if not isinstance(value, str):
        raise bad()
    if (inf := _INF.match(value)) is not None:
        return -math.inf if inf["sign"] == "-" else math.inf
    match = _NUMBER_UNIT.match(value)
    if match is None:
        raise bad()
    number = float(match["num"].replace("_", ""))
    unit = match["unit"]
    if unit is None:
        return number
    key = unit if case_sensitive else unit.lower()
    if key not in table:
        hint = ""
        if kind == "size" and unit.endswith(("b", "bps", "bit")):
            hint = f"; {unit!r} counts bits, sizes are in bytes (B)"
        elif kind == "bandwidth" and unit.endswith("B"):
            hint = f"; {unit!r} is a size, bandwidths are in bits per second"
        raise bad(hint)
    return number * table[key]


def parse_bandwidth(value: str | float | int) -> float:
    """``"20 Mbps"`` -> 2e7 bits/s; a bare number is bits/s. See ``parse_quantity``."""
    return parse_quantity(value, "bandwidth")


def parse_duration(value: str | float | int) -> float:
    """``"50 ms"`` -> 0.05 s; a bare number is seconds. See ``parse_quantity``."""
    return parse_quantity(value, "duration")


def parse_size(value: str | float | int) -> float:
    """``"1 MiB"`` -> 1048576.0 bytes; a bare number is bytes. See ``parse_quantity``."""
    return parse_quantity(value, "size")


def _short(number: float) -> str:
    """One decimal below 100, none above; drop a trailing '.0' (paper style)."""
    text = f"{number:.1f}" if abs(number) < 99.95 else f"{number:.0f}"
    return text[:-2] if text.endswith(".0") else text


def _scaled(value: float, steps: list[tuple[float, str]]) -> str:
    """Print ``value`` in the largest unit of ``steps`` (ascending) it reaches."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    magnitude = abs(value)
    chosen = steps[0]
    for step in steps:
        # pick the unit in which the rounded number stays below 1000
        if magnitude >= step[0] * 0.99995:
            chosen = step
    factor, unit = chosen
    return f"{_short(value / factor)} {unit}"


def format_bytes(num_bytes: float) -> str:
    """Bytes in decimal units as the paper prints them.

    ``format_bytes(266_610 * 4) == "1.1 MB"``, ``format_bytes(213.3e6) ==
    "213 MB"``, ``format_bytes(300) == "300 B"``, ``format_bytes(29.2e9) ==
    "29.2 GB"``.
    """
    if 0 < abs(num_bytes) < 1000 and float(num_bytes).is_integer():
        return f"{int(num_bytes)} B"
    return _scaled(float(num_bytes), [(1.0, "B"), (1e3, "kB"), (1e6, "MB"), (1e9, "GB"), (1e12, "TB")])


def format_seconds(seconds: float) -> str:
    """Seconds in ms, s, min or h: ``0.05 -> "50 ms"``, ``10 -> "10 s"``,
    ``1.07 -> "1.1 s"``, ``882 -> "14.7 min"``, ``7200 -> "2 h"``."""
    if seconds == 0:
        return "0 s"
    return _scaled(float(seconds), [(1e-3, "ms"), (1.0, "s"), (60.0, "min"), (3600.0, "h")])


def format_bandwidth(bits_per_s: float) -> str:
    """Bits per second in decimal units: ``2e7 -> "20 Mbps"``."""
    if bits_per_s == 0:
        return "0 bps"
    return _scaled(
        float(bits_per_s), [(1.0, "bps"), (1e3, "kbps"), (1e6, "Mbps"), (1e9, "Gbps"), (1e12, "Tbps")]
    )
