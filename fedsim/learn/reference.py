"""A plain FedAvg trainer: one ``nn.Module`` (LeNet-300-100 or any model), one
client after another.

The specification that `fedsim.learn.federated.train` must match (the tests
hold the two within 1e-4) and the baseline of the speed benchmark. Nothing here
is clever on purpose: autograd, ``torch.optim.SGD``, ``F.cross_entropy``, the
same shuffles (`epoch_permutations`, `client_batches`) and participation rule,
and an average accumulated in float64 in a Python loop.
"""

from __future__ import annotations

import copy
import itertools
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsim.learn.federated import (
    ClientData,
    OnRound,
    Participation,
    client_batches,
    epoch_permutations,
    participants,
)
from fedsim.learn.masks import Mask
from fedsim.learn.model import LENET_SIZES, Params, as_inputs, as_labels
from fedsim.learn.spec import FLConfig
from fedsim.learn.trace import RoundRecord, TrainingTrace, TrainState

if TYPE_CHECKING:
    from fedsim.learn.zoo import ModelSpec


class LeNet(nn.Module):
    """LeNet-300-100 as ``nn.Linear`` layers (ReLU, ReLU, logits)."""

    def __init__(self) -> None:
        super().__init__()
        sizes = LENET_SIZES
        self.linears = nn.ModuleList(nn.Linear(i, o) for i, o in itertools.pairwise(sizes))

    def forward(self, x: Tensor) -> Tensor:
        for i, linear in enumerate(self.linears):
            x = linear(x)
            if i < len(self.linears) - 1:
                x = F.relu(x)
        return x

    @torch.no_grad()
    def load(self, params: Params) -> LeNet:
        """Copy ``params`` in (``nn.Linear`` stores the transposed weight)."""
        for linear, w, b in zip(self.linears, params.weights, params.biases, strict=True):
            linear.weight.copy_(w.t())
            linear.bias.copy_(b)
        return self

    @torch.no_grad()
    def params(self) -> Params:
        return Params(
            tuple(lin.weight.t().clone().contiguous() for lin in self.linears),
            tuple(lin.bias.clone() for lin in self.linears),
        )


def local_train(
    model: LeNet,
    clients: ClientData,
    client_id: int,
    masks: list[Tensor | None],
    cfg: FLConfig,
    *,
    seed: int,
    round_num: int,
) -> int:
    """Client ``client_id``'s local SGD of round ``round_num`` on ``model``, in place.

    ``masks`` are the layers' masks transposed to ``nn.Linear``'s layout (None
    for a layer without pruned weights). Returns the number of steps taken.
    """
    pairs = [(lin.weight, m) for lin, m in zip(model.linears, masks, strict=True) if m is not None]
    return local_sgd(model, pairs, clients, client_id, cfg, seed=seed, round_num=round_num)


def local_sgd(
    model: nn.Module,
    masked: list[tuple[nn.Parameter, Tensor]],
    clients: ClientData,
    client_id: int,
    cfg: FLConfig,
    *,
    seed: int,
    round_num: int,
    input_shape: tuple[int, ...] | None = None,
) -> int:
    """Client ``client_id``'s local SGD of round ``round_num`` on any ``model``,
    in place: ``torch.optim.SGD`` on the mean cross-entropy of each mini-batch,
    plus FedProx's μ/2 ||w - w_start||² where ``cfg.proximal_mu`` = μ > 0
    (its gradient μ (w - w_start) added to every parameter's, w_start the
    model given, i.e. the round's global model; Li et al., MLSys 2020);
    ``masked`` pairs a parameter with its 0/1 mask (same shape), applied to the
    gradient and to the weight after every step. ``input_shape``: the shape of
    one sample as the model takes it (default: the samples as ``clients``
    holds them, ``[*clients.sample_shape]``). Returns the number of steps taken."""
    rows = clients.client_indices[client_id]
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    perms = epoch_permutations(seed, client_id, round_num, rows.size, cfg.local_epochs)
    mu = float(cfg.proximal_mu)
    anchor = [(p, p.detach().clone()) for p in model.parameters()] if mu else []
    steps = 0
    for batch in client_batches(perms, cfg.batch_size):
        index = torch.from_numpy(rows[batch])
        x = clients.inputs[index]
        if input_shape is not None:
            x = x.reshape(-1, *input_shape)
        loss = F.cross_entropy(model(x), clients.labels[index])
        optimizer.zero_grad()
        loss.backward()
        for param, start in anchor:
            param.grad.add_(param.detach() - start, alpha=mu)
        for param, m in masked:
            param.grad.mul_(m)
        optimizer.step()
        with torch.no_grad():
            for param, m in masked:
                param.mul_(m)
        steps += 1
    return steps


def reference_masks(mask: Mask) -> list[Tensor | None]:
    """``mask`` in ``nn.Linear``'s layout, as float; None for unpruned layers."""
    return [None if dense else m.t().to(torch.float32) for m, dense in zip(mask.layers, mask.is_dense(), strict=True)]


def train_reference(
    init: Params,
    mask: Mask,
    clients: ClientData,
    test: tuple[Tensor, Tensor],
    cfg: FLConfig,
    *,
    seed: int,
    rounds: int,
    participation: Participation = None,
    start: TrainState | None = None,
    on_round: OnRound | None = None,
    model: ModelSpec | None = None,
) -> TrainingTrace:
    """FedAvg rounds ``start.round_num + 1 .. rounds`` on the CPU, client by client.

    Same arguments and result as `fedsim.learn.federated.train` (without
    device, stop and progress). ``model``: any classifier
    (`fedsim.learn.zoo.ModelSpec`; a copy of its module is trained, each batch
    and the test set viewed as ``[B, *model.input_shape]``, so samples of any
    shape holding that many values are taken); None = LeNet-300-100 (samples
    of 784 values).
    """
    state = start if start is not None else TrainState(0, init)
    global_params = mask.apply(state.params)
    if model is None:
        net: nn.Module = LeNet()
        pairs = [(lin.weight, m) for lin, m in zip(net.linears, reference_masks(mask), strict=True)
                 if m is not None]
        load = net.load
        read = net.params
        input_shape: tuple[int, ...] = (LENET_SIZES[0],)  # the kernel's flat rows
    else:
        net = copy.deepcopy(model.module)
        params_by_name = dict(net.named_parameters())
        pairs = [(params_by_name[k], m) for k, m in model.layout.mask_tensors(mask.layers).items()]

        @torch.no_grad()
        def load(params: Params) -> nn.Module:
            for name, t in model.layout.to_named(params).items():
                params_by_name[name].copy_(t)
            return net

        def read() -> Params:
            return model.layout.to_params({k: v.detach() for k, v in net.named_parameters()})

        input_shape = model.input_shape
    test_x = as_inputs(test[0])
    test_y = as_labels(test[1])
    records = []
    for round_num in range(state.round_num + 1, rounds + 1):
        ids = participants(participation, round_num, clients.num_clients)
        samples = np.array([clients.client_indices[k].size for k in ids], dtype=np.int64)
        steps = []
        sums = [torch.zeros(t.shape, dtype=torch.float64) for t in global_params.tensors()]
        for k in ids:
            load(global_params)
            steps.append(local_sgd(net, pairs, clients, int(k), cfg, seed=seed, round_num=round_num,
                                   input_shape=input_shape))
            trained = read()
            for acc, t in zip(sums, trained.tensors(), strict=True):
                acc += t.double() * float(clients.client_indices[k].size)
        if samples.sum() > 0:
            avg = [(acc / float(samples.sum())).float() for acc in sums]
            global_params = Params(tuple(avg[0::2]), tuple(avg[1::2]))
        with torch.no_grad():
            x = test_x.reshape(-1, *input_shape)
            logits = load(global_params)(x)
            accuracy = float((logits.argmax(1) == test_y).double().mean())
            loss = float(F.cross_entropy(logits, test_y))
        record = RoundRecord(
            round_num=round_num,
            accuracy=accuracy,
            loss=loss,
            participants=int(ids.size),
            client_ids=ids,
            samples=samples,
            local_steps=np.array(steps, dtype=np.int64),
        )
        records.append(record)
        if on_round is not None:
            on_round(round_num, global_params, record)
    return TrainingTrace.from_records(records, {"seed": int(seed), "device": "cpu", "reference": True})
