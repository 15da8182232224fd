"""The report's unit formatting: decimal bytes as in the paper, s/min/h."""

from __future__ import annotations

import math
import re

from hypothesis import given
from hypothesis import strategies as st

from fedsim.report._units import (
    byte_unit,
    format_bit_rate,
    format_bytes,
    format_count,
    format_percent,
    format_rate,
    format_relative,
    format_seconds,
    format_target,
    time_unit,
)


def test_bytes_are_decimal_as_in_the_paper() -> None:
    assert format_bytes(266_610 * 4 * 200) == "213.3 MB"  # Table I: 213 MB per round
    assert format_bytes(29.2e9) == "29.2 GB"
    assert format_bytes(22.8e6) == "22.8 MB"
    assert format_bytes(512) == "512 B"
    assert format_bytes(1500) == "1.5 kB"
    assert format_bytes(999.96e6) == "1.0 GB"  # not "1000.0 MB"
    assert format_bytes(float("nan")) == "—"
    assert format_bytes(None) == "—"
    assert byte_unit(31.7e9) == ("GB", 1e9)
    assert byte_unit(0) == ("B", 1.0)


def test_seconds_in_the_unit_a_person_reads() -> None:
    assert format_seconds(10) == "10.0 s"
    assert format_seconds(1.1) == "1.1 s"
    assert format_seconds(22.5 * 60) == "22.5 min"
    assert format_seconds(9000) == "2.5 h"
    assert format_seconds(0.05) == "50.0 ms"
    assert format_seconds(3 * 86400) == "3.0 d"
    assert format_seconds(math.inf) == "—"
    assert time_unit(119.0) == ("s", 1.0)
    assert time_unit(120.0) == ("min", 60.0)
    assert time_unit(7200.0) == ("h", 3600.0)


def test_other_formats() -> None:
    assert format_percent(0.9412) == "94.1 %"
    assert format_target(0.95) == "95 %"
    assert format_target(0.975) == "97.5 %"
    assert format_rate(1.0) == "1.0"
    assert format_rate(0.41) == "0.41"
    assert format_rate(0.8**10) == "0.107"
    assert format_count(266_610) == "266,610"
    assert format_bit_rate(1e7) == "10 Mbps"
    assert format_bit_rate(2.5e6) == "2.5 Mbps"
    assert format_relative(129, 134) == "-3.7 %"
    assert format_relative(1, 0) == "—"


@given(st.floats(min_value=1e3, max_value=1e17, allow_nan=False))
def test_formatted_bytes_read_back_within_rounding(n_bytes: float) -> None:
    text = format_bytes(n_bytes)
    match = re.fullmatch(r"(\d+\.\d) (kB|MB|GB|TB|PB)", text)
    assert match, text
    scale = {"kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "PB": 1e15}[match[2]]
    value = float(match[1])
    assert 1.0 <= value < 1000.0 or match[2] == "PB"
    assert abs(value * scale - n_bytes) <= 0.05 * scale * (1 + 1e-9)


@given(st.floats(min_value=1e-3, max_value=1e7, allow_nan=False))
def test_formatted_seconds_read_back_within_rounding(seconds: float) -> None:
    match = re.fullmatch(r"(\d+\.\d) (ms|s|min|h|d)", format_seconds(seconds))
    assert match
    scale = {"ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}[match[2]]
    assert abs(float(match[1]) * scale - seconds) <= 0.05 * scale * (1 + 1e-9)
