"""A method plugin for fedsim: magnitude pruning of θ0, trained with FedProx.

``METHOD`` keeps, in every layer, the ``keep`` share of the initial weights θ0
with the largest magnitude (Han et al., "Learning both Weights and
Connections for Efficient Neural Networks", NeurIPS 2015, pruning at
initialisation rather than after training), and trains it with FedProx's
proximal term μ = 0.01 (Li et al., "Federated Optimization in Heterogeneous
Networks", MLSys 2020). The mask decides what fedsim counts: 50 % of the
weights (plus every bias) travel each way, and a client computes half the
dense work.

The hook contract (fedsim/learn/plugins.py): ``start(source, cfg, seed)``
returns ``Start(params, mask)``; ``source`` is the pre-training ticket for
LeNet-300-100 (θ0 is ``source.theta0_encoder``) or, for another model, its
own ``Start`` (θ0 is ``source.params``). The class attributes are optional:
``proximal_mu`` is this method's default (a scenario's ``methods.<label>``
may override it), ``version`` joins the cache key (bump it when ``start``
changes). A scenario names it ``kind: "my_method:METHOD"``; fedsim looks for
``my_method.py`` in the scenario's folder first, then on the Python path.

``SIGNED`` is the same method with code hooks: a ``transform`` that uploads
one sign bit per value and one float32 scale, with error feedback (signSGD
with a scale, Bernstein et al., "signSGD: Compressed Optimisation for
Non-Convex Problems", ICML 2018; the error memory of Karimireddy et al.,
"Error Feedback Fixes SignSGD and other Gradient Compression Schemes", ICML
2019), and ``upload_bits``, its encoding: fedsim trains with exactly what
``transform`` returns, keeps each client's memory in the checkpoints, and
counts ``upload_bits`` bits per upload (training and bytes agree).
"""

from __future__ import annotations


class MagnitudePruningWithProx:
    """Keep the ``keep`` share of each layer's largest-magnitude weights of θ0."""

    pruned = False  # takes no level of the pre-training ticket: it makes its own mask
    iterations = 0  # needs no pre-training, only θ0
    proximal_mu = 0.01
    version = 1
    keep = 0.5

    def start(self, source, cfg, seed):  # deterministic: cfg and seed are not needed
        import torch

        from fedsim.learn.masks import Mask
        from fedsim.learn.methods import Start

        params = source.params if isinstance(source, Start) else source.theta0_encoder
        layers = []
        for w in params.weights:
            kept = max(1, round(self.keep * w.numel()))
            layer = torch.zeros(w.numel(), dtype=torch.bool)
            layer[w.abs().flatten().topk(kept).indices] = True
            layers.append(layer.view(w.shape))
        mask = Mask(tuple(layers))
        return Start(mask.apply(params), mask)


class SignedUpdates(MagnitudePruningWithProx):
    """`MagnitudePruningWithProx` whose clients upload 1-bit signs (code hooks)."""

    version = 1

    def transform(self, delta, state, client_id):
        """Client ``client_id``'s upload: ``a = delta + memory``, sent as
        ``mean |a| x sign(a)`` over the surviving values; the rest stays in
        its memory for its next round. ``delta`` and the memory are ``[N]``
        float32 vectors over all parameters (pruned ones are 0 and stay 0)."""
        import torch

        a = delta if state is None else delta + state
        nonzero = torch.count_nonzero(a).clamp(min=1)
        sent = torch.sign(a) * (a.abs().sum() / nonzero)  # the scale over the values that travel
        return sent, a - sent

    def upload_bits(self, sent_params):
        """One sign bit per sent value and the float32 scale."""
        return sent_params + 32


METHOD = MagnitudePruningWithProx()
SIGNED = SignedUpdates()
