"""The convolutional denoising autoencoder of LeNet-5 (HP-FL's pre-training on the CNN).

HP-FL (paper, Sec. III-B) trains a DAE h(x; Θ) = g(f(x; θ); θ') whose encoder f
is the classifier's body, prunes it, and starts FL from the encoder's subnetwork
m ⊙ θ0. For LeNet-5 (`fedsim.learn.zoo.LeNet5`) the encoder is its body up to the
penultimate layer, exactly the classifier's layers and activations:

    conv1 6@5x5 (pad 2) - ReLU - pool 2 - conv2 16@5x5 - ReLU - pool 2 -
    fc1 400->120 - ReLU - fc2 120->84 (linear: the code, as the MLP DAE's 10 units)

and the decoder mirrors it, with transposed convolutions back to the image
(Masci et al. 2011, "Stacked convolutional auto-encoders for hierarchical
feature extraction"; the denoising criterion: Vincent et al. 2008):

    fc 84->120 - ReLU - fc 120->400 - ReLU - reshape 16x5x5 -
    convT 16->6 6x6 stride 2 (5x5 -> 14x14) - ReLU -
    convT 6->1 6x6 stride 2 pad 2 (14x14 -> 28x28) - sigmoid

Why fc1 and fc2 belong to the encoder: they hold 58,080 of LeNet-5's 61,470
weights (94 %), so an encoder of the convolutions alone could prune at most
4 % of the payload; the body up to the penultimate layer is what a
representation learned from unlabeled images transfers. fc3 (84 -> 10, 840
weights) maps features to class logits, which a reconstruction loss has no
signal for: it is the classifier's head, kept at θ0 and dense
(`fedsim.learn.counts.head_shapes`).

Weights are `Params` (``[fan_in, fan_out]`` per layer), the layout of
`fedsim.learn.zoo.Layout`: a convolution's ``[out, in, kh, kw]`` weight is the
``[in·kh·kw, out]`` matrix, a transposed convolution's ``[in, out, kh, kw]`` the
``[in·kh·kw, out]`` matrix (`to_module`, `from_module`), so the ticket's masks
and the FL trainer's masks are the same tensors. The encoder's Θ0 is the
classifier's θ0 (`fedsim.learn.zoo.resolve`, drawn under (seed, "init",
"module")); the decoder's is PyTorch's default initialisation of its layers
under the seed of (seed, "init", "decoder").

Training (`train_conv_dae`): the MLP DAE's recipe and streams
(`fedsim.learn.dae.fit_dae`: noise, shuffle, batches, mean squared error over
all pixels), autograd for the gradients, Adam with betas (0.9, 0.999) and eps
1e-8, a fresh state per call; pruned weights stay exactly 0 (gradient masked
before the step, weights after it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsim import seeding
from fedsim.learn.counts import (
    CONV_DAE_DECODER_SHAPES,
    dae_shapes,
    encoder_shapes,
    training_flops_per_sample,
)
from fedsim.learn.dae import ADAM_BETAS, ADAM_EPS, fit_dae
from fedsim.learn.masks import Mask
from fedsim.learn.model import Params
from fedsim.learn.spec import PretrainConfig

ARCH = "lenet-5"
#: Layers of the encoder (conv1, conv2, fc1, fc2).
ENCODER_LAYERS = len(encoder_shapes(ARCH))
#: Every layer as (kind, module weight shape, stride, padding): ``conv``
#: ``[out, in, k, k]``, ``fc`` ``[in, out]`` (the `Params` matrix itself),
#: ``convT`` ``[in, out, k, k]``.
LAYERS: tuple[tuple[str, tuple[int, ...], int, int], ...] = (
    ("conv", (6, 1, 5, 5), 1, 2),
    ("conv", (16, 6, 5, 5), 1, 0),
    ("fc", (400, 120), 1, 0),
    ("fc", (120, 84), 1, 0),
    ("fc", (84, 120), 1, 0),
    ("fc", (120, 400), 1, 0),
    ("convT", (16, 6, 6, 6), 2, 0),
    ("convT", (6, 1, 6, 6), 2, 2),
)
IMAGE_SHAPE = (1, 28, 28)


def to_module(w: Tensor, layer: int) -> Tensor:
    """Layer ``layer``'s ``[fan_in, fan_out]`` matrix as the weight its op takes."""
    kind, shape, _, _ = LAYERS[layer]
    if kind == "conv":
        return w.t().reshape(shape)
    if kind == "convT":
        c_in, c_out, kh, kw = shape
        return w.reshape(c_in, kh, kw, c_out).permute(0, 3, 1, 2)
    return w


def from_module(w: Tensor, layer: int) -> Tensor:
    """Inverse of `to_module`: a contiguous ``[fan_in, fan_out]`` matrix."""
    kind, shape, _, _ = LAYERS[layer]
    if kind == "conv":
        return w.reshape(shape[0], -1).t().contiguous()
    if kind == "convT":
        return w.permute(0, 2, 3, 1).reshape(-1, shape[1]).contiguous()
    return w.contiguous()


def init_conv_dae(classifier_theta0: Params, seed: int) -> Params:
    """Θ0 of the conv DAE: the classifier's first `ENCODER_LAYERS` layers (θ0)
    as the encoder, and a decoder initialised as PyTorch's ``nn.Linear`` and
    ``nn.ConvTranspose2d`` do, drawn under the seed of (seed, "init", "decoder")
    (the caller's global generator state is restored).

    Raises:
        ValueError: ``classifier_theta0`` is not LeNet-5's.
    """
    if classifier_theta0.shapes[:ENCODER_LAYERS] != encoder_shapes(ARCH):
        raise ValueError(f"not LeNet-5 parameters: layer shapes {classifier_theta0.shapes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.torch_seed(seed, "init", "decoder"))  # scoped to this block
        decoder = [nn.Linear(84, 120), nn.Linear(120, 400),
                   nn.ConvTranspose2d(16, 6, 6, stride=2), nn.ConvTranspose2d(6, 1, 6, stride=2, padding=2)]
    weights, biases = [], []
    for layer, module in enumerate(decoder, start=ENCODER_LAYERS):
        w = module.weight.detach()
        weights.append(w.t().contiguous() if LAYERS[layer][0] == "fc" else from_module(w, layer))
        biases.append(module.bias.detach().clone())
    enc = classifier_theta0.layers(0, ENCODER_LAYERS).clone()
    params = Params((*enc.weights, *weights), (*enc.biases, *biases))
    assert params.shapes[ENCODER_LAYERS:] == CONV_DAE_DECODER_SHAPES
    return params


def forward(weights: list[Tensor], biases: list[Tensor], x: Tensor, *, code_only: bool = False) -> Tensor:
    """The DAE on flat images ``x [N, 784]``: reconstructions ``[N, 784]`` in
    (0, 1), or with ``code_only`` the 84-unit code. ``weights`` in module
    shapes (`to_module`)."""
    h = x.reshape(-1, *IMAGE_SHAPE)
    for layer, ((kind, _, stride, pad), w, b) in enumerate(zip(LAYERS, weights, biases, strict=True)):
        if kind == "conv":
            h = F.max_pool2d(torch.relu(F.conv2d(h, w, b, padding=pad)), 2)
        elif kind == "fc":
            h = torch.addmm(b, h.flatten(1), w)
            if layer == ENCODER_LAYERS - 1:
                if code_only:
                    return h
                continue  # the code is linear
            h = torch.relu(h)
            if layer == ENCODER_LAYERS + 1:
                h = h.reshape(-1, 16, 5, 5)
        else:
            h = F.conv_transpose2d(h, w, b, stride=stride, padding=pad)
            h = torch.sigmoid(h) if layer == len(LAYERS) - 1 else torch.relu(h)
    return h.reshape(h.shape[0], -1)


def reconstruct(params: Params, x: Tensor) -> Tensor:
    """Reconstructions ``[N, 784]`` of flat images ``x`` by a conv DAE ``params``."""
    if params.shapes != dae_shapes(ARCH):
        raise ValueError(f"not conv DAE parameters: layer shapes {params.shapes}")
    weights = [to_module(w, i) for i, w in enumerate(params.weights)]
    return forward(weights, list(params.biases), x)


def conv_dae_layer_macs() -> tuple[int, ...]:
    """Forward multiply-accumulates of one sample per layer: the encoder's are
    LeNet-5's (117,600, 240,000, 48,000, 10,080), the decoder's 10,080, 48,000,
    a transposed convolution ``input elements · out_channels · k²`` (86,400 and
    42,336, the cropped border counted); 602,496 in all."""
    return (117_600, 240_000, 48_000, 10_080, 10_080, 48_000, 16 * 5 * 5 * 6 * 36, 6 * 14 * 14 * 1 * 36)


def conv_dae_epoch_flops(num_samples: int) -> float:
    """Dense training FLOPs of one conv-DAE epoch over ``num_samples`` images
    (`fedsim.learn.counts.training_flops_per_sample`; 67.6 GFLOP for 20,000,
    1.24x an MLP-DAE epoch)."""
    return float(training_flops_per_sample(conv_dae_layer_macs())) * num_samples


class _ConvDAE:
    """The conv DAE's parameters (module shapes), masks and Adam state."""

    def __init__(self, theta0: Params, mask: Mask, device: torch.device) -> None:
        masked = mask.apply(theta0).to(device)
        self.weights = [to_module(w, i).contiguous().requires_grad_() for i, w in enumerate(masked.weights)]
        self.biases = [b.clone().requires_grad_() for b in masked.biases]
        self.masks = [None if bool(m.all()) else to_module(m.to(device=device, dtype=torch.float32), i).contiguous()
                      for i, m in enumerate(mask.layers)]
        self.opt = torch.optim.Adam([*self.weights, *self.biases], betas=ADAM_BETAS, eps=ADAM_EPS)

    def params(self) -> Params:
        return Params(tuple(from_module(w.detach(), i) for i, w in enumerate(self.weights)),
                      tuple(b.detach().clone() for b in self.biases))

    def step_batch(self, x_noisy: Tensor, x_clean: Tensor, lr: float) -> Tensor:
        """One Adam step on a batch; returns the batch's summed squared error."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        z = forward(self.weights, self.biases, x_noisy)
        diff = z - x_clean
        sq_error = (diff * diff).sum()
        self.opt.zero_grad(set_to_none=False)
        (sq_error / diff.numel()).backward()
        with torch.no_grad():
            for w, m in zip(self.weights, self.masks, strict=True):
                if m is not None:
                    w.grad.mul_(m)
            self.opt.step()
            for w, m in zip(self.weights, self.masks, strict=True):
                if m is not None:
                    w.mul_(m)
        return sq_error.detach()


def train_conv_dae(
    theta0: Params,
    mask: Mask,
    data: Tensor,
    cfg: PretrainConfig,
    *,
    seed: int,
    iteration: int,
    epochs: int | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[Params, np.ndarray]:
    """Protocol 2's Training step on the conv DAE: train ``mask ⊙ theta0``.

    Args and returns: as `fedsim.learn.dae.train_dae` (``data``: float32
    ``[N, 784]`` in [0, 1], the 28x28 images row by row).

    Raises:
        ValueError: mask or parameters not of the conv DAE's shapes; an empty pool.
    """
    if theta0.shapes != dae_shapes(ARCH):
        raise ValueError(f"not conv DAE parameters: layer shapes {theta0.shapes}")
    mask.check(theta0)
    model = _ConvDAE(theta0, mask, data.device)
    losses = fit_dae(model, data, cfg, seed=seed, iteration=iteration, epochs=epochs, on_epoch=on_epoch)
    return model.params(), losses


__all__ = ["ARCH", "conv_dae_epoch_flops", "conv_dae_layer_macs", "init_conv_dae", "reconstruct",
           "train_conv_dae"]
