"""The data stage: the dataset, the server's unlabeled pool, the clients'
partition and the test set of a scenario, memoised in an explicit `DataCache`.

Streams ``"split"`` and ``"partition"`` of the scenario's seed decide the
split and the partition (`fedsim.seeding`), so equal `keys.data_key` give
equal data.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from fedsim import seeding, store
from fedsim.config import Scenario
from fedsim.data import as_float, load, make_partition, split_unlabeled
from fedsim.learn.federated import ClientData
from fedsim.pipeline.keys import data_key


@dataclass(frozen=True)
class Data:
    """The scenario's data: the unlabeled pool, the clients and the test set.

    Attributes:
        unlabeled: the server's pool, uint8 [N_u, 28, 28].
        clients: the labeled pool partitioned over the clients.
        test_x, test_y: the test set, float [N_t, 784] in [0, 1] and int64 labels.
        client_samples: samples held by each client, int64 [K].
    """

    unlabeled: np.ndarray
    clients: ClientData
    test_x: torch.Tensor
    test_y: torch.Tensor
    client_samples: np.ndarray


def _partition(scenario: Scenario) -> tuple[object, object, list[np.ndarray]]:
    """(dataset, unlabeled split, index arrays of each client's samples)."""
    dataset = load(scenario.data.dataset)
    splits = split_unlabeled(len(dataset.train_labels), scenario.data.unlabeled,
                             seeding.rng(scenario.seed, "split"))
    labeled_y = dataset.train_labels[splits.labeled_idx]
    parts = make_partition(scenario.data.partition, labeled_y, seeding.rng(scenario.seed, "partition"))
    return dataset, splits, parts


def _samples(parts: list[np.ndarray]) -> np.ndarray:
    return np.array([len(p) for p in parts], dtype=np.int64)


def build_data(scenario: Scenario) -> Data:
    """Load the dataset, split off the server's unlabeled pool and partition
    the labeled pool over the clients (no memo; see `DataCache`)."""
    dataset, splits, parts = _partition(scenario)
    labeled_y = dataset.train_labels[splits.labeled_idx]
    clients = ClientData.from_arrays(dataset.train_images[splits.labeled_idx], labeled_y, parts)
    test_x = torch.from_numpy(as_float(dataset.test_images))
    test_y = torch.as_tensor(np.array(dataset.test_labels), dtype=torch.int64)
    return Data(dataset.train_images[splits.unlabeled_idx], clients, test_x, test_y, _samples(parts))


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
