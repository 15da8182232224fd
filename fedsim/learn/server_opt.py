"""Server optimisers: the server's step on the round's averaged update.

With the participants' (possibly compressed) updates ``Δ_k`` and FedAvg's
weights ``p_k = n_k / Σ n``, the averaged update is ``Δ = Σ_k p_k Δ_k``, the
direction the global model moves in (Reddi et al., "Adaptive Federated
Optimization", ICLR 2021, Algorithm 2, writes the same Δ_t):

* ``fedavg``: ``θ <- θ + η Δ`` (η = 1 is McMahan et al.'s FedAvg);
* ``fedavgm`` (Hsu, Qi and Brown, "Measuring the Effects of Non-Identical
  Data Distribution for Federated Visual Classification", 2019):
  ``v <- β v + Δ``, ``θ <- θ + η v``;
* ``fedadam`` (Reddi et al. 2021, Algorithm 2, no bias correction):
  ``m <- β1 m + (1 - β1) Δ``, ``v <- β2 v + (1 - β2) Δ²``,
  ``θ <- θ + η m / (√v + τ)``.

Moments start at zero; they are vectors over the model's N parameters
(`fedsim.learn.compression.flatten` order), kept in the training state and
checkpoints. Pure functions: the state in, the new state out.

`ServerAggregate` is the built-in ``aggregate`` hook (`fedsim.learn.plugins`):
FedAvg's weighted mean, then `server_step`; a plugin's ``aggregate`` replaces
both (`fedsim.learn.aggregation` runs either the same way).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from fedsim.learn.spec import ServerConfig

__all__ = ["ServerAggregate", "server_step"]


def server_step(
    cfg: ServerConfig, theta: Tensor, update: Tensor, state: Mapping[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor]]:
    """One server step.

    Args:
        cfg: ``fl.server``.
        theta: ``[N]`` the global model.
        update: ``[N]`` the averaged update Δ.
        state: the moments after the previous round (``{}`` at the start):
            ``v`` (fedavgm), ``m`` and ``v`` (fedadam).

    Returns:
        ``(the new global model [N], the new state)``.
    """
    if cfg.optimizer == "fedavg":
        return theta + cfg.lr * update, {}
    if cfg.optimizer == "fedavgm":
        velocity = cfg.momentum * state["v"] + update if "v" in state else update.clone()
        return theta + cfg.lr * velocity, {"v": velocity}
    m = state["m"] if "m" in state else update.new_zeros(update.shape)
    v = state["v"] if "v" in state else update.new_zeros(update.shape)
    m = cfg.beta1 * m + (1.0 - cfg.beta1) * update
    v = cfg.beta2 * v + (1.0 - cfg.beta2) * update * update
    return theta + cfg.lr * m / (v.sqrt() + cfg.tau), {"m": m, "v": v}


class ServerAggregate:
    """The built-in aggregate hook: ``(θ [N], deltas [K, N], weights [K],
    state) -> (θ', state')`` with ``Δ = weights @ deltas`` (FedAvg's
    ``Σ_k p_k Δ_k``) and `server_step` of ``cfg`` (None: ``θ + Δ``).

    ``linear``: it reads the deltas only through ``Σ_k p_k Δ_k``, so
    `fedsim.learn.aggregation` may hand it that sum already formed (one row of
    weight 1, summed client by client as the clients are transformed) instead
    of all K rows; ``1 x Δ`` is exactly Δ, so the result is the same."""

    linear = True

    def __init__(self, cfg: ServerConfig | None) -> None:
        self.cfg = cfg

    def __call__(self, theta: Tensor, deltas: Tensor, weights: Tensor,
                 state: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        update = weights @ deltas
        if self.cfg is None:
            return theta + update, {}
        return server_step(self.cfg, theta, update, state)
