"""Datasets as torchvision gives them, turned into fedsim's user-data ``.npz``.

fedsim reads a user dataset from one ``.npz`` (``data: {npz: PATH}``; format
and checks: `fedsim.data.user`). `from_torchvision` builds its four arrays from
two map-style datasets, the objects ``torchvision.datasets.*`` return: anything
with ``__len__`` and ``__getitem__(i) -> (sample, label)``, so a user's own
``torch.utils.data.Dataset`` works too, and torchvision itself is not needed.
`save_npz` writes them; `torchvision_datasets` builds a torchvision dataset
pair by name, never downloading unless asked.

Samples, by type:

* a PIL image becomes ``[C, H, W]`` uint8 (``[1, H, W]`` for grayscale), as
  ``torchvision.transforms.functional.pil_to_tensor`` orders it, which is how
  ``nn.Conv2d`` takes it (``model.input_shape``, default the data's sample shape);
* a tensor or array is kept as it is (after ``transforms.ToTensor()``, float
  ``[C, H, W]`` in [0, 1]).

Samples of any shape train on a model that takes them (a run checks it with
one forward pass, `fedsim.learn.zoo.resolve`): 28x28 grayscale datasets
(MNIST, KMNIST, EMNIST, Fashion-MNIST) on any model, CIFAR-10's 3x32x32 on a
``model.factory`` built for it (LeNet-300-100 takes 784 values only). The arrays are uint8 when every sample is (fedsim divides by 255, as for
MNIST), else float32 (taken as already scaled). Labels must be integers
(``int``, a numpy integer or a 0-d integer tensor).

torchvision is an optional install (``pip install torchvision``, the release
that matches the installed torch; it is not in constraints.txt), imported only
by `torchvision_datasets`. Tests use duck-typed datasets; the adapter has not
been run against torchvision itself here.
"""

from __future__ import annotations

import operator
from collections.abc import Sized
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedsim import store
from fedsim.data.user import NPZ_ARRAYS, check_arrays
from fedsim.errors import InputError

#: What `torchvision_datasets` says when torchvision is missing.
TORCHVISION_MISSING = ("torchvision is not installed; it is optional: `pip install torchvision` "
                       "(the release built for your torch, see https://pytorch.org/get-started/"
                       "previous-versions/), or build the dataset objects yourself")


class MapDataset(Sized, Protocol):
    """A map-style dataset: ``len(ds)`` and ``ds[i] -> (sample, label)``."""

    def __getitem__(self, index: int) -> Any: ...


def _sample(x: Any, where: str) -> np.ndarray:
    """One sample as an array: PIL images channel-first, the rest as given."""
    if hasattr(x, "getbands"):  # a PIL image (duck-typed: PIL is not imported)
        arr = np.asarray(x)
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if hasattr(x, "detach"):  # a torch tensor, maybe on a GPU or requiring grad
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: sample of type {type(x).__name__} is not an image, tensor or "
                         f"array ({exc})") from None


def _split(dataset: MapDataset, split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of the first ``limit`` (default all) items of ``dataset``."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    xs, ys = [], []
    for i in range(n):
        where = f"from_torchvision: {split} item {i}"
        item = dataset[i]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise InputError(f"{where}: expected a (sample, label) pair, got {type(item).__name__}")
        x = _sample(item[0], where)
        if xs and x.shape != xs[0].shape:
            raise InputError(f"{where}: sample shape {list(x.shape)} differs from item 0's "
                             f"{list(xs[0].shape)}; resize them to one shape (a transform)")
        try:
            ys.append(operator.index(item[1]))
        except TypeError:
            raise InputError(f"{where}: label {item[1]!r} is not an integer class") from None
        xs.append(x)
    if not xs:
        raise InputError(f"from_torchvision: the {split} dataset holds no samples")
    x_all = np.stack(xs)
    x_all = x_all if x_all.dtype == np.uint8 else x_all.astype(np.float32)
    return x_all, np.asarray(ys, dtype=np.int64)


def from_torchvision(train: MapDataset, test: MapDataset, *, limit: int | None = None
                     ) -> dict[str, np.ndarray]:
    """The four arrays of a fedsim user dataset (``x_train``, ``y_train``,
    ``x_test``, ``y_test``; `fedsim.data.user.NPZ_ARRAYS`) from two map-style
    datasets, checked as ``data.npz`` is checked when a run starts.

    Args:
        train, test: datasets whose items are ``(sample, label)`` (see the
            module docstring for the sample types).
        limit: take only the first ``limit`` items of each (a quick subset).

    Raises:
        InputError: an item that is not a pair, a label that is not an
            integer, samples of different shapes, an empty dataset, or any
            check of `fedsim.data.user.check_arrays` (NaN, label range); the
            message names the split and the item.
    """
    x_train, y_train = _split(train, "train", limit)
    x_test, y_test = _split(test, "test", limit)
    arrays, _ = check_arrays({"x_train": x_train, "y_train": y_train, "x_test": x_test,
                              "y_test": y_test}, "from_torchvision")
    return {name: arrays[name] for name in NPZ_ARRAYS}


def save_npz(arrays: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write ``arrays`` (as `from_torchvision` returns them) to ``path``, a
    file for ``data: {npz: PATH}``, atomically and uncompressed (fedsim reads
    it with ``np.load``); the path written.

    Raises:
        InputError: the arrays fail `fedsim.data.user.check_arrays`.
    """
    path = Path(path)
    checked, _ = check_arrays(arrays, str(path))
    with store.atomic_write(path) as handle:
        np.savez(handle, **{name: checked[name] for name in NPZ_ARRAYS})
    return path


def torchvision_datasets(name: str, root: str | Path, *, download: bool = False,
                         **kwargs: Any) -> tuple[MapDataset, MapDataset]:
    """``torchvision.datasets.<name>`` for the train and test splits
    (``train=True`` / ``False``; e.g. ``"KMNIST"``, ``"FashionMNIST"``), with no
    transform (PIL images). Downloads only with ``download=True``.

    Raises:
        ImportError: torchvision is not installed (`TORCHVISION_MISSING`).
        InputError: torchvision has no dataset ``name``.
    """
    try:
        import torchvision.datasets as tv_datasets
    except ImportError:
        raise ImportError(TORCHVISION_MISSING) from None
    cls = getattr(tv_datasets, name, None)
    if cls is None:
        raise InputError(f"torchvision.datasets has no dataset {name!r}")
    return (cls(str(root), train=True, download=download, **kwargs),
            cls(str(root), train=False, download=download, **kwargs))


__all__ = ["TORCHVISION_MISSING", "MapDataset", "from_torchvision", "save_npz", "torchvision_datasets"]
