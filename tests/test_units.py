"""Units at the edges: parsing to SI floats (formatting: test_report_units.py)."""

import math

import pytest

from fedsim.report._units import format_bit_rate
from fedsim.units import (
    parse_bandwidth,
    parse_duration,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("20 Mbps", 20e6),
        ("1.5 Gbps", 1.5e9),
        ("500 kbps", 500e3),
        ("8 bps", 8.0),
        ("20Mbps", 20e6),
        ("  20 mbps ", 20e6),
        ("100 Mbit/s", 100e6),
        ("1e3 kbps", 1e6),
        ("inf", math.inf),
        ("Infinity", math.inf),
        ("-3 Mbps", -3e6),  # signs are parsed; the config rejects them with the key's name
        (5_000_000, 5e6),  # a bare number is bits/s
        ("300", 300.0),
        (math.inf, math.inf),
    ],
)
def test_parse_bandwidth(text, bps):
    assert parse_bandwidth(text) == bps


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("50 ms", 0.05),
        ("10 s", 10.0),
        ("2 min", 120.0),
        ("1 h", 3600.0),
        ("250 us", 250e-6),
        ("0 s", 0.0),
        (60, 60.0),
        ("inf", math.inf),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-15)


@pytest.mark.parametrize(
    ("text", "num_bytes"),
    [
        ("20 MB", 20e6),
        ("1 MiB", 1048576.0),
        ("300 B", 300.0),
        ("1.5 kB", 1500.0),
        ("2 GiB", 2 * 1024.0**3),
        ("0 B", 0.0),
        (1000, 1000.0),
    ],
)
def test_parse_size(text, num_bytes):
    assert parse_size(text) == num_bytes


def test_bad_bandwidth_quotes_value_and_units():
    with pytest.raises(ValueError) as info:
        parse_bandwidth("20 Mbsp")
    assert str(info.value) == (
        "'20 Mbsp' is not a bandwidth; expected e.g. '20 Mbps' "
        "(units: bps, kbps, Mbps, Gbps; bytes per second: B/s, kB/s, MB/s, GB/s)"
    )


@pytest.mark.parametrize("bad", ["", "Mbps", "20 MB", "fast", "nan", None, True, [20], "1 2 Mbps"])
def test_bad_bandwidths(bad):
    with pytest.raises(ValueError, match="is not a bandwidth"):
        parse_bandwidth(bad)


def test_size_refuses_bits_with_a_hint():
    with pytest.raises(ValueError, match="'Mb' counts bits, sizes are in bytes"):
        parse_size("20 Mb")


def test_bandwidth_refuses_bytes_with_a_hint():
    with pytest.raises(ValueError, match="'MB' is a size"):
        parse_bandwidth("20 MB")


@pytest.mark.parametrize("bad", ["10 sec s", "10 days", "ten s", float("nan")])
def test_bad_durations(bad):
    with pytest.raises(ValueError, match=r"is not a duration; expected e\.g\. '50 ms'"):
        parse_duration(bad)


@pytest.mark.parametrize("value", ["20 Mbps", "1.5 Gbps", "500 kbps", "8 bps"])
def test_format_parse_round_trip(value):
    assert format_bit_rate(parse_bandwidth(value)) == value
