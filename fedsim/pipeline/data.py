"""The data stage: the dataset, the server's unlabeled pool, the clients'
partition and the test set of a scenario, memoised in an explicit `DataCache`.

Streams ``"split"`` and ``"partition"`` of the scenario's seed decide the
split and the partition (`fedsim.seeding`), so equal `keys.data_key` give
equal data. The dataset is the registry's ``data.dataset`` or a user npz
(``data.npz``, `fedsim.data.user`); an ``external`` partition is read from its
file. Both files must be resolved first (`fedsim.data.resolve.resolve_data_files`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from fedsim import seeding, store
from fedsim.config import Scenario
from fedsim.data import load, make_partition, split_unlabeled
from fedsim.data.user import float_rows
from fedsim.learn.federated import ClientData
from fedsim.pipeline.keys import data_key


@dataclass(frozen=True)
class Data:
    """The scenario's data: the unlabeled pool, the clients and the test set.

    Attributes:
        unlabeled: the server's pool, uint8 [N_u, 28, 28] (a user npz: its x_train rows).
        clients: the labeled pool partitioned over the clients.
        test_x, test_y: the test set, float rows [N_t, d] (d = values per
            sample, 784 for MNIST; uint8 pixels scaled to [0, 1])
            and int64 labels.
        client_samples: samples held by each client, int64 [K].
    """

    unlabeled: np.ndarray
    clients: ClientData
    test_x: torch.Tensor
    test_y: torch.Tensor
    client_samples: np.ndarray


@dataclass(frozen=True)
class _Arrays:
    """The four arrays of either source: a registry dataset (uint8 28x28
    images) or a user npz (`fedsim.data.user`; any numeric dtype)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def _load(scenario: Scenario) -> _Arrays:
    """The scenario's dataset: ``data.npz`` (resolved by
    `fedsim.data.resolve.resolve_data_files`) or the registry's ``data.dataset``."""
    if scenario.data.npz is not None:
        from fedsim.data.user import load_npz

        user = load_npz(scenario.data.npz)
        return _Arrays(user.x_train, user.y_train, user.x_test, user.y_test)
    dataset = load(scenario.data.dataset)
    return _Arrays(dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels)


def _partition(scenario: Scenario) -> tuple[_Arrays, object, list[np.ndarray]]:
    """(dataset, unlabeled split, index arrays of each client's samples)."""
    dataset = _load(scenario)
    splits = split_unlabeled(len(dataset.train_y), scenario.data.unlabeled,
                             seeding.rng(scenario.seed, "split"))
    labeled_y = dataset.train_y[splits.labeled_idx]
    parts = make_partition(scenario.data.partition, labeled_y, seeding.rng(scenario.seed, "partition"))
    return dataset, splits, parts


def _samples(parts: list[np.ndarray]) -> np.ndarray:
    return np.array([len(p) for p in parts], dtype=np.int64)


def build_data(scenario: Scenario) -> Data:
    """Load the dataset, split off the server's unlabeled pool and partition
    the labeled pool over the clients (no memo; see `DataCache`)."""
    dataset, splits, parts = _partition(scenario)
    labeled_y = dataset.train_y[splits.labeled_idx]
    # rows of float32: uint8 pixels / 255 (as_float), a user's float samples as they are
    inputs = torch.from_numpy(float_rows(dataset.train_x[splits.labeled_idx]))
    clients = ClientData(inputs, torch.as_tensor(np.array(labeled_y), dtype=torch.int64), tuple(parts))
    test_x = torch.from_numpy(float_rows(dataset.test_x))
    test_y = torch.as_tensor(np.array(dataset.test_y), dtype=torch.int64)
    return Data(dataset.train_x[splits.unlabeled_idx], clients, test_x, test_y, _samples(parts))


class DataCache:
    """The last ``capacity`` scenarios' data, by data key.

    A study's worker runs many cells on the same data, and loading MNIST
    costs about half a second each time; one entry (the default) keeps one
    dataset in memory, not one per key.
    """

    def __init__(self, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self.capacity = capacity
        self._entries: OrderedDict[str, Data] = OrderedDict()

    def get(self, scenario: Scenario) -> Data:
        """``scenario``'s data, built on a miss (evicting the oldest entry)."""
        key = store.stable_hash(data_key(scenario))
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        while len(self._entries) >= self.capacity:
            self._entries.popitem(last=False)
        self._entries[key] = data = build_data(scenario)
        return data

    def peek(self, scenario: Scenario) -> Data | None:
        """``scenario``'s data when held, else None (builds nothing)."""
        return self._entries.get(store.stable_hash(data_key(scenario)))

    def clear(self) -> None:
        self._entries.clear()


#: The process's data cache, used where a caller passes none (`prepare_data`).
SHARED_DATA = DataCache()


def prepare_data(scenario: Scenario, cache: DataCache | None = None) -> Data:
    """``scenario``'s data from ``cache`` (default: `SHARED_DATA`)."""
    return (cache if cache is not None else SHARED_DATA).get(scenario)


def client_samples(scenario: Scenario, cache: DataCache | None = None) -> np.ndarray:
    """Samples per client, int64 [K], without building the clients' tensors
    when ``cache`` (default `SHARED_DATA`) does not hold the data (the study
    planner's cache probe needs only these)."""
    held = (cache if cache is not None else SHARED_DATA).peek(scenario)
    if held is not None:
        return held.client_samples
    return _samples(_partition(scenario)[2])
