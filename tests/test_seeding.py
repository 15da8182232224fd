"""Random streams keyed by purpose (`fedsim.seeding`): a stream is a function
of (seed, key) alone."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim import seeding


def _draw(seed: int, *key: str | int) -> list[int]:
    return seeding.rng(seed, *key).integers(0, 2**62, size=4).tolist()


def test_a_stream_does_not_depend_on_call_order():
    keys = [("partition",), ("client", 3, "round", 7), ("random-mask", 2), ("client", 0, "round", 0)]
    forward = {key: _draw(5, *key) for key in keys}
    backward = {key: _draw(5, *key) for key in reversed(keys)}
    assert forward == backward
    # drawing a lot from one stream first changes nothing in another
    seeding.rng(5, "partition").random(100_000)
    assert _draw(5, "client", 3, "round", 7) == forward[("client", 3, "round", 7)]


def test_same_seed_and_key_give_the_same_stream():
    assert _draw(0, "client", 1, "round", 2) == _draw(0, "client", 1, "round", 2)
    assert seeding.torch_seed(0, "init") == seeding.torch_seed(0, "init")
    assert 0 <= seeding.torch_seed(0, "init") < 2**63


@pytest.mark.parametrize(("a", "b"), [
    ((0, "partition"), (1, "partition")),                     # another seed
    ((0, "partition"), (0, "dropout")),                       # another name
    ((0, "client", 1, "round", 2), (0, "client", 2, "round", 1)),  # order of the parts
    ((0, "a"), (0, "a", 0)),                                  # a longer key
    ((0, "1"), (0, 1)),                                       # a string is not its integer
    ((0, 2**32), (0, 0)),                                     # the high 32 bits count
])
def test_distinct_keys_give_distinct_streams(a, b):
    assert _draw(*a) != _draw(*b)


def test_key_parts_are_checked():
    with pytest.raises(TypeError, match="str or int"):
        seeding.rng(0, 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str or int"):
        seeding.rng(0, True)
    with pytest.raises(ValueError, match=">= 0"):
        seeding.rng(0, -1)
    assert _draw(0, np.int64(3)) == _draw(0, 3)


def test_torch_generators_follow_their_stream():
    torch = pytest.importorskip("torch")
    a = torch.rand(3, generator=seeding.torch_generator(4, "init"))
    b = torch.rand(3, generator=seeding.torch_generator(4, "init"))
    c = torch.rand(3, generator=seeding.torch_generator(4, "noise"))
    assert torch.equal(a, b) and not torch.equal(a, c)
