"""The ``asynchronous:`` section of a method: buffered asynchronous FL (FedBuff).

A method with ``asynchronous: {concurrency: C, buffer_size: M}`` is trained
with FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous
Aggregation", AISTATS 2022) instead of synchronous FedAvg rounds: the server
keeps C clients training, puts every arrived update into a buffer and takes a
server step when the buffer holds M updates. A "round" of such a method is a
server step. The schedule is `fedsim.system.asynchronous.simulate_async`; the
model is in docs/network-model.md, "Asynchronous FL (FedBuff)".

Imports no numpy-heavy or torch code: loading a scenario stays light.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field

from fedsim.schema import Section

__all__ = ["STALENESS_KINDS", "AsyncConfig", "staleness_weight"]

#: Staleness weightings: ``fedbuff`` 1/sqrt(1 + s) (Nguyen et al. 2022, Sec. 3,
#: after FedAsync's polynomial weighting, Xie et al. 2019), ``constant`` 1.
STALENESS_KINDS = ("fedbuff", "constant")


class AsyncConfig(Section):
    """Buffered asynchronous aggregation (FedBuff) of one method.

    Attributes:
        concurrency: clients training at once (C, >= 1; at most the number of
            clients, checked when the schedule is simulated).
        buffer_size: updates per server step (M, >= 1).
        staleness: how an update of staleness s is weighted in its step:
            ``fedbuff`` (1/sqrt(1 + s)) or ``constant`` (1).
        server_lr: the server learning rate eta_g of the step
            ``x <- x + eta_g * sum_i w(s_i) delta_i / M`` (> 0; 1 with constant
            weights and zero staleness is FedAvg's step).
        max_staleness: updates staler than this when they arrive are discarded
            (reason ``stale``), null: none are.

    ``rounds.participation`` and ``rounds.overcommit`` do not apply (C and M
    replace them); ``rounds.deadline`` is per update (from the client's
    start), ``rounds.dropout`` per update, ``rounds.max`` counts server steps.
    """

    concurrency: Annotated[int, Field(strict=True, ge=1)]
    buffer_size: Annotated[int, Field(strict=True, ge=1)]
    staleness: Literal["fedbuff", "constant"] = "fedbuff"
    server_lr: Annotated[float, Field(gt=0.0)] = 1.0
    max_staleness: Annotated[int, Field(strict=True, ge=0)] | None = None


def staleness_weight(staleness: int, kind: str) -> float:
    """The weight of an update of ``staleness`` server versions (>= 0):
    ``fedbuff`` 1/sqrt(1 + s), ``constant`` 1.

    Raises:
        ValueError: an unknown kind or a negative staleness.
    """
    if staleness < 0:
        raise ValueError(f"staleness must be >= 0, got {staleness!r}")
    if kind == "fedbuff":
        return 1.0 / math.sqrt(1.0 + staleness)
    if kind == "constant":
        return 1.0
    raise ValueError(f"staleness weighting {kind!r} is not one of {', '.join(STALENESS_KINDS)}")
