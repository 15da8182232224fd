"""Scenario loading: one test per kind of error, overrides, resolution, keys."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from fedsim import config
from fedsim.errors import InputError

SCENARIOS = Path(__file__).parents[1] / "scenarios"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> str:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        config.load(path, overrides)
    message = str(info.value)
    assert str(path) in message or "--set" in message
    return message


BASE = "name: t\nmethods:\n  original: {}\n"


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_validate(path: Path) -> None:
    scenario = config.load(path)
    assert scenario.name == path.stem
    assert scenario.description, "every shipped scenario says what it models"


def test_unknown_top_level_key_lists_valid_keys(tmp_path: Path) -> None:
    message = load_error(tmp_path, BASE + "roundz: 3\n")
    assert "roundz: unknown key 'roundz'" in message
    assert "rounds" in message and "methods" in message


def test_unknown_nested_key_names_dotted_path(tmp_path: Path) -> None:
    message = load_error(tmp_path, BASE + "system:\n  clients:\n    uplnk: '5 Mbps'\n")
    assert "system.clients.uplnk: unknown key 'uplnk'" in message
    assert "uplink" in message


def test_wrong_type(tmp_path: Path) -> None:
    message = load_error(tmp_path, BASE + "rounds: {max: lots}\n")
    assert "rounds.max" in message and "'lots'" in message


def test_out_of_range_value(tmp_path: Path) -> None:
    message = load_error(tmp_path, BASE + "fl: {lr: -0.1}\n")
    assert "fl.lr" in message and "greater than 0" in message and "-0.1" in message


def test_negative_bandwidth_quotes_value_with_unit(tmp_path: Path) -> None:
    message = load_error(tmp_path, BASE + "system:\n  clients:\n    uplink: '-3 Mbps'\n")
    assert "system.clients.uplink" in message and "'-3 Mbps'" in message and "> 0" in message


def test_bad_unit(tmp_path: Path) -> None:
    message = load_error(tmp_path, BASE + "system:\n  server:\n    uplink: '5 Mbsp'\n")
    assert "system.server.uplink" in message and "Mbsp" in message


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, BASE + "rounds: {max: 3\n")
    assert "line" in message and "invalid YAML" in message


def test_unknown_method_kind_lists_choices(tmp_path: Path) -> None:
    message = load_error(tmp_path, "name: t\nmethods:\n  fedprox: {}\n")
    assert "methods.fedprox" in message and "hp-fl" in message and "original" in message


def test_rate_without_level_lists_levels(tmp_path: Path) -> None:
    message = load_error(tmp_path, "name: t\nmethods:\n  hp-fl: {remaining_rate: 0.5}\n")
    assert "methods.hp-fl.remaining_rate" in message and "0.4096 (level 4)" in message


def test_dense_method_refuses_rate(tmp_path: Path) -> None:
    message = load_error(tmp_path, "name: t\nmethods:\n  original: {remaining_rate: 0.5}\n")
    assert "methods.original" in message and "dense" in message


def test_target_out_of_range(tmp_path: Path) -> None:
    message = load_error(tmp_path, BASE + "targets: [95]\n")
    assert "targets" in message and "(0, 1]" in message


def test_not_a_mapping(tmp_path: Path) -> None:
    message = load_error(tmp_path, "- a\n- b\n")
    assert "mapping" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        config.load(tmp_path / "nope.yaml")


def test_method_label_with_kind(tmp_path: Path) -> None:
    scenario = config.load(write(tmp_path, "name: t\nmethods:\n  hp-fl-0.41: {kind: hp-fl, remaining_rate: 0.41}\n"))
    assert scenario.methods["hp-fl-0.41"].kind == "hp-fl"


def test_overrides_set_values_and_create_sections(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    scenario = config.load(path, ["system.clients.uplink=2 Mbps", "rounds.max=7", "fl.lr=0.05",
                                  "methods.hp-fl={remaining_rate: 0.41}"])
    uplink = scenario.system.clients.uplink
    assert math.isclose(getattr(uplink, "value", math.nan), 2e6)
    assert scenario.rounds.max == 7
    assert scenario.fl.lr == 0.05
    assert scenario.methods["hp-fl"].remaining_rate == 0.41


def test_override_errors(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    with pytest.raises(InputError, match=r"KEY\.PATH=VALUE"):
        config.load(path, ["rounds.max"])
    with pytest.raises(InputError, match=r"rounds\.max is a value"):
        config.load(path, ["rounds.max=3", "rounds.max.x=4"])
    with pytest.raises(InputError, match=r"fl\.lrr: unknown key"):
        config.load(path, ["fl.lrr=0.3"])


def test_select_methods(tmp_path: Path) -> None:
    scenario = config.load(SCENARIOS / "quickstart.yaml")
    assert list(config.select_methods(scenario, ["hp-fl"]).methods) == ["hp-fl"]
    with pytest.raises(InputError, match="unknown method"):
        config.select_methods(scenario, ["nope"])


def test_resolved_yaml_round_trips(tmp_path: Path) -> None:
    scenario = config.load(SCENARIOS / "quickstart.yaml")
    text = config.resolved_yaml(scenario)
    resolved = yaml.safe_load(text)
    assert resolved["fl"]["lr"] == 0.1 and resolved["pretrain"]["noise_var"] == 0.25
    again = config.from_dict(resolved, source="resolved")
    assert again == scenario


def test_section_key_leaves_defaults_out(tmp_path: Path) -> None:
    plain = config.load(write(tmp_path, BASE))
    explicit = config.load(write(tmp_path, BASE + "fl: {lr: 0.1, batch_size: 60}\n"))
    assert config.section_key(plain.fl) == config.section_key(explicit.fl) == {}
    changed = config.load(write(tmp_path, BASE + "fl: {lr: 0.05}\n"))
    assert config.section_key(changed.fl) == {"lr": 0.05}
