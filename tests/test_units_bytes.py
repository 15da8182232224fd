"""Bandwidths that cannot be misread: bit rates stay, byte rates are x 8, and a
unit whose case would decide between the two is refused (issue 12)."""

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedsim.report._units import format_bit_rate, format_bytes, format_seconds
from fedsim.units import parse_bandwidth, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "bits_per_s"),
    [
        # bit rates, as written
        ("5 bps", 5.0),
        ("5 b/s", 5.0),
        ("5 bit/s", 5.0),
        ("5 kbps", 5_000.0),
        ("5 Kbps", 5_000.0),
        ("5 kb/s", 5_000.0),
        ("5 Mbps", 5_000_000.0),
        ("5 mbps", 5_000_000.0),  # no one means millibits: a bit rate's prefix may be lower case
        ("5 Mb/s", 5_000_000.0),
        ("5 Mbit/s", 5_000_000.0),
        ("5 Mbits/s", 5_000_000.0),
        ("5 Gbps", 5_000_000_000.0),
        ("5 Gbit/s", 5_000_000_000.0),
        ("5 Tbps", 5_000_000_000_000.0),
        ("5 Kibit/s", 5 * 1024.0),
        ("5 Mibps", 5 * 1_048_576.0),
        # byte rates: bytes x 8
        ("5 B/s", 40.0),
        ("5 Bps", 40.0),
        ("5 kB/s", 40_000.0),
        ("5 KB/s", 40_000.0),
        ("5 kBps", 40_000.0),
        ("5 MB/s", 40_000_000.0),
        ("5 MBps", 40_000_000.0),  # read as 5 Mbit/s before issue 12: an 8x error
        ("5 GB/s", 40_000_000_000.0),
        ("5 GBps", 40_000_000_000.0),
        ("5 TB/s", 40_000_000_000_000.0),
        ("5 KiB/s", 40_960.0),
        ("5 MiB/s", 41_943_040.0),
        ("5 GiB/s", 42_949_672_960.0),
        ("0.5MB/s", 4_000_000.0),
    ],
)
def test_bit_and_byte_rates(text, bits_per_s):
    assert parse_bandwidth(text) == bits_per_s


@pytest.mark.parametrize(
    ("text", "suggested"),
    [
        ("5 MBPS", "write '5 Mbps' for bits per second or '5 MB/s' for bytes per second"),
        ("5 mbPS", "write '5 Mbps' for bits per second or '5 MB/s' for bytes per second"),
        ("2.5 GBPS", "write '2.5 Gbps' for bits per second or '2.5 GB/s' for bytes per second"),
        ("5 kBPS", "write '5 kbps' for bits per second or '5 kB/s' for bytes per second"),
        ("5 mB/s", "write '5 Mbps' for bits per second or '5 MB/s' for bytes per second"),
        ("5 Mbit/S", "write '5 Mbps' for bits per second or '5 MB/s' for bytes per second"),
        ("5 MB", "'MB' is a size, a bandwidth is per second: write '5 MB/s'"),
        ("5 KiB", "'KiB' is a size, a bandwidth is per second: write '5 KiB/s'"),
        ("5 Mb", "'Mb' is an amount of bits, a bandwidth is per second: write '5 Mbps'"),
        ("5 Mbit", "'Mbit' is an amount of bits, a bandwidth is per second: write '5 Mbps'"),
    ],
)
def test_ambiguous_units_are_refused_saying_how_to_write_them(text, suggested):
    with pytest.raises(ValueError) as info:
        parse_bandwidth(text)
    message = str(info.value)
    assert message.startswith(f"{text!r} is not a bandwidth; expected e.g. '20 Mbps'")
    assert suggested in message
    assert "\n" not in message


def test_a_rate_is_not_a_size_and_case_matters_in_sizes():
    assert parse_size("5 MB") == 5_000_000.0
    with pytest.raises(ValueError, match=r"^'5 MBps' is not a size; .*'MBps' is a bandwidth"):
        parse_size("5 MBps")
    with pytest.raises(ValueError, match=r"^'5 MB/s' is not a size; .*'MB/s' is a bandwidth"):
        parse_size("5 MB/s")
    with pytest.raises(ValueError, match=r"^'5 mB' is not a size; .*case-sensitive"):
        parse_size("5 mB")


def test_an_overflowing_number_is_not_silently_unbounded():
    with pytest.raises(ValueError, match=r"^'1e400 Mbps' is too large; write 'inf'"):
        parse_bandwidth("1e400 Mbps")
    with pytest.raises(ValueError, match=r"^'1e306 TB/s' is too large"):
        parse_bandwidth("1e306 TB/s")  # 1e306 x 8e12 overflows only after the unit
    assert parse_bandwidth("inf") == math.inf


# What the report writes, the scenario parser reads back (one set of unit names).


@given(st.floats(min_value=1e3, max_value=1e17, allow_nan=False))
def test_report_bytes_read_back_as_sizes(n_bytes):
    text = format_bytes(n_bytes)
    assert re.fullmatch(r"\d+\.\d [kMGTP]B", text), text
    scale = parse_size(f"1 {text.split()[1]}")
    assert abs(parse_size(text) - n_bytes) <= 0.05 * scale * (1 + 1e-9)


@given(st.floats(min_value=1e-3, max_value=1e8, allow_nan=False))
def test_report_seconds_read_back_as_durations(seconds):
    text = format_seconds(seconds)
    scale = parse_duration(f"1 {text.split()[1]}")
    assert abs(parse_duration(text) - seconds) <= 0.05 * scale * (1 + 1e-9)


@given(st.floats(min_value=1.0, max_value=1e13, allow_nan=False))
def test_report_bit_rates_read_back_as_bandwidths(bits_per_s):
    text = format_bit_rate(bits_per_s)  # three significant digits
    assert parse_bandwidth(text) == pytest.approx(bits_per_s, rel=5e-3)
