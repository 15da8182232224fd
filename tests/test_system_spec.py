"""The system: section (units, defaults, errors), profiles and traces, payload bytes."""

import math

import numpy as np
import pytest
from pydantic import ValidationError

from fedsim import seeding
from fedsim.errors import InputError
from fedsim.system import (
    PayloadSpec,
    SystemConfig,
    draw_profiles,
    flops_fraction,
    payload_bytes,
    remaining_rate,
    simulate,
    work_fraction,
)
from fedsim.system.spec import ComputeSpec, RoundsSpec

LENET_WEIGHTS = [784 * 300, 300 * 100, 100 * 10]
LENET_BIASES = 300 + 100 + 10


def errors(raw):
    with pytest.raises(ValidationError) as info:
        SystemConfig.model_validate(raw)
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in info.value.errors()]


# --- config


def test_defaults_are_the_papers_idealised_setting():
    system = SystemConfig()
    assert system.clients.downlink.value == math.inf
    assert system.clients.rtt.value == 0.0 and system.clients.speed.value == 1.0
    assert system.server.downlink == math.inf and system.server.uplink == math.inf
    assert system.rounds.kept_count(100) == 100 and system.rounds.deadline is None
    assert (system.payload.value_bits, system.payload.mask_encoding) == (32, "none")
    assert (system.compute.t_comp_full, system.compute.reference_samples) == (10.0, 400)
    assert not system.timing_decides_participation()


def test_units_are_parsed_and_the_dump_loads_back():
    system = SystemConfig.model_validate({
        "clients": {
            "downlink": {"dist": "lognormal", "median": "20 Mbps", "sigma": 0.6},
            "uplink": "5 Mbps",
            "rtt": {"dist": "uniform", "low": "20 ms", "high": "120 ms"},
            "speed": {"dist": "normal", "mean": 1.0, "std": 0.3, "min": 0.2, "max": 3.0},
        },
        "server": {"downlink": "1 Gbps", "aggregation": "2 s"},
        "rounds": {"deadline": "1 min", "participation": 10, "overcommit": 0.3},
        "payload": {"overhead": "1 kB"},
    })
    assert system.clients.downlink.median == 20e6
    assert system.clients.uplink.value == 5e6
    assert (system.clients.rtt.low, system.clients.rtt.high) == (0.02, 0.12)
    assert system.server.downlink == 1e9 and system.server.aggregation == 2.0
    assert system.rounds.deadline == 60.0 and system.payload.overhead == 1000
    assert system.rounds.selected_count(100) == 13
    assert system.timing_decides_participation()
    dumped = system.model_dump()
    assert dumped["server"]["uplink"] == "inf"  # JSON-safe
    assert SystemConfig.model_validate(dumped) == system


@pytest.mark.parametrize(
    ("raw", "where", "message"),
    [
        ({"clients": {"uplink": "-3 Mbps"}}, "clients.uplink", "'-3 Mbps' must be > 0"),
        ({"clients": {"downlink": 0}}, "clients.downlink", "0 must be > 0"),
        ({"server": {"uplink": "0 Mbps"}}, "server.uplink", "'0 Mbps' must be > 0"),
        ({"server": {"downlink": "-1 Gbps"}}, "server.downlink", "'-1 Gbps' must be > 0"),
        ({"clients": {"uplink": {"dist": "gauss", "mean": 1}}}, "clients.uplink",
         "unknown distribution 'gauss'; valid: constant, uniform, normal, lognormal"),
        ({"clients": {"uplink": "20 Mbsp"}}, "clients.uplink",
         "'20 Mbsp' is not a bandwidth; expected e.g. '20 Mbps' (units: bps, kbps, Mbps, Gbps; "
         "bytes per second: B/s, kB/s, MB/s, GB/s)"),
        ({"clients": {"rtt": {"dist": "uniform", "low": "50 ms", "high": "20 ms"}}}, "clients.rtt",
         "low '50 ms' must be <= high '20 ms'"),
        ({"clients": {"uplink": {"dist": "lognormal", "median": "-5 Mbps", "sigma": 0.5}}},
         "clients.uplink", "median: '-5 Mbps' must be > 0"),
        ({"clients": {"speed": {"dist": "normal", "mean": 1, "std": 0.3}}}, "clients.speed",
         "a normal distribution here needs 'min' (values must be > 0)"),
        ({"clients": {"availability": 1.5}}, "clients.availability", "1.5 must be in [0, 1]"),
        ({"rounds": {"participation": 1}}, "rounds.participation",
         "1 is ambiguous: write 1.0 for every client, or a count >= 2"),
        ({"rounds": {"participation": 1.5}}, "rounds.participation",
         "1.5 must be a fraction in (0, 1] or an int count >= 2"),
        ({"rounds": {"dropout": 1.0}}, "rounds.dropout", "1.0 must be in [0, 1)"),
        ({"rounds": {"deadline": "0 s"}}, "rounds.deadline", "'0 s' must be > 0"),
        ({"payload": {"overhead": "20 Mb"}}, "payload.overhead",
         "'20 Mb' is not a size; expected e.g. '20 MB' (units: B, kB, MB, GB, KiB, MiB, GiB); "
         "'Mb' counts bits, sizes are in bytes (B)"),
        ({"clients": {"trace": "p.csv", "uplink": "5 Mbps"}}, "clients",
         "trace 'p.csv' gives every client's downlink, uplink, rtt, speed, availability; "
         "remove uplink (or the trace)"),
    ],
)
def test_bad_values_name_the_key_and_quote_the_value(raw, where, message):
    assert errors(raw) == [(where, message)]


def test_unknown_keys_are_refused():
    assert errors({"server": {"capacity": "1 Gbps"}})[0] == (
        "server.capacity", "Extra inputs are not permitted")
    assert errors({"clients": {"uplink": {"dist": "lognormal", "median": "5 Mbps", "sigma": 1,
                                          "mean": 3}}})[0][1] == "Extra inputs are not permitted"
    assert errors({"payload": {"mask_encoding": "huffman"}})[0][0] == "payload.mask_encoding"
    assert errors({"compute": {"work": "time"}})[0][0] == "compute.work"


def test_participation_counts():
    assert RoundsSpec(participation=0.1).kept_count(100) == 10
    assert RoundsSpec(participation=0.001).kept_count(100) == 1  # at least one
    assert RoundsSpec(participation=30).kept_count(20) == 20
    assert RoundsSpec(participation=0.1, overcommit=0.3).selected_count(100) == 13
    assert RoundsSpec(participation=1.0, overcommit=0.3).selected_count(100) == 100
    assert RoundsSpec(deadline="inf").deadline is None


# --- profiles


def test_profiles_are_drawn_per_attribute_from_keyed_streams():
    clients = SystemConfig.model_validate({"clients": {
        "uplink": {"dist": "lognormal", "median": "5 Mbps", "sigma": 0.6},
        "speed": {"dist": "normal", "mean": 1.0, "std": 0.3, "min": 0.2, "max": 3.0},
        "rtt": {"dist": "uniform", "low": "20 ms", "high": "120 ms"},
        "availability": {"dist": "lognormal", "median": 0.8, "sigma": 0.5},
    }}).clients
    profiles = draw_profiles(clients, 50, seed=7)
    expected_up = 5e6 * np.exp(0.6 * seeding.rng(7, "profile", "uplink").standard_normal(50))
    assert profiles.uplink_bps.tolist() == expected_up.tolist()
    expected_speed = np.clip(seeding.rng(7, "profile", "speed").normal(1.0, 0.3, 50), 0.2, 3.0)
    assert profiles.speed.tolist() == expected_speed.tolist()
    assert ((profiles.rtt_s >= 0.02) & (profiles.rtt_s <= 0.12)).all()
    assert (profiles.availability <= 1.0).all() and (profiles.availability == 1.0).any()  # clipped
    assert (profiles.downlink_bps == math.inf).all()
    # client k keeps its profile when there are more clients: row k of the same stream
    more = draw_profiles(clients, 80, seed=7)
    assert more.uplink_bps[:50].tolist() == profiles.uplink_bps.tolist()


TRACE = "client_id,downlink,uplink,rtt,speed,availability\n"


def write(tmp_path, text, name="profiles.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def trace_clients(name="profiles.csv"):
    return SystemConfig.model_validate({"clients": {"trace": name}}).clients


def test_trace_rows_map_to_client_ids(tmp_path):
    write(tmp_path, "uplink,client_id,downlink,rtt,speed,availability\n"
                    "2 Mbps,1,20 Mbps,50 ms,1.5,0.9\n\n"
                    "3000000,0,inf,0.1,1,1\n")
    profiles = draw_profiles(trace_clients(), 2, seed=0, base_dir=tmp_path)
    assert profiles.uplink_bps.tolist() == [3e6, 2e6]
    assert profiles.downlink_bps.tolist() == [math.inf, 20e6]
    assert profiles.rtt_s.tolist() == [0.1, 0.05]
    assert profiles.speed.tolist() == [1.0, 1.5]
    assert profiles.availability.tolist() == [1.0, 0.9]


@pytest.mark.parametrize(
    ("text", "n_clients", "message"),
    [
        ("client_id,downlink,uplink,speed,availability\n0,1 Mbps,1 Mbps,1,1\n", 1,
         "line 1: missing column(s) rtt; expected the columns client_id, downlink, uplink, rtt, "
         "speed, availability"),
        (TRACE.replace("availability", "availability,colour") + "0,1 Mbps,1 Mbps,0,1,1,red\n", 1,
         "line 1: unknown column(s) 'colour'"),
        (TRACE + "0,1 Mbps,1 Mbps,0 ms,1,1\n1,1 Mbps,1 Mbps,0 ms,1,1\n", 3,
         ": 2 client rows (lines 2..3), but the scenario has 3 clients"),
        (TRACE + "0,1 Mbps,1 Mbps,0 ms,1,1\n1,1 Mbps,1 Mbps,0 ms,1,1\n", 1,
         "line 3: client_id 1 is outside 0..0"),
        (TRACE + "0,1 Mbps,1 Mbps,0 ms,1,1\n0,1 Mbps,1 Mbps,0 ms,1,1\n", 2,
         "line 3: client_id 0 repeats line 2"),
        (TRACE + "0,1 Mbps,5 Mbsp,0 ms,1,1\n", 1,
         "line 2, column uplink: '5 Mbsp' is not a bandwidth; expected e.g. '20 Mbps'"),
        (TRACE + "0,1 Mbps,-5 Mbps,0 ms,1,1\n", 1, "line 2, column uplink: '-5 Mbps' must be > 0"),
        (TRACE + "0,1 Mbps,1 Mbps,0 ms,1,1.2\n", 1,
         "line 2, column availability: '1.2' must be in [0, 1]"),
        (TRACE + "0,1 Mbps,1 Mbps,0 ms\n", 1, "line 2: 4 cells, expected 6"),
        (TRACE + "x,1 Mbps,1 Mbps,0 ms,1,1\n", 1, "line 2: client_id 'x' is not an integer"),
        ("", 1, "the file is empty"),
    ],
)
def test_malformed_traces_name_the_file_and_line(tmp_path, text, n_clients, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        draw_profiles(trace_clients(), n_clients, seed=0, base_dir=tmp_path)
    assert str(info.value).startswith(f"system.clients.trace {str(path)!r}")
    assert message in str(info.value)


def test_missing_trace_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read the file"):
        simulate(SystemConfig.model_validate({"clients": {"trace": "nope.csv"}}),
                 client_samples=np.full(2, 400), payload=payload_bytes([10], [10], 0, PayloadSpec()),
                 work_fraction=1.0, rounds=1, seed=0, base_dir=tmp_path)


# --- payload and work


def test_dense_lenet_payload_is_the_papers_1_1_mb():
    payload = payload_bytes(LENET_WEIGHTS, LENET_WEIGHTS, LENET_BIASES, PayloadSpec())
    assert payload.sent_params == payload.total_params == 266_610
    assert payload.down_bytes == payload.up_bytes == 266_610 * 4 == 1_066_440
    assert payload.first_round_extra_bytes == 0
    # a dense model has no mask, whatever the encoding
    bitmask = payload_bytes(LENET_WEIGHTS, LENET_WEIGHTS, LENET_BIASES,
                            PayloadSpec(mask_encoding="bitmask", mask_every_round=True))
    assert bitmask.down_bytes == 1_066_440 and bitmask.mask_bytes == 0


def test_sparse_payload_with_masks_by_hand():
    kept = [23520, 3000, 100]  # 10 % of each layer
    values = (23520 + 3000 + 100 + 410) * 4  # 108,120 B
    plain = payload_bytes(LENET_WEIGHTS, kept, LENET_BIASES, PayloadSpec())
    assert (plain.down_bytes, plain.up_bytes, plain.first_round_extra_bytes) == (values, values, 0)
    bitmask = payload_bytes(LENET_WEIGHTS, kept, LENET_BIASES, PayloadSpec(mask_encoding="bitmask"))
    assert bitmask.mask_bytes == 266_200 // 8 == 33_275
    assert (bitmask.down_bytes, bitmask.first_round_extra_bytes) == (values, 33_275)
    assert bitmask.down_bytes_in_round(1) == values + 33_275
    assert bitmask.down_bytes_in_round(2) == values and bitmask.up_bytes_in_round(1) == values
    # indices: 18 bits into 235,200 slots, 15 into 30,000, 10 into 1,000
    indices = payload_bytes(LENET_WEIGHTS, kept, LENET_BIASES,
                            PayloadSpec(mask_encoding="indices", mask_every_round=True,
                                        value_bits=16, overhead="100 B"))
    mask = math.ceil((23520 * 18 + 3000 * 15 + 100 * 10) / 8)
    assert indices.mask_bytes == mask == 58_670
    assert indices.down_bytes == indices.up_bytes == values // 2 + mask + 100
    assert indices.first_round_extra_bytes == 0


def test_payload_rejects_inconsistent_counts():
    with pytest.raises(ValueError, match="layers"):
        payload_bytes([10, 20], [10], 0, PayloadSpec())
    with pytest.raises(ValueError, match="layer 1"):
        payload_bytes([10, 20], [10, 21], 0, PayloadSpec())
    with pytest.raises(ValueError, match="bias_count"):
        payload_bytes([10], [5], -1, PayloadSpec())


def test_work_fractions():
    kept = [23520, 3000, 100]
    assert remaining_rate(LENET_WEIGHTS, kept) == 26620 / 266200 == 0.1
    assert work_fraction(ComputeSpec(), LENET_WEIGHTS, kept, LENET_BIASES) == 0.1
    # FLOPs: 4 per first-layer weight, 6 per later weight, 2 per bias
    sparse = 4 * 23520 + 6 * (3000 + 100) + 2 * 410
    dense = 4 * 235200 + 6 * (30000 + 1000) + 2 * 410
    assert flops_fraction(LENET_WEIGHTS, kept, LENET_BIASES) == sparse / dense
    assert work_fraction(ComputeSpec(work="flops"), LENET_WEIGHTS, kept, LENET_BIASES) == sparse / dense
    assert work_fraction(ComputeSpec(work="dense"), LENET_WEIGHTS, kept, LENET_BIASES) == 1.0
    assert flops_fraction(LENET_WEIGHTS, LENET_WEIGHTS, LENET_BIASES) == 1.0
