"""Masks, remaining rates, counts and the pruning rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.learn.masks import Mask, level_counts, prune_count, prune_magnitude, random_like
from fedsim.learn.model import LENET_SIZES, Params, layer_shapes


def test_mask_validates_values_and_shapes():
    with pytest.raises(ValueError, match=r"value 2\.0 is not 0 or 1"):
        Mask((torch.tensor([[1.0, 2.0]]),))
    with pytest.raises(ValueError, match="not \\[fan_in, fan_out\\]"):
        Mask((torch.ones(3),))
    m = Mask((torch.tensor([[1, 0], [0, 1]]),))
    assert m.layers[0].dtype == torch.bool
    with pytest.raises(ValueError, match="do not match"):
        m.check(Params((torch.zeros(2, 3),), (torch.zeros(3),)))


def test_counts_and_rates_hand_computed():
    # layer 0: 2x3, keeps 4 of 6; layer 1: 3x1 keeps 1 of 3
    m = Mask((torch.tensor([[1, 1, 0], [1, 0, 1]]), torch.tensor([[0], [1], [0]])))
    c0, c1 = m.layer_counts()
    assert (c0.fan_in, c0.fan_out, c0.weights, c0.surviving_weights, c0.biases) == (2, 3, 6, 4, 3)
    assert (c1.weights, c1.surviving_weights, c1.biases) == (3, 1, 1)
    assert m.remaining_rate == pytest.approx(5 / 9)
    assert m.densities() == pytest.approx((4 / 6, 1 / 3))
    assert m.params_sent == 5 + 3 + 1  # surviving weights + all biases
    assert m.is_dense() == (False, False)


def test_dense_lenet_sends_all_parameters():
    m = Mask.dense(layer_shapes(LENET_SIZES))
    assert m.remaining_rate == 1.0
    assert m.params_sent == 266_610
    assert m.total_weights == 266_200


def test_apply_zeroes_exactly_the_pruned_weights_and_keeps_biases():
    w = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    params = Params((w,), (torch.tensor([5.0, 6.0]),))
    out = Mask((torch.tensor([[1, 0], [0, 1]]),)).apply(params)
    assert torch.equal(out.weights[0], torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    assert torch.equal(out.biases[0], params.biases[0])
    assert torch.equal(w, torch.tensor([[1.0, -2.0], [3.0, 4.0]]))  # input untouched


def test_prune_count_rounds_half_up():
    assert [prune_count(n, 0.2) for n in (1000, 800, 640, 512, 10, 3)] == [200, 160, 128, 102, 2, 1]


def test_layerwise_pruning_hand_computed():
    w0 = torch.tensor([[0.5, -0.1, 0.3], [0.2, -0.9, 0.05]])
    w1 = torch.tensor([[1.0], [-3.0], [2.0], [0.1], [5.0]])
    dense = Mask((torch.ones(2, 3), torch.ones(5, 1)))
    out = prune_magnitude([w0, w1], dense, 0.4)
    # layer 0: 6 survivors, round(2.4) = 2 removed: |0.05| and |-0.1|
    assert torch.equal(out.layers[0], torch.tensor([[True, False, True], [True, True, False]]))
    # layer 1: 5 survivors, 2 removed: 0.1 and 1.0
    assert torch.equal(out.layers[1], torch.tensor([[False], [True], [True], [False], [True]]))
    # pruned entries are never chosen again, whatever their (stale) value
    again = prune_magnitude([torch.zeros(2, 3), w1], out, 0.5)
    assert again.is_subset_of(out)
    assert [c.surviving_weights for c in again.layer_counts()] == [2, 1]


def test_global_pruning_uses_one_ranking():
    w0 = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    w1 = torch.tensor([[5.0, 6.0], [7.0, 0.05]])
    dense = Mask((torch.ones(2, 2), torch.ones(2, 2)))
    out = prune_magnitude([w0, w1], dense, 0.375, scope="global")  # 3 of 8
    assert torch.equal(out.layers[0], torch.tensor([[False, False], [True, True]]))
    assert torch.equal(out.layers[1], torch.tensor([[True, True], [True, False]]))


def test_ties_fall_on_the_earlier_position():
    out = prune_magnitude([torch.ones(1, 4)], Mask((torch.ones(1, 4),)), 0.5)
    assert torch.equal(out.layers[0], torch.tensor([[False, False, True, True]]))


def test_prune_rejects_bad_arguments():
    dense = Mask((torch.ones(2, 2),))
    with pytest.raises(ValueError, match="must be in"):
        prune_magnitude([torch.ones(2, 2)], dense, 1.0)
    with pytest.raises(ValueError, match="expected one of"):
        prune_magnitude([torch.ones(2, 2)], dense, 0.2, scope="columns")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="do not match"):
        prune_magnitude([torch.ones(2, 3)], dense, 0.2)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    fraction=st.floats(0.05, 0.9),
    steps=st.integers(1, 4),
    scope=st.sampled_from(["layerwise", "global"]),
)
def test_masks_only_lose_entries_and_counts_follow_the_rule(seed, fraction, steps, scope):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5, 3)]
    mask = Mask.dense(shapes)
    for _ in range(steps):
        weights = [torch.randn(s, generator=gen) for s in shapes]
        before = [c.surviving_weights for c in mask.layer_counts()]
        new = prune_magnitude(weights, mask, fraction, scope=scope)
        assert new.is_subset_of(mask)
        after = [c.surviving_weights for c in new.layer_counts()]
        if scope == "layerwise":
            assert after == [b - prune_count(b, fraction) for b in before]
        else:
            assert sum(after) == sum(before) - prune_count(sum(before), fraction)
        mask = new
    if scope == "layerwise":
        assert tuple(c.surviving_weights for c in mask.layer_counts()) == level_counts(shapes, fraction, steps)


def test_level_counts_give_the_papers_rates():
    shapes = layer_shapes(LENET_SIZES)
    total = sum(i * o for i, o in shapes)
    rates = {k: sum(level_counts(shapes, 0.2, k)) / total for k in (4, 7, 10)}
    assert rates[4] == pytest.approx(0.8**4, abs=1e-4)  # 0.41
    assert rates[7] == pytest.approx(0.8**7, abs=1e-4)  # 0.21
    assert rates[10] == pytest.approx(0.8**10, abs=1e-4)  # 0.107


def test_random_like_keeps_per_layer_counts_and_is_seeded():
    gen = torch.Generator().manual_seed(0)
    base = Mask((torch.rand(30, 20, generator=gen) < 0.3, torch.rand(20, 4, generator=gen) < 0.7))
    a = random_like(base, np.random.default_rng(5))
    b = random_like(base, np.random.default_rng(5))
    c = random_like(base, np.random.default_rng(6))
    assert [x.surviving_weights for x in a.layer_counts()] == [x.surviving_weights for x in base.layer_counts()]
    assert a.equal(b) and not a.equal(c)
    assert not a.equal(base)


def test_mask_numpy_roundtrip():
    base = Mask((torch.tensor([[1, 0], [1, 1]]), torch.tensor([[0], [1]])))
    assert Mask.from_numpy(base.to_numpy("k/"), "k/").equal(base)
