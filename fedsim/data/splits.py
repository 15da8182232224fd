"""The server's unlabeled pool and the clients' labeled pool.

HP-FL (paper, Sec. IV-A-1) splits the 60,000 MNIST training images into
"unlabeled open data consisting of 20,000 images, which used in the
pre-training process, and the labeled data consisting of 40,000 image-label
pairs, which used in FL process". The paper does not say how the 20,000 are
chosen; fedsim draws them uniformly at random without replacement. The test
set is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _check_index_array(name: str, array: np.ndarray) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != np.int64 or array.ndim != 1:
        raise ValueError(f"Splits.{name} must be a 1-D int64 array, got {array!r:.80}")
    if array.size > 1 and not np.all(array[1:] > array[:-1]):
        raise ValueError(f"Splits.{name} must be strictly increasing (sorted, no repeats)")


@dataclass(frozen=True, eq=False)
class Splits:
    """Disjoint, sorted int64 indices into the training set.

    ``unlabeled_idx``: the server's unlabeled pool (pre-training, labels unused);
    ``labeled_idx``: the labeled pool that is partitioned over the clients.
    """

    unlabeled_idx: np.ndarray
    labeled_idx: np.ndarray

    def __post_init__(self) -> None:
        _check_index_array("unlabeled_idx", self.unlabeled_idx)
        _check_index_array("labeled_idx", self.labeled_idx)
        if np.intersect1d(self.unlabeled_idx, self.labeled_idx).size:
            raise ValueError("Splits.unlabeled_idx and Splits.labeled_idx overlap")

    @property
    def n_unlabeled(self) -> int:
        return int(self.unlabeled_idx.size)

    @property
    def n_labeled(self) -> int:
        return int(self.labeled_idx.size)


def split_unlabeled(n_train: int, n_unlabeled: int, rng: np.random.Generator) -> Splits:
    """Split ``range(n_train)`` into a random unlabeled pool of ``n_unlabeled``
    indices and a labeled pool of the rest (paper: 60,000 -> 20,000 + 40,000).

    Args:
        n_train: size of the training set (samples).
        n_unlabeled: size of the server's unlabeled pool, in ``[0, n_train]``.
        rng: the generator to draw from, e.g. ``fedsim.seeding.rng(seed, "split")``.

    Returns:
        `Splits` whose two index arrays are sorted and together cover
        ``range(n_train)`` exactly once.

    Raises:
        ValueError: ``n_train < 0`` or ``n_unlabeled`` outside ``[0, n_train]``.
    """
    for name, value in (("n_train", n_train), ("n_unlabeled", n_unlabeled)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if n_train < 0:
        raise ValueError(f"n_train must be >= 0, got {n_train}")
    if not 0 <= n_unlabeled <= n_train:
        raise ValueError(f"n_unlabeled must be in [0, n_train={n_train}], got {n_unlabeled}")
    order = rng.permutation(int(n_train)).astype(np.int64)
    return Splits(
        unlabeled_idx=np.sort(order[:n_unlabeled]),
        labeled_idx=np.sort(order[n_unlabeled:]),
    )
