"""Dotted key paths, the one validation-error formatter, and the cache-key
content of a config (`fedsim.config.paths`, `.errors`, `.dump`)."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

import pytest
from pydantic import Field, ValidationError

from fedsim import config
from fedsim.config import paths
from fedsim.config.errors import MAX_MESSAGE_CHARS, format_validation_error
from fedsim.data.spec import DataConfig
from fedsim.errors import InputError
from fedsim.schema import Section

BASE = {"name": "t", "methods": {"hp-fl": {"level": 2}}}


# --------------------------------------------------------------------------- get / set


def test_set_path_creates_mappings_and_copies_the_value():
    raw: dict[str, Any] = {"system": None}
    value = {"dist": "uniform", "low": 1, "high": 2}
    paths.set_path(raw, ["system", "clients", "uplink"], value)
    paths.set_path(raw, ["system", "clients", "downlink"], value)
    assert raw == {"system": {"clients": {"uplink": value, "downlink": value}}}
    raw["system"]["clients"]["uplink"]["low"] = 0
    assert value["low"] == 1 and raw["system"]["clients"]["downlink"]["low"] == 1


def test_set_path_refuses_a_path_through_a_value():
    raw = {"system": {"clients": {"uplink": "1 Mbps"}}}
    with pytest.raises(paths.NotASectionError) as info:
        paths.set_path(raw, ["system", "clients", "uplink", "median"], "2 Mbps")
    assert (info.value.prefix, info.value.value) == ("system.clients.uplink", "1 Mbps")
    assert str(info.value) == "system.clients.uplink is a value ('1 Mbps'), not a section"


def test_get_path_reads_mappings_and_models():
    scenario = config.from_dict({**BASE, "system": {"clients": {"rtt": "50 ms"}}})
    assert paths.get_path(scenario, ["system", "clients", "rtt", "value"]) == 0.05
    assert paths.get_path(scenario, ["methods", "hp-fl", "level"]) == 2
    assert paths.get_path({"a": {"b": 3}}, ["a", "b"]) == 3
    assert paths.get_path({"a": {}}, ["a", "b", "c"]) is None


def test_overrides_use_the_same_set_path():
    raw = config.apply_overrides({"system": {"clients": {"uplink": "1 Mbps"}}},
                                 ["system.rounds.deadline=60 s"])
    assert raw["system"]["rounds"] == {"deadline": "60 s"}
    with pytest.raises(InputError, match=r"^--set 'system.clients.uplink.x=1': system.clients.uplink "
                                         r"is a value \('1 Mbps'\), not a section$"):
        config.apply_overrides(raw, ["system.clients.uplink.x=1"])


# --------------------------------------------------------------------------- check


def test_check_key_path_returns_the_parts_of_a_schema_key():
    assert paths.check_key_path("system.clients.uplink", BASE, "w") == ["system", "clients", "uplink"]
    assert paths.check_key_path("methods.hp-fl.level", BASE, "w") == ["methods", "hp-fl", "level"]
    assert paths.check_key_path("methods.new", BASE, "w") == ["methods", "new"]  # a whole new label


@pytest.mark.parametrize(("path", "message"), [
    ("rond", r"^w: unknown key 'rond' at the top level; valid keys: data, description, device, fl, "),
    ("system.clients.uplnk", r"^w: unknown key 'uplnk' under system.clients; valid keys: "
                             r"availability, device_trace, downlink, dynamics, rtt, sessions, speed, trace, uplink$"),
    ("methods.rp.level", r"^w: the base scenario has no methods entry 'rp' \(it has: hp-fl\)"),
    ("seed.x", r"^w: seed is a value, not a section; it has no key 'x'$"),
    ("a..b", r"^w: 'a..b' is not a dotted key path"),
    ("", r"^w: '' is not a dotted key path"),
])
def test_check_key_path_names_what_is_wrong(path, message):
    with pytest.raises(InputError, match=message):
        paths.check_key_path(path, BASE, "w")


class _Range(Section):
    start: float
    stop: float


class _Spec(Section):
    name: str
    axes: dict[str, Annotated[list[Any], Field(min_length=1)] | _Range]


def test_another_schema_is_walked_the_same_way():
    """A study's own keys: a free-label mapping whose values are a list or a
    model; a key resolves to the model, an index to the list's items."""
    assert paths.valid_keys(_Spec) == ["name", "axes"]
    axis = paths.child_annotation(paths.child_annotation(_Spec, "axes"), "x")
    assert paths.valid_keys(axis) == ["start", "stop"]
    assert paths.child_annotation(axis, "start") is float
    assert paths.child_annotation(axis, "0") is Any
    assert paths.check_key_path("axes.x", {}, "w", schema=_Spec) == ["axes", "x"]
    with pytest.raises(InputError, match=r"valid keys: axes, name$"):
        paths.check_key_path("nme", {}, "w", schema=_Spec)


# --------------------------------------------------------------------------- errors


def _error(model: type, raw: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        model.model_validate(raw)
    return info.value


def test_unknown_keys_list_the_valid_keys_of_their_level():
    raw = {**BASE, "system": {"clients": {"uplnk": 1}}, "rond": 1}
    lines = format_validation_error(_error(config.Scenario, raw), raw, "f.yaml").splitlines()
    assert sorted(lines) == [
        "f.yaml: rond: unknown key 'rond'; valid keys here: data, description, device, fl, methods, "
        "model, name, parallel, pretrain, report, rounds, seed, system, targets",
        "f.yaml: system.clients.uplnk: unknown key 'uplnk'; valid keys here: availability, "
        "device_trace, downlink, dynamics, rtt, sessions, speed, trace, uplink",
    ]


def test_a_study_like_schema_lists_keys_in_schema_order():
    raw = {"name": "s", "axes": {"x": {"start": 1, "stop": 2, "num": 3}}, "extra": 1}
    text = format_validation_error(_error(_Spec, raw), raw, "s.yaml", _Spec, sort_keys=False)
    assert "s.yaml: extra: unknown key 'extra'; valid keys here: name, axes" in text.splitlines()
    assert "s.yaml: axes.x.num: unknown key 'num'; valid keys here: start, stop" in text.splitlines()


def test_values_are_quoted_missing_keys_named_long_messages_cut():
    raw = {"name": "t", "targets": [0.9, 2], "fl": {"lr": -1}}
    lines = format_validation_error(_error(config.Scenario, raw), raw, "f").splitlines()
    assert sorted(lines) == [
        "f: fl.lr: Input should be greater than 0 (got -1)",
        "f: methods: required key 'methods' is missing",
        "f: targets: target accuracy 2.0 must be in (0, 1] (e.g. 0.95 for 95 %) (got [0.9, 2])",
    ]
    raw = {**BASE, "system": {"clients": {"trace": "t" * 5000, "uplink": "1 Mbps"}}}
    (line,) = format_validation_error(_error(config.Scenario, raw), raw, "f").splitlines()
    assert line.startswith("f: system.clients: trace 'ttt")  # a check that quotes in full
    assert line.endswith("… (cut)")
    assert len(line) == len("f: system.clients: ") + MAX_MESSAGE_CHARS - 1 + len("… (cut)")


def test_a_model_level_check_that_names_its_key_is_not_prefixed():
    raw = {"name": "t", "methods": {"hp-fl": {"level": 30}}}
    assert format_validation_error(_error(config.Scenario, raw), raw, "f") == (
        "f: methods.hp-fl.level: level 30 is beyond pretrain.iterations 10; raise "
        "pretrain.iterations or lower the level")


# --------------------------------------------------------------------------- cache-key content

#: A scenario with a non-default value in every section, and the sha256 of its
#: section keys computed with the code before fedsim/config became a package
#: (commit 5e52704): cache entries written then stay valid while this holds.
PINNED_RAW: dict[str, Any] = {
    "name": "pinned",
    "seed": 3,
    "data": {"unlabeled": 10000, "partition": {"scheme": "dirichlet", "num_clients": 20, "alpha": 0.3}},
    "pretrain": {"iterations": 4, "epochs": 2},
    "fl": {"lr": 0.05, "local_epochs": 2},
    "methods": {"original": {}, "hp-fl": {"remaining_rate": 0.41},
                "rp": {"kind": "random-pruning", "level": 2}},
    "system": {
        "clients": {"uplink": {"dist": "lognormal", "median": "5 Mbps", "sigma": 0.6},
                    "downlink": "20 Mbps", "rtt": "50 ms",
                    "speed": {"dist": "normal", "mean": 1.0, "std": 0.3, "min": 0.2}},
        "server": {"uplink": "1 Gbps"},
        "rounds": {"participation": 0.1, "deadline": "120 s", "overcommit": 0.3},
        "payload": {"mask_encoding": "bitmask", "overhead": "1 KiB"},
        "compute": {"t_comp_full": "10 s"},
    },
    "targets": [0.9, 0.95],
    "rounds": {"max": 200},
}
# Changed once, on purpose: the partition's scheme "dirichlet" joined the data key
# (before, every scheme with equal settings shared one key); was 82429ba7...
PINNED_SHA256 = "351fc137df4534b357c69472916dc2c4ae598a1f4a8915988eeb4840e3bbead0"


def test_section_keys_are_unchanged():
    scenario = config.from_dict(PINNED_RAW)
    keys: dict[str, Any] = {name: config.section_key(getattr(scenario, name)) for name in
                            ("data", "model", "pretrain", "fl", "system", "rounds", "report")}
    keys["methods"] = {label: config.section_key(m) for label, m in scenario.methods.items()}
    assert keys["system"]["clients"]["uplink"] == {"dist": "lognormal", "median": 5e6, "sigma": 0.6}
    assert keys["system"]["payload"] == {"mask_encoding": "bitmask", "overhead": 1024}
    assert keys["model"] == {} and keys["methods"]["original"] == {}
    text = json.dumps(keys, sort_keys=True)
    assert hashlib.sha256(text.encode()).hexdigest() == PINNED_SHA256, text


def test_partition_schemes_have_distinct_keys():
    keys = [json.dumps(config.section_key(DataConfig(partition={"scheme": s, "num_clients": 20})))
            for s in ("shards", "iid", "dirichlet")]
    assert len(set(keys)) == 3, keys
