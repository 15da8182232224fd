"""Physical quantities at the edges: parse "20 Mbps", "5 MB/s", "50 ms", "1 MiB".

Inside fedsim every quantity is an SI float: bandwidth in bits per second,
durations in seconds, sizes in bytes. Humans write units only in scenario files
and read them only in reports; this module reads them (the report's
``fedsim.report._units`` is the one place that writes them).

Parsing (``parse_bandwidth``, ``parse_duration``, ``parse_size``):

* a number followed by a unit, with or without a space: ``"20 Mbps"``,
  ``"1.5Gbps"``, ``"5 MB/s"``, ``"50 ms"``, ``"2 min"``, ``"20 MB"``, ``"1 MiB"``;
* ``"inf"`` (also ``"infinity"``, any case) or ``float("inf")``: unbounded;
* a bare number (``20``, ``0.05``, ``"300"``) is read in the unit that the key
  implies, which is always the SI base unit: bits/s for a bandwidth, seconds for
  a duration, bytes for a size. So ``uplink: 5000000`` is 5 Mbps and
  ``deadline: 60`` is one minute.

Units (decimal prefixes are powers of 1000, binary ones powers of 1024):

* bandwidth in bits per second: ``bps``, ``kbps``, ``Mbps``, ``Gbps``, ``Tbps``,
  also written ``Mb/s``, ``Mbit/s`` or ``Mbits/s``, and with binary prefixes
  (``Mibit/s``);
* bandwidth in bytes per second, multiplied by 8: a size unit followed by
  ``/s`` or ``ps``: ``B/s``, ``kB/s``, ``MB/s``, ``GB/s``, ``MBps``, ``GBps``,
  ``KiB/s``, ``MiB/s``. ``"5 MB/s"`` is 4e7 bits/s;
* duration: ``us`` (or ``µs``), ``ms``, ``s`` (``sec``), ``min``, ``h``, ``d``
  (every unit the report writes reads back);
* size: ``B``, ``kB`` (= ``KB``), ``MB``, ``GB``, ``TB``, ``PB`` (decimal) and ``KiB``,
  ``MiB``, ``GiB``, ``TiB`` (binary).

Case matters where it tells bits from bytes: ``b`` is a bit and ``B`` a byte,
so ``"5 Mbps"`` is 5e6 bits/s and ``"5 MBps"`` is 4e7. Only a bit rate's
decimal prefix may be written in either case (``"20 mbps"``; ``"1 GBPS"`` is
refused). A unit that differs from a known one only in case (``"MBPS"``,
``"Mbit/S"``), a size where a rate is expected (``"5 MB"``) and a rate where a
size is expected are refused, with the way to write what was probably meant.

Signs are parsed, not judged: ``parse_bandwidth("-3 Mbps")`` returns -3e6 and
the config validators, which know the key, reject it with its name. Every
parse error is a ``ValueError`` that quotes the value and lists the units, e.g.
``'20 Mbsp' is not a bandwidth; expected e.g. '20 Mbps' (units: bps, kbps,
Mbps, Gbps; bytes per second: B/s, kB/s, MB/s, GB/s)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

__all__ = [
    "BANDWIDTH_UNITS",
    "DURATION_UNITS",
    "SIZE_UNITS",
    "parse_bandwidth",
    "parse_duration",
    "parse_quantity",
    "parse_size",
]

# Multipliers to SI base units. Every table is matched case-sensitively.
DURATION_UNITS: Mapping[str, float] = {
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
SIZE_UNITS: Mapping[str, float] = {
    "B": 1.0,
    "kB": 1e3,
    "KB": 1e3,
    "MB": 1e6,
    "GB": 1e9,
    "TB": 1e12,
    "PB": 1e15,
    "KiB": 1024.0,
    "MiB": 1024.0**2,
    "GiB": 1024.0**3,
    "TiB": 1024.0**4,
}


def _bandwidth_units() -> dict[str, float]:
    """Every bandwidth unit, in bits/s per unit.

    Bit rates: a prefix (decimal in either case, since no one means millibits,
    or binary) and ``bps``, ``b/s``, ``bit/s`` or ``bits/s``. Byte rates: a size
    unit of ``SIZE_UNITS`` (whose case is exact) and ``/s`` or ``ps``, times 8.
    """
    prefixes = {"": 1.0}
    for letter, factor in (("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        prefixes[letter.lower()] = prefixes[letter.upper()] = factor
    for letter, power in (("K", 1), ("M", 2), ("G", 3), ("T", 4)):
        prefixes[f"{letter}i"] = 1024.0**power
    table = {
        prefix + bits: factor
        for prefix, factor in prefixes.items()
        for bits in ("bps", "b/s", "bit/s", "bits/s")
    }
    for size, num_bytes in SIZE_UNITS.items():
        table[f"{size}/s"] = table[f"{size}ps"] = 8.0 * num_bytes
    return table


BANDWIDTH_UNITS: Mapping[str, float] = _bandwidth_units()

# kind -> (unit table, example, units listed in messages, noun)
_KINDS: dict[str, tuple[Mapping[str, float], str, str, str]] = {
    "bandwidth": (
        BANDWIDTH_UNITS,
        "20 Mbps",
        "bps, kbps, Mbps, Gbps; bytes per second: B/s, kB/s, MB/s, GB/s",
        "a bandwidth",
    ),
    "duration": (DURATION_UNITS, "50 ms", "us, ms, s, min, h, d", "a duration"),
    "size": (SIZE_UNITS, "20 MB", "B, kB, MB, GB, KiB, MiB, GiB", "a size"),
}

_NUMBER_UNIT = re.compile(
    r"^\s*(?P<num>[+-]?(?:\d+(?:_\d+)*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>[^\s\d].*?)?\s*$"
)
_INF = re.compile(r"^\s*(?P<sign>[+-]?)(?:inf|infinity)\s*$", re.IGNORECASE)
_BIT_AMOUNT = re.compile(r"^(?:[kKmMgGtT]i?)?(?:b|bits?)$")


def _hint(unit: str, kind: str, number: str) -> str:
    """Why ``unit`` is not a unit of ``kind`` and how to write what was probably
    meant; empty when there is nothing better to say than the list of units."""
    if kind == "bandwidth":
        folded = unit.casefold()
        if any(known.casefold() == folded for known in BANDWIDTH_UNITS):
            prefix = {"k": "k", "m": "M", "g": "G", "t": "T"}.get(folded[:1], "")
            return (f"; {unit!r} differs from a unit only in case, and case tells bits ('b') "
                    f"from bytes ('B'): write '{number} {prefix}bps' for bits per second or "
                    f"'{number} {prefix}B/s' for bytes per second")
        if unit in SIZE_UNITS:
            return (f"; {unit!r} is a size, a bandwidth is per second: write "
                    f"'{number} {unit}/s' for bytes per second")
        if _BIT_AMOUNT.match(unit):
            return (f"; {unit!r} is an amount of bits, a bandwidth is per second: write "
                    f"'{number} {unit.removesuffix('its').removesuffix('it')}ps'")
    if kind == "size":
        if unit in BANDWIDTH_UNITS:
            return f"; {unit!r} is a bandwidth, a size has no '/s'"
        if _BIT_AMOUNT.match(unit):
            return f"; {unit!r} counts bits, sizes are in bytes (B)"
        if any(known.casefold() == unit.casefold() for known in SIZE_UNITS):
            return "; units are case-sensitive ('b' is a bit, 'B' a byte)"
    if kind == "duration" and any(k.casefold() == unit.casefold() for k in DURATION_UNITS):
        return "; units are case-sensitive"
    return ""


def parse_quantity(value: str | float | int, kind: str) -> float:
    """Parse ``value`` as a quantity of ``kind`` ("bandwidth", "duration",
    "size") and return it in SI base units (bits/s, s, bytes).

    Bare numbers are taken in the base unit; ``"inf"`` gives ``math.inf``.

    Raises:
        ValueError: the value is not a number with a unit of this kind (the
            message quotes the value, lists the accepted units and, for a unit
            that is probably a mistake, says how to write it), is NaN, or is a
            finite number too large for a float.
        KeyError: ``kind`` is not one of the three kinds.
    """
    table, example, listed, noun = _KINDS[kind]

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
    if unit is not None:
        if unit not in table:
            raise bad(_hint(unit, kind, match["num"]))
        number *= table[unit]
    if math.isinf(number):
        raise ValueError(f"{value!r} is too large; write 'inf' for an unbounded {kind}")
    return number


def parse_bandwidth(value: str | float | int) -> float:
    """``"20 Mbps"`` -> 2e7 bits/s, ``"5 MB/s"`` -> 4e7 bits/s; a bare number is
    bits/s. See ``parse_quantity`` (raises ``ValueError``)."""
    return parse_quantity(value, "bandwidth")


def parse_duration(value: str | float | int) -> float:
    """``"50 ms"`` -> 0.05 s; a bare number is seconds. See ``parse_quantity``
    (raises ``ValueError``)."""
    return parse_quantity(value, "duration")


def parse_size(value: str | float | int) -> float:
    """``"1 MiB"`` -> 1048576.0 bytes; a bare number is bytes. See
    ``parse_quantity`` (raises ``ValueError``)."""
    return parse_quantity(value, "size")
