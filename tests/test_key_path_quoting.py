"""Dotted key paths whose labels hold dots: ``methods."hp-fl-0.41".level``."""

from pathlib import Path

import pytest

from fedsim import config
from fedsim.config.paths import split_key_path
from fedsim.errors import InputError

PAPER = Path(__file__).resolve().parent.parent / "scenarios" / "paper.yaml"


@pytest.mark.parametrize("path, parts", [
    ("system.clients.uplink", ["system", "clients", "uplink"]),
    ('methods."hp-fl-0.41".level', ["methods", "hp-fl-0.41", "level"]),
    ('methods."random-0.21"', ["methods", "random-0.21"]),
    ("", []), ("a..b", []), (".a", []), ("a.", []), ('a."b', []), ('a.""', []), ('a"b"', []),
])
def test_split_key_path(path, parts):
    assert split_key_path(path) == parts


def test_set_a_label_with_dots():
    scenario = config.load(PAPER, ['methods."random-0.41"={kind: random-pruning, remaining_rate: 0.41}',
                                   'methods."hp-fl-0.41".remaining_rate=0.21'])
    assert scenario.methods["random-0.41"].remaining_rate == 0.41
    assert scenario.methods["hp-fl-0.41"].remaining_rate == 0.21


def test_unquoted_label_with_dots_is_refused_with_the_quoting_hint():
    with pytest.raises(InputError, match=r'double quotes'):
        config.load(PAPER, ['methods."hp-fl-0.41.level=4'])
    with pytest.raises(InputError, match=r"unknown key '41'"):
        config.load(PAPER, ["methods.random-0.41={kind: random-pruning, remaining_rate: 0.41}"])
