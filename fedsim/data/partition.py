"""Partitioning the labeled pool over the clients: one class per scheme.

Each partitioner is built with its settings and a ``np.random.Generator`` it
owns (Flower's partitioners do the same); calling it with the labels of the
labeled pool returns, per client, the sorted int64 indices into those labels.
Clients may get different numbers of samples. Each call draws from the
generator, so the first call of two partitioners built with equal settings
and equal seeds returns the same partition.

Schemes:

* ``shards`` -- the non-IID split of McMahan et al. (2017) that HP-FL uses
  (paper, Sec. IV-A-1): sort by label, cut into shards of 200, give each of
  100 clients 2 random shards, so "most clients will only have the 400 data
  samples consisting of two classes".
* ``iid`` -- a random permutation cut into near-equal parts.
* ``dirichlet`` -- per class, client proportions drawn from Dir(alpha)
  (Hsu, Qi & Brown 2019, "Measuring the effects of non-identical data
  distribution for federated visual classification").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np


class Partitioner(Protocol):
    """labels of the labeled pool -> per client, sorted int64 indices into them."""

    def __call__(self, labels: np.ndarray) -> list[np.ndarray]: ...


PARTITIONERS: dict[str, Callable[..., Partitioner]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: add a partitioner class to `PARTITIONERS` under ``name``."""

    def add(cls: type) -> type:
        if name in PARTITIONERS:
            raise ValueError(f"partition scheme {name!r} is already registered")
        PARTITIONERS[name] = cls
        cls.scheme = name
        return cls

    return add


def get_partitioner(name: str, *, rng: np.random.Generator, **settings: Any) -> Partitioner:
    """The partitioner of scheme ``name`` built with ``settings`` and ``rng``.

    Raises:
        ValueError: unknown scheme (the message lists the choices) or a bad setting.
        TypeError: a setting the scheme does not take, or ``rng`` is not a Generator.
    """
    try:
        cls = PARTITIONERS[name]
    except KeyError:
        choices = ", ".join(sorted(PARTITIONERS))
        raise ValueError(f"unknown partition scheme {name!r}; choices: {choices}") from None
    return cls(rng=rng, **settings)


# ---------------------------------------------------------------------- checks


def _positive_int(scheme: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{scheme}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _generator(scheme: str, rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{scheme}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_labels(scheme: str, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{scheme}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"{scheme}: labels must be >= 0, got {labels.min()}")
    return labels


def _need_samples(scheme: str, labels: np.ndarray, num_clients: int, per_client: int) -> None:
    if num_clients * per_client > len(labels):
        raise ValueError(
            f"{scheme}: num_clients={num_clients} clients with at least {per_client} sample(s) "
            f"each need {num_clients * per_client} samples, but the labeled pool has {len(labels)}"
        )


# -------------------------------------------------------------------- schemes


@register("shards")
class ShardPartitioner:
    """Sort by label, cut into shards, give each client ``shards_per_client``
    random shards (paper, Sec. IV-A-1: 40,000 samples, 200 shards of 200,
    100 clients x 2 shards).

    The labels are sorted with a stable sort (ties keep their index order),
    the sorted sequence is cut into ``len(labels) // shard_size`` full shards,
    the shards are shuffled with the generator, and client k gets shuffled
    shards ``k * shards_per_client ... (k+1) * shards_per_client - 1``.
    Unused samples -- the incomplete last shard (the tail of the highest
    label) and any shards beyond ``num_clients * shards_per_client`` -- belong
    to no client. With the paper's numbers every sample is used.

    Raises (on call):
        ValueError: ``num_clients * shards_per_client * shard_size > len(labels)``.
    """

    scheme = "shards"

    def __init__(
        self,
        *,
        num_clients: int = 100,
        shard_size: int = 200,
        shards_per_client: int = 2,
        rng: np.random.Generator,
    ) -> None:
        self.num_clients = _positive_int(self.scheme, "num_clients", num_clients)
        self.shard_size = _positive_int(self.scheme, "shard_size", shard_size)
        self.shards_per_client = _positive_int(self.scheme, "shards_per_client", shards_per_client)
        self.rng = _generator(self.scheme, rng)

    def __call__(self, labels: np.ndarray) -> list[np.ndarray]:
        labels = _check_labels(self.scheme, labels)
        needed_shards = self.num_clients * self.shards_per_client
        needed_samples = needed_shards * self.shard_size
        if needed_samples > len(labels):
            raise ValueError(
                f"shards: num_clients * shards_per_client * shard_size = {self.num_clients} * "
                f"{self.shards_per_client} * {self.shard_size} = {needed_samples} samples, "
                f"but the labeled pool has only {len(labels)}"
            )
        num_shards = len(labels) // self.shard_size
        order = np.argsort(labels, kind="stable").astype(np.int64)
        shards = order[: num_shards * self.shard_size].reshape(num_shards, self.shard_size)
        chosen = self.rng.permutation(num_shards)[:needed_shards]
        chosen = chosen.reshape(self.num_clients, self.shards_per_client)
        return [np.sort(shards[row].ravel()) for row in chosen]


@register("iid")
class IidPartitioner:
    """A random permutation of the pool cut into ``num_clients`` parts whose
    sizes differ by at most one (the first ``len(labels) % num_clients``
    clients get one more sample).

    Raises (on call):
        ValueError: fewer samples than clients.
    """

    scheme = "iid"

    def __init__(self, *, num_clients: int = 100, rng: np.random.Generator) -> None:
        self.num_clients = _positive_int(self.scheme, "num_clients", num_clients)
        self.rng = _generator(self.scheme, rng)

    def __call__(self, labels: np.ndarray) -> list[np.ndarray]:
        labels = _check_labels(self.scheme, labels)
        _need_samples(self.scheme, labels, self.num_clients, 1)
        order = self.rng.permutation(len(labels)).astype(np.int64)
        return [np.sort(part) for part in np.array_split(order, self.num_clients)]


@register("dirichlet")
class DirichletPartitioner:
    """Label-skewed split: for each class c, the class's samples (shuffled) are
    cut among the clients in proportions p_c ~ Dir(alpha * 1_K). Small
    ``alpha`` gives each client few classes; large ``alpha`` tends to IID.

    Partitions in which some client gets fewer than ``min_size`` samples are
    drawn again, at most ``max_tries`` times.

    Raises (on call):
        ValueError: ``num_clients * min_size > len(labels)``, or no draw in
            ``max_tries`` gave every client ``min_size`` samples.
    """

    scheme = "dirichlet"

    def __init__(
        self,
        *,
        num_clients: int = 100,
        alpha: float = 0.5,
        min_size: int = 10,
        max_tries: int = 1000,
        rng: np.random.Generator,
    ) -> None:
        self.num_clients = _positive_int(self.scheme, "num_clients", num_clients)
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, int | float | np.floating | np.integer)
            or not math.isfinite(alpha)
            or alpha <= 0
        ):
            raise ValueError(f"dirichlet: alpha must be a finite number > 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.min_size = _positive_int(self.scheme, "min_size", min_size, minimum=0)
        self.max_tries = _positive_int(self.scheme, "max_tries", max_tries)
        self.rng = _generator(self.scheme, rng)

    def _draw(self, by_class: list[np.ndarray]) -> list[list[np.ndarray]]:
        parts: list[list[np.ndarray]] = [[] for _ in range(self.num_clients)]
        concentration = np.full(self.num_clients, self.alpha)
        for members in by_class:
            members = self.rng.permutation(members)
            proportions = self.rng.dirichlet(concentration)
            cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(np.int64)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].append(chunk)
        return parts

    def __call__(self, labels: np.ndarray) -> list[np.ndarray]:
        labels = _check_labels(self.scheme, labels)
        _need_samples(self.scheme, labels, self.num_clients, self.min_size)
        by_class = [np.flatnonzero(labels == c).astype(np.int64) for c in np.unique(labels)]
        smallest = 0
        for _ in range(self.max_tries):
            parts = self._draw(by_class)
            sizes = [sum(len(chunk) for chunk in chunks) for chunks in parts]
            smallest = min(sizes)
            if smallest >= self.min_size:
                return [
                    np.sort(np.concatenate([np.empty(0, np.int64), *chunks])) for chunks in parts
                ]
        raise ValueError(
            f"dirichlet: no partition of {len(labels)} samples over num_clients={self.num_clients} "
            f"with alpha={self.alpha} gave every client min_size={self.min_size} samples in "
            f"max_tries={self.max_tries} draws (smallest client in the last draw: {smallest}); "
            f"lower min_size, raise alpha or use fewer clients"
        )
