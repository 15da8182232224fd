"""The convolutional DAE of LeNet-5 (`fedsim.learn.conv_dae`): its shapes, HP-FL's
pre-training on it (masks, counts per level, the ticket), FL from its ticket with
pruned weights held at 0, and the CLI end to end; a model without an autoencoder
is refused by name."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsim.learn import conv_dae, counts
from fedsim.learn import methods as learn_methods
from fedsim.learn.federated import ClientData, train
from fedsim.learn.masks import Mask
from fedsim.learn.model import as_inputs
from fedsim.learn.pretrain import Ticket, initial_dae, pretrain
from fedsim.learn.spec import FLConfig, MethodConfig, ModelConfig, PretrainConfig
from fedsim.learn.zoo import ModelSpec, resolve

# Tiny but real: the full-size conv DAE, 2 IMP iterations of 1 epoch on 300 images.
CFG = PretrainConfig(epochs=1, iterations=2, batch_size=100)


@pytest.fixture(scope="module")
def pool() -> np.ndarray:
    """300 unlabeled 28x28 uint8 images: bright blobs on noise (something to reconstruct)."""
    gen = np.random.default_rng(1)
    images = gen.integers(0, 40, (300, 28, 28), dtype=np.uint8)
    for i in range(len(images)):
        r, c = gen.integers(0, 21, 2)
        images[i, r : r + 7, c : c + 7] = 255
    return images


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return resolve(ModelConfig(arch="lenet-5"), seed=0)


@pytest.fixture(scope="module")
def ticket(spec: ModelSpec, pool: np.ndarray) -> Ticket:
    theta0, head = initial_dae("lenet-5", 0, classifier_theta0=spec.initial_params())
    return pretrain(theta0, pool, CFG, seed=0, arch="lenet-5", head=head)


# -- the autoencoder -------------------------------------------------------------------------


def test_decoder_output_is_an_image_and_the_encoder_is_the_classifiers_body(spec: ModelSpec) -> None:
    theta0, head = initial_dae("lenet-5", 0, classifier_theta0=spec.initial_params())
    assert theta0.shapes == counts.dae_shapes("lenet-5")
    assert theta0.shapes[4:] == ((84, 120), (120, 400), (576, 6), (216, 1))
    x = torch.rand(5, 784)
    z = conv_dae.reconstruct(theta0, x)
    assert z.shape == (5, 784) and bool(((z > 0) & (z < 1)).all())  # sigmoid output, 1x28x28 per row
    weights = [conv_dae.to_module(w, i) for i, w in enumerate(theta0.weights)]
    assert [tuple(w.shape) for w in weights[6:]] == [(16, 6, 6, 6), (6, 1, 6, 6)]  # transposed convs
    code = conv_dae.forward(weights, list(theta0.biases), x, code_only=True)
    assert code.shape == (5, 84)
    # the classifier's body is the encoder, exactly: θ0's conv1..fc2, then fc3 is the head
    classifier = spec.initial_params()
    assert theta0.layers(0, 4).equal(classifier.layers(0, 4))
    assert head.equal(classifier.layers(4))
    for i, w in enumerate(theta0.weights):  # the layout round-trips
        assert torch.equal(conv_dae.from_module(conv_dae.to_module(w, i), i), w)
    # the decoder's draw is its own stream: another seed, another decoder, same encoder
    other, _ = initial_dae("lenet-5", 1, classifier_theta0=classifier)
    assert other.layers(0, 4).equal(theta0.layers(0, 4)) and not other.layers(4).equal(theta0.layers(4))


def test_the_layer_counts_of_lenet5_levels_by_hand() -> None:
    levels = counts.iter_level_counts(PretrainConfig(), "lenet-5")
    # conv1 150, conv2 2,400, fc1 48,000, fc2 10,080 lose round(20 %) each; fc3 (840) is the dense head
    assert next(levels) == (150, 2400, 48000, 10080, 840)
    assert next(levels) == (120, 1920, 38400, 8064, 840)
    assert next(levels) == (96, 1536, 30720, 6451, 840)  # 8064 - round(1612.8) = 6451
    rates = dict(counts.expected_levels(PretrainConfig(iterations=2), arch="lenet-5"))
    assert rates[2] == (96 + 1536 + 30720 + 6451 + 840) / 61470
    assert counts.weight_reuse("lenet-5", 5) == (784, 100, 1, 1, 1)
    with pytest.raises(ValueError, match="has no autoencoder"):
        counts.classifier_shapes("my_pkg:net")


# -- pre-training ------------------------------------------------------------------------------


def test_pretraining_prunes_every_dae_layer_by_the_counts_formula(ticket: Ticket) -> None:
    assert ticket.arch == "lenet-5" and ticket.iterations == 2
    assert ticket.recon_loss.shape == (2, 1) and np.isfinite(ticket.recon_loss).all()
    shapes = counts.dae_shapes("lenet-5")
    for k, mask in enumerate(ticket.masks):
        # every DAE layer, decoder included, keeps exactly the layer-wise count of level k
        assert [c.surviving_weights for c in mask.layer_counts()] == list(
            counts.level_counts(shapes, CFG.prune_fraction, k))
        if k:
            assert mask.is_subset_of(ticket.masks[k - 1])
    # the classifier's P_R per level is the counts formula's (head dense), known before training
    assert ticket.levels() == counts.expected_levels(CFG, arch="lenet-5")
    m = ticket.encoder_mask(2)
    assert m.shapes == counts.LENET5_SHAPES and m.is_dense()[4]
    assert m.remaining_rate == pytest.approx(0.6449, abs=1e-4)
    assert ticket.level_for_rate(0.645) == 2
    with pytest.raises(ValueError, match=r"0\.6449 \(level 2\)"):
        ticket.level_for_rate(0.5)


def test_trained_pruned_weights_stay_exactly_zero(ticket: Ticket, pool: np.ndarray) -> None:
    mask = ticket.masks[1]
    trained, losses = conv_dae.train_conv_dae(ticket.theta0, mask, as_inputs(pool), CFG, seed=0, iteration=2)
    assert losses.shape == (1,)
    for w, w0, m in zip(trained.weights, ticket.theta0.weights, mask.layers, strict=True):
        assert bool((w[~m] == 0).all())  # pruned: exactly 0
        assert not torch.equal(w[m], w0[m])  # survivors trained
    # "FL with pre-training": the encoder after the first training step, the head at θ0
    assert ticket.pretrained is not None and ticket.pretrained.shapes == counts.LENET5_SHAPES
    assert ticket.pretrained.layers(4).equal(ticket.head)
    assert not ticket.pretrained.layers(0, 4).equal(ticket.theta0.layers(0, 4))


def test_a_ticket_extends_and_round_trips(ticket: Ticket, spec: ModelSpec, pool: np.ndarray, tmp_path: Path) -> None:
    theta0, head = initial_dae("lenet-5", 0, classifier_theta0=spec.initial_params())
    short = pretrain(theta0, pool, CFG, seed=0, iterations=1, arch="lenet-5", head=head)
    longer = pretrain(theta0, pool, CFG, seed=0, iterations=2, start=short, arch="lenet-5", head=head)
    assert all(a.equal(b) for a, b in zip(longer.masks, ticket.masks, strict=True))
    with pytest.raises(ValueError, match="of model lenet-5, not lenet-300-100"):
        pretrain(theta0, pool, CFG, seed=0, iterations=2, start=short)
    ticket.save(tmp_path / "t.npz")
    back = Ticket.load(tmp_path / "t.npz")
    assert back.arch == "lenet-5" and back.head is not None and back.head.equal(ticket.head)
    assert back.theta0.equal(ticket.theta0) and back.pretrained.equal(ticket.pretrained)
    assert all(a.equal(b) for a, b in zip(back.masks, ticket.masks, strict=True))
    with np.load(tmp_path / "t.npz") as arrays:
        assert str(arrays["arch"]) == "lenet-5"


# -- FL from the ticket -----------------------------------------------------------------------


def test_fl_from_the_ticket_keeps_pruned_weights_zero(ticket: Ticket, spec: ModelSpec, pool: np.ndarray) -> None:
    gen = np.random.default_rng(0)
    labels = gen.integers(0, 10, 120)
    data = ClientData.from_arrays(pool[:120], labels, [np.arange(0, 70), np.arange(70, 120)])
    test = (as_inputs(pool[200:260]), torch.as_tensor(gen.integers(0, 10, 60)))
    hp = learn_methods.build(MethodConfig(kind="hp-fl", level=2), ticket, seed=0)
    rand = learn_methods.build(MethodConfig(kind="random-pruning", level=2), ticket, seed=0)
    # the same per-layer counts, other positions; the head dense in both
    assert [c.surviving_weights for c in rand.mask.layer_counts()] == list(
        next(c for k, c in enumerate(counts.iter_level_counts(CFG, "lenet-5")) if k == 2))
    assert not rand.mask.equal(hp.mask) and rand.mask.is_dense()[4] and hp.mask.is_dense()[4]
    # hp-fl starts from m ⊙ θ0 (head θ0); original from θ0 = the module's own initialisation
    assert hp.params.layers(4).equal(spec.initial_params().layers(4))
    original = learn_methods.build(MethodConfig(kind="original"), ticket, seed=0)
    assert original.params.equal(spec.initial_params())
    for start in (hp, rand):
        seen: list = []
        train(start.params, start.mask, data, test, FLConfig(batch_size=20, local_epochs=1), seed=0, rounds=2,
              model=spec, on_round=lambda r, p, _, seen=seen: seen.append(p))
        assert len(seen) == 2
        for params in seen:  # every round's global model: pruned weights exactly 0
            for w, m in zip(params.weights, start.mask.layers, strict=True):
                assert bool((w[~m] == 0).all())
            assert not params.layers(0, 4).equal(start.params.layers(0, 4))  # it trained


def test_flops_work_fraction_weighs_conv_weights_by_their_positions(ticket: Ticket, tmp_path: Path) -> None:
    from fedsim.config import Scenario
    from fedsim.pipeline.stages import payload_and_work

    base = {"name": "w", "model": {"arch": "lenet-5"}, "data": {"unlabeled": 300},
            "methods": {"hp-fl": {"level": 2}}, "pretrain": {"iterations": 2}}
    flops = Scenario.model_validate({**base, "system": {"compute": {"work": "flops"}}})
    paper = Scenario.model_validate(base)
    mask = ticket.encoder_mask(2)
    payload, work = payload_and_work(paper, mask)
    assert work == mask.remaining_rate  # the paper's work = P_R of the weights
    assert payload.sent_params == 96 + 1536 + 30720 + 6451 + 840 + (6 + 16 + 120 + 84 + 10)
    # by hand: per layer forward MACs M_l times density d_l; 4 M (first layer), 6 M after;
    # biases 2 per output element (conv: 6x28x28 and 16x10x10)
    macs = counts.lenet5_layer_macs()
    density = mask.densities()
    cost = (4, 6, 6, 6, 6)
    bias_flops = 2 * (6 * 784 + 16 * 100 + 120 + 84 + 10)
    sparse = sum(c * m * d for c, m, d in zip(cost, macs, density, strict=True)) + bias_flops
    dense = sum(c * m for c, m in zip(cost, macs, strict=True)) + bias_flops
    assert payload_and_work(flops, mask)[1] == pytest.approx(sparse / dense, rel=1e-12)
    assert payload_and_work(flops, Mask.dense_like(ticket.theta0_encoder))[1] == 1.0


# -- validation and the CLI -----------------------------------------------------------------


def _scenario(tmp_path: Path, model: str, methods: str, *, rate_or_level: str = "") -> Path:
    path = tmp_path / "conv.yaml"
    path.write_text(textwrap.dedent(f"""
        name: conv-tiny
        seed: 0
        model: {model}
        data:
          dataset: mnist
          unlabeled: 300
          partition: {{scheme: shards, num_clients: 2, shard_size: 20, shards_per_client: 2}}
        pretrain: {{epochs: 1, iterations: 2}}
        fl: {{local_epochs: 1}}
        methods: {methods}
        system:
          clients: {{downlink: "20 Mbps", uplink: "5 Mbps", rtt: "50 ms"}}
        targets: [0.5]
        rounds: {{max: 2}}
        device: cpu
        report: {{formats: [png]}}
    """))
    return path


def test_a_model_without_an_autoencoder_is_refused_naming_method_and_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fedsim.cli import main

    path = _scenario(tmp_path, '{factory: "my_pkg.nets:small_cnn"}', "{hp-fl: {level: 1}}")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "methods.hp-fl: method 'hp-fl' needs an autoencoder" in err
    assert "model 'my_pkg.nets:small_cnn' does not have" in err and "lenet-300-100, lenet-5" in err
    # a rate that is no LeNet-5 level (0.41 is LeNet-300-100's level 4, LeNet-5's is 0.4177)
    path = _scenario(tmp_path, "{arch: lenet-5}", "{hp-fl: {remaining_rate: 0.41}}")
    assert main(["validate", str(path)]) == 2
    assert "0.6449 (level 2)" in capsys.readouterr().err
    path = _scenario(tmp_path, "{arch: lenet-5}", "{pretrained: {}, random-pruning: {remaining_rate: 0.645}}")
    assert main(["validate", str(path)]) == 0


def test_hp_fl_on_lenet5_runs_end_to_end_through_the_cli(tmp_path: Path, cache_root: Path) -> None:
    import pandas as pd

    from fedsim.cli import main

    path = _scenario(tmp_path, "{arch: lenet-5}", "{original: {}, hp-fl: {level: 1}}")  # 1 IMP iteration
    out = tmp_path / "out"
    assert main(["scenario", str(path), "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "metrics.csv").set_index("method")
    surviving = 120 + 1920 + 38400 + 8064 + 840  # level 1 by hand (fc3 dense)
    assert table.loc["hp-fl", "remaining_rate"] == pytest.approx(surviving / 61470)
    assert table.loc["hp-fl", "params"] == surviving + 236  # + every bias
    assert table.loc["original", "params"] == counts.lenet5_num_params()
    rounds = pd.read_csv(out / "rounds.csv")
    assert sorted(set(rounds["method"])) == ["hp-fl", "original"] and rounds["round"].max() == 2
    assert rounds["accuracy"].between(0, 1).all()
    assert (cache_root / "pretrain").is_dir()  # the conv DAE's ticket is a cache entry
