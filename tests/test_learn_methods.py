"""The method registry, the methods' starting points, and the config sections."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch

from fedsim.learn import methods
from fedsim.learn.masks import Mask, prune_magnitude
from fedsim.learn.model import ENCODER_LAYERS, init_dae
from fedsim.learn.pretrain import Ticket
from fedsim.learn.spec import FLConfig, MethodConfig, ModelConfig, PretrainConfig


@pytest.fixture(scope="module")
def ticket() -> Ticket:
    """A 4-level ticket built by pruning Θ0's own magnitudes (no DAE training:
    the methods only read masks and weights)."""
    theta0 = init_dae("glorot_uniform", 0)
    masks = [Mask.dense_like(theta0)]
    for _ in range(4):
        masks.append(prune_magnitude(theta0.weights, masks[-1], 0.2))
    pretrained = init_dae("glorot_uniform", 1).layers(0, ENCODER_LAYERS).clone()
    return Ticket(theta0, tuple(masks), pretrained)


def test_registry_lists_the_papers_methods():
    assert methods.names() == ["hp-fl", "hp-fl-pretrained", "original", "pretrained", "random-pruning"]
    assert methods.pruned_names() == ["hp-fl", "hp-fl-pretrained", "random-pruning"]
    with pytest.raises(ValueError, match="unknown method 'lth'; choose one of: hp-fl, hp-fl-pretrained, original"):
        methods.get("lth")
    with pytest.raises(ValueError, match="already registered"):
        methods.register("original")(methods.original)


def test_all_methods_share_theta0(ticket):
    theta0 = ticket.theta0_encoder
    orig = methods.build(MethodConfig(kind="original"), ticket, seed=0)
    assert orig.params.equal(theta0) and orig.mask.remaining_rate == 1.0
    hp = methods.build(MethodConfig(kind="hp-fl", level=4), ticket, seed=0)
    rnd = methods.build(MethodConfig(kind="random-pruning", level=4), ticket, seed=0)
    for start in (hp, rnd):
        for w, w0, m in zip(start.params.weights, theta0.weights, start.mask.layers, strict=True):
            assert torch.equal(w[m], w0[m])  # survivors are θ0's initial values
            assert torch.count_nonzero(w[~m]) == 0
        assert all(torch.equal(b, b0) for b, b0 in zip(start.params.biases, theta0.biases, strict=True))


def test_pretrained_is_the_trained_encoder_dense(ticket):
    start = methods.build(MethodConfig(kind="pretrained"), ticket, seed=0)
    assert start.params.equal(ticket.pretrained)
    assert all(start.mask.is_dense())
    bare = Ticket(ticket.theta0, ticket.masks[:1])
    with pytest.raises(ValueError, match="at least 1 pre-training iteration"):
        methods.build(MethodConfig(kind="pretrained"), bare, seed=0)


def test_hp_fl_uses_the_imp_mask_of_the_level(ticket):
    by_level = methods.build(MethodConfig(kind="hp-fl", level=2), ticket, seed=0)
    assert by_level.mask.equal(ticket.encoder_mask(2))
    by_rate = methods.build(MethodConfig(kind="hp-fl", remaining_rate=0.64), ticket, seed=0)
    assert by_rate.mask.equal(by_level.mask)
    assert by_rate.mask.remaining_rate == pytest.approx(0.64, abs=1e-4)


def test_random_pruning_matches_per_layer_counts_and_is_seeded(ticket):
    cfg = MethodConfig(kind="random-pruning", level=3)
    a = methods.build(cfg, ticket, seed=5)
    b = methods.build(cfg, ticket, seed=5)
    c = methods.build(cfg, ticket, seed=6)
    target = ticket.encoder_mask(3)
    assert [x.surviving_weights for x in a.mask.layer_counts()] == [
        x.surviving_weights for x in target.layer_counts()
    ]
    assert a.mask.equal(b.mask) and not a.mask.equal(c.mask)
    assert not a.mask.equal(target)


def test_unknown_rate_lists_the_available_levels(ticket):
    with pytest.raises(ValueError, match=r"remaining_rate 0\.3; available: 1\.0000 \(level 0\).*0\.4096 \(level 4\)"):
        methods.build(MethodConfig(kind="hp-fl", remaining_rate=0.3), ticket, seed=0)


def test_rate_tolerance(ticket):
    # 0.41 is within 0.005 of level 4's 0.4096; 0.42 is not
    assert methods.build(MethodConfig(kind="hp-fl", remaining_rate=0.41), ticket, seed=0).mask.equal(
        ticket.encoder_mask(4)
    )
    with pytest.raises(ValueError, match="available"):
        methods.build(MethodConfig(kind="hp-fl", remaining_rate=0.42), ticket, seed=0)
    with pytest.raises(ValueError, match=r"levels 0\.\.4"):
        methods.build(MethodConfig(kind="hp-fl", level=5), ticket, seed=0)


def test_required_iterations():
    paper = PretrainConfig()
    assert methods.required_iterations(MethodConfig(kind="original"), paper) == 0
    assert methods.required_iterations(MethodConfig(kind="pretrained"), paper) == 1
    assert methods.required_iterations(MethodConfig(kind="hp-fl", remaining_rate=0.41), paper) == 4
    assert methods.required_iterations(MethodConfig(kind="hp-fl", remaining_rate=0.21), paper) == 7
    assert methods.required_iterations(MethodConfig(kind="random-pruning", remaining_rate=0.107), paper) == 10
    assert methods.required_iterations(MethodConfig(kind="hp-fl", level=3), paper) == 3
    glob = PretrainConfig(scope="global")
    assert methods.required_iterations(MethodConfig(kind="hp-fl", remaining_rate=0.41), glob) == 10
    with pytest.raises(ValueError, match=r"0\.1074 \(level 10\)"):
        methods.required_iterations(MethodConfig(kind="hp-fl", remaining_rate=0.05), paper)


# -- config sections -------------------------------------------------------------------------


def test_defaults_are_the_papers():
    assert ModelConfig().arch == "lenet-300-100" and ModelConfig().init == "glorot_uniform"
    fl = FLConfig()
    assert (fl.lr, fl.batch_size, fl.local_epochs) == (0.1, 60, 5)
    pre = PretrainConfig()
    assert (pre.noise_mean, pre.noise_var, pre.noise_scale) == (0.5, 0.25, "variance")
    assert (pre.lr, pre.batch_size, pre.epochs, pre.iterations) == (1e-3, 100, 100, 10)
    assert (pre.prune_fraction, pre.scope) == (0.2, "layerwise")


@pytest.mark.parametrize(
    ("section", "values", "quoted"),
    [
        (FLConfig, {"lr": -0.1}, "-0.1"),
        (FLConfig, {"batch_size": 0}, "0"),
        (FLConfig, {"batch_size": 60.5}, "60.5"),
        (PretrainConfig, {"prune_fraction": 1.5}, "1.5"),
        (PretrainConfig, {"scope": "columns"}, "columns"),
        (ModelConfig, {"init": "xavier"}, "xavier"),
        (ModelConfig, {"arch": "resnet"}, "resnet"),
        (MethodConfig, {"kind": "hp-fl", "remaining_rate": 1.2}, "1.2"),
        (MethodConfig, {"kind": "hp-fl", "level": -1}, "-1"),
    ],
)
def test_bad_values_are_quoted(section, values, quoted):
    with pytest.raises(pydantic.ValidationError, match=quoted):
        section(**values)


def test_sections_are_strict_and_frozen():
    with pytest.raises(pydantic.ValidationError, match="extra"):
        FLConfig(learning_rate=0.1)
    cfg = FLConfig()
    with pytest.raises(pydantic.ValidationError):
        cfg.lr = 0.2  # type: ignore[misc]


def test_method_config_checks_kind_and_level():
    with pytest.raises(pydantic.ValidationError, match="unknown method 'lth'; choose one of"):
        MethodConfig(kind="lth")
    with pytest.raises(pydantic.ValidationError, match=r"'original' is dense: remaining_rate=0\.5"):
        MethodConfig(kind="original", remaining_rate=0.5)
    with pytest.raises(pydantic.ValidationError, match="needs exactly one of remaining_rate, level"):
        MethodConfig(kind="hp-fl")
    with pytest.raises(pydantic.ValidationError, match="got both"):
        MethodConfig(kind="random-pruning", remaining_rate=0.5, level=3)
    assert MethodConfig(kind="hp-fl", remaining_rate=0.107).remaining_rate == 0.107
    assert np.isclose(MethodConfig(kind="hp-fl", level=0).level, 0)


def test_hp_fl_pretrained_masks_the_pretrained_encoder(ticket):
    start = methods.build(MethodConfig(kind="hp-fl-pretrained", level=3), ticket, seed=0)
    assert start.mask.equal(ticket.encoder_mask(3))
    assert start.params.equal(ticket.encoder_mask(3).apply(ticket.pretrained))
    reset = methods.build(MethodConfig(kind="hp-fl", level=3), ticket, seed=0)
    assert not start.params.equal(reset.params)  # not θ0: the pre-trained values
    bare = Ticket(ticket.theta0, ticket.masks)
    with pytest.raises(ValueError, match="at least 1 pre-training iteration"):
        methods.build(MethodConfig(kind="hp-fl-pretrained", level=3), bare, seed=0)
