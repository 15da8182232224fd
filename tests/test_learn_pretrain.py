"""HP-FL pre-training: the DAE step, iterative magnitude pruning, tickets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedsim import seeding
from fedsim.learn.masks import Mask, level_counts, prune_magnitude
from fedsim.learn.model import DAE_SIZES, ENCODER_LAYERS, Params, init_dae, layer_shapes
from fedsim.learn.pretrain import (
    NOISE_BLOCKS,
    Ticket,
    dae_epoch_flops,
    expected_levels,
    noisy_inputs,
    pretrain,
    train_dae,
)
from fedsim.learn.spec import PretrainConfig

# Tiny but real: the DAE is full size (784-300-100-10-100-300-784), the pool is small.
CFG = PretrainConfig(epochs=1, iterations=3, batch_size=100)


@pytest.fixture(scope="module")
def pool() -> torch.Tensor:
    gen = np.random.default_rng(0)
    return torch.from_numpy(gen.random((250, 784), dtype=np.float32))


@pytest.fixture(scope="module")
def theta0() -> Params:
    return init_dae("glorot_uniform", 0)


@pytest.fixture(scope="module")
def ticket(theta0, pool) -> Ticket:
    return pretrain(theta0, pool, CFG, seed=1)


def _autograd_dae(theta0: Params, mask: Mask, data: torch.Tensor, cfg: PretrainConfig, seed: int, iteration: int):
    """The training step written the obvious way: autograd + torch.optim.Adam."""
    masked = mask.apply(theta0)
    tensors = [t.clone().requires_grad_(True) for t in masked.tensors()]
    optimizer = torch.optim.Adam(tensors, lr=cfg.lr)
    last = len(DAE_SIZES) - 2
    for epoch in range(1, cfg.epochs + 1):
        noisy = noisy_inputs(data, cfg, seed=seed, iteration=iteration, epoch=epoch)
        order = seeding.rng(seed, "pretrain", iteration, epoch, "shuffle").permutation(data.shape[0])
        for lo in range(0, data.shape[0], cfg.batch_size):
            idx = torch.from_numpy(order[lo : lo + cfg.batch_size])
            h = noisy[idx]
            for layer in range(last + 1):
                h = h @ tensors[2 * layer] + tensors[2 * layer + 1]
                if layer == last:
                    h = torch.sigmoid(h)
                elif layer != ENCODER_LAYERS - 1:
                    h = F.relu(h)
            loss = F.mse_loss(h, data[idx])
            optimizer.zero_grad()
            loss.backward()
            with torch.no_grad():
                for w, m in zip(tensors[0::2], mask.layers, strict=True):
                    w.grad.mul_(m)
            optimizer.step()
            with torch.no_grad():
                for w, m in zip(tensors[0::2], mask.layers, strict=True):
                    w.mul_(m)
    return Params(tuple(t.detach() for t in tensors[0::2]), tuple(t.detach() for t in tensors[1::2]))


@pytest.mark.parametrize("sparse", [False, True])
def test_hand_written_dae_step_matches_autograd_and_adam(theta0, pool, sparse):
    mask = Mask.dense_like(theta0)
    if sparse:
        gen = torch.Generator().manual_seed(2)
        mask = Mask(tuple(torch.rand(s, generator=gen) < 0.5 for s in mask.shapes))
    cfg = PretrainConfig(epochs=2, batch_size=100)  # 250 samples: batches of 100, 100, 50
    ours, losses = train_dae(theta0, mask, pool, cfg, seed=4, iteration=2)
    ref = _autograd_dae(theta0, mask, pool, cfg, seed=4, iteration=2)
    assert ours.max_abs_diff(ref) < 1e-5
    assert losses.shape == (2,) and np.all(losses > 0)
    assert not ours.equal(mask.apply(theta0))  # it did train
    for w, m in zip(ours.weights, mask.layers, strict=True):
        assert torch.count_nonzero(w[~m]) == 0


def test_noise_is_clipped_gaussian_with_the_configured_moments():
    data = torch.full((4000, 784), 0.25)
    cfg = PretrainConfig(noise_mean=0.1, noise_var=0.01)  # std 0.1: clipping is rare
    noisy = noisy_inputs(data, cfg, seed=0, iteration=1, epoch=1)
    assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0
    assert float((noisy - data).mean()) == pytest.approx(0.1, abs=1e-3)
    assert float((noisy - data).std()) == pytest.approx(0.1, abs=1e-3)
    # the blocks come from their own streams: the result does not depend on threads
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        parallel = noisy_inputs(data, cfg, seed=0, iteration=1, epoch=1, pool=pool)
    assert torch.equal(parallel, noisy)
    assert not torch.equal(noisy_inputs(data, cfg, seed=0, iteration=1, epoch=2), noisy)
    blocks = noisy.chunk(NOISE_BLOCKS)
    assert not torch.equal(blocks[0], blocks[1])


def test_noise_scale_reads_variance_or_std():
    assert PretrainConfig().noise_std == pytest.approx(0.5)
    assert PretrainConfig(noise_scale="std").noise_std == pytest.approx(0.25)


def test_imp_densities_are_0_8_to_the_k_in_every_layer(ticket):
    shapes = layer_shapes(DAE_SIZES)
    assert ticket.iterations == 3 and len(ticket.masks) == 4
    for k, mask in enumerate(ticket.masks):
        counts = [c.surviving_weights for c in mask.layer_counts()]
        assert tuple(counts) == level_counts(shapes, 0.2, k)
        assert mask.densities() == pytest.approx([0.8**k] * 6, abs=2e-4)
    assert [rate for _, rate in ticket.levels()] == pytest.approx([1.0, 0.8, 0.64, 0.512], abs=1e-5)
    levels, expected = ticket.levels(), expected_levels(CFG)
    assert [level for level, _ in levels] == [level for level, _ in expected]
    assert [rate for _, rate in levels] == pytest.approx([rate for _, rate in expected])


def test_masks_only_lose_entries(ticket):
    for k in range(1, len(ticket.masks)):
        assert ticket.masks[k].is_subset_of(ticket.masks[k - 1])
        assert not ticket.masks[k].equal(ticket.masks[k - 1])


def test_each_iteration_restarts_from_theta0(ticket, theta0, pool):
    # Level 2 = prune(train(mask1 ⊙ Θ0)): the survivors were reset to Θ0, not kept trained.
    trained, _ = train_dae(theta0, ticket.masks[1], pool, CFG, seed=1, iteration=2)
    assert prune_magnitude(trained.weights, ticket.masks[1], 0.2).equal(ticket.masks[2])
    # ... and the pretrained encoder is iteration 1's training of the dense Θ0
    first, _ = train_dae(theta0, Mask.dense_like(theta0), pool, CFG, seed=1, iteration=1)
    assert ticket.pretrained.equal(first.layers(0, ENCODER_LAYERS))
    assert ticket.theta0.equal(theta0)
    assert ticket.recon_loss.shape == (3, 1)


def test_extending_a_ticket_equals_one_long_run(ticket, theta0, pool):
    seen = []
    short = pretrain(theta0, pool, CFG, seed=1, iterations=1, on_iteration=lambda t: seen.append(t.iterations))
    assert seen == [1]
    longer = pretrain(theta0, pool, CFG, seed=1, start=short)
    assert all(a.equal(b) for a, b in zip(longer.masks, ticket.masks, strict=True))
    assert np.array_equal(longer.recon_loss, ticket.recon_loss)
    assert longer.pretrained.equal(ticket.pretrained)
    with pytest.raises(ValueError, match="another Θ0"):
        pretrain(init_dae("glorot_uniform", 9), pool, CFG, seed=1, start=short)


def test_zero_iterations_is_theta0_only(theta0, pool):
    t = pretrain(theta0, pool, CFG, seed=1, iterations=0)
    assert t.iterations == 0 and t.pretrained is None
    assert t.levels() == [(0, 1.0)]


def test_global_scope_prunes_the_overall_count(theta0, pool):
    t = pretrain(theta0, pool, CFG.model_copy(update={"scope": "global"}), seed=1, iterations=1)
    before = t.masks[0].surviving_weights
    assert t.masks[1].surviving_weights == before - round(0.2 * before)
    with pytest.raises(ValueError, match="layerwise"):
        expected_levels(CFG.model_copy(update={"scope": "global"}))


def test_ticket_level_lookup(ticket):
    assert ticket.level_for_rate(0.64) == 2
    assert ticket.level_for_rate(0.5145) == 3  # within 0.005 of 0.512
    with pytest.raises(ValueError, match=r"available: 1\.0000 \(level 0\), 0\.8000 \(level 1\)"):
        ticket.level_for_rate(0.41)
    with pytest.raises(ValueError, match=r"levels 0\.\.3"):
        ticket.encoder_mask(4)
    assert ticket.encoder_mask(1).shapes == ((784, 300), (300, 100), (100, 10))


def test_ticket_save_load_roundtrip(ticket, tmp_path):
    path = tmp_path / "ticket.npz"
    ticket.save(path)
    back = Ticket.load(path)
    assert back.theta0.equal(ticket.theta0) and back.pretrained.equal(ticket.pretrained)
    assert all(a.equal(b) for a, b in zip(back.masks, ticket.masks, strict=True))
    assert np.array_equal(back.recon_loss, ticket.recon_loss)
    assert back.meta["seed"] == 1 and back.meta["config"]["iterations"] == 3
    with pytest.raises(ValueError, match="not a pre-training ticket"):
        np.savez(tmp_path / "other.npz", x=np.zeros(1))
        Ticket.load(tmp_path / "other.npz")


def test_ticket_rejects_masks_that_regain_entries(ticket):
    with pytest.raises(ValueError, match="keeps weights that level 1 pruned"):
        Ticket(ticket.theta0, (ticket.masks[0], ticket.masks[2], ticket.masks[1]))


def test_dae_epoch_flops():
    assert dae_epoch_flops(20_000) == pytest.approx(54.48e9, rel=1e-3)
