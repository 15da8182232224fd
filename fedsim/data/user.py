"""User data: a dataset given as one ``.npz`` file (``data.npz`` of a scenario).

The file holds four arrays, read with ``np.load(allow_pickle=False)`` (an
``.npz`` can carry pickled objects, which could run code; they are refused)::

    x_train  [N, *sample_shape]   numeric, finite
    y_train  [N]                  integral labels 0..C-1
    x_test   [M, *sample_shape]   same sample shape as x_train
    y_test   [M]                  integral labels 0..C-1

C, the number of classes, is ``max(y_train, y_test) + 1``. Pixels stored as
``uint8`` are scaled to [0, 1] by /255 as for MNIST (`fedsim.data.as_float`);
any other numeric dtype is taken as already scaled and cast to float32
(`float_rows`). Every failed check is a `fedsim.errors.InputError` naming the
file and the array (`load_npz`), raised before any stage runs
(`fedsim.data.resolve.resolve_data_files`).

Imports numpy only, so a scenario's checks never import torch.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.errors import InputError
from fedsim.store import sha256_file

#: The arrays an npz must hold, in this order.
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True, eq=False, repr=False)
class UserDataset:
    """A checked user dataset; arrays are read-only, as in the file.

    Attributes:
        path: the npz (absolute once resolved).
        sha256: SHA-256 of the file's bytes (part of the data key).
        x_train, y_train, x_test, y_test: as in the file; labels int64.
        num_classes: C = max label + 1 over both splits.
    """

    path: Path
    sha256: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample (e.g. ``(28, 28)``)."""
        return tuple(self.x_train.shape[1:])

    @property
    def sample_size(self) -> int:
        """Values per sample (the product of `sample_shape`)."""
        return math.prod(self.sample_shape)

    @property
    def train_size(self) -> int:
        return len(self.y_train)

    def __repr__(self) -> str:
        return (f"UserDataset(path={str(self.path)!r}, train={self.train_size}, "
                f"test={len(self.y_test)}, sample_shape={self.sample_shape}, "
                f"classes={self.num_classes}, sha256={self.sha256[:12]}...)")


def _check_inputs(where: str, x: np.ndarray) -> None:
    if x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise InputError(f"{where}: dtype {x.dtype} is not numeric (expected integer or float pixels)")
    if x.ndim < 2:
        raise InputError(f"{where}: shape {list(x.shape)}: expected [N, *sample_shape] (at least 2 dimensions)")
    if x.shape[0] == 0:
        raise InputError(f"{where}: holds no samples")
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            first = np.unravel_index(int(np.argmax(bad)), x.shape)
            raise InputError(f"{where}: non-finite value {x[first].item()!r} at index {list(map(int, first))}")


def _check_labels(where: str, y: np.ndarray, n: int, x_name: str) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"{where}: shape {list(y.shape)}: expected [{n}], one label per row of {x_name}")
    if y.dtype.kind in "iu":
        labels = y.astype(np.int64)
    elif y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
            row = int(np.argmax(~np.isfinite(y) | (y != np.round(y))))
            raise InputError(f"{where}: label {y[row].item()!r} at row {row} is not an integer class")
        labels = y.astype(np.int64)
    else:
        raise InputError(f"{where}: dtype {y.dtype}: expected integer class labels 0..C-1")
    if labels.size and labels.min() < 0:
        row = int(np.argmin(labels))
        raise InputError(f"{where}: label {int(labels[row])} at row {row} is negative; expected 0..C-1")
    return labels


def check_arrays(arrays: dict[str, np.ndarray], where: str) -> tuple[dict[str, np.ndarray], int]:
    """Check the four arrays of a user dataset; ``where`` names the file in messages.

    Returns:
        The arrays (labels as int64) and C, the number of classes.

    Raises:
        InputError: an array missing; inputs not numeric, with NaN/inf, or of
            different sample shapes in train and test; labels not integral,
            negative, not one per sample, or test labels beyond the training
            classes. The message names ``where`` and the array.
    """
    missing = [name for name in NPZ_ARRAYS if name not in arrays]
    if missing:
        raise InputError(f"{where}: missing array(s) {', '.join(missing)}; an npz dataset holds "
                         f"{', '.join(NPZ_ARRAYS)} (has: {', '.join(sorted(arrays)) or 'none'})")
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        _check_inputs(f"{where}: x_{split}", x)
        out[f"x_{split}"] = x
        out[f"y_{split}"] = _check_labels(f"{where}: y_{split}", y, len(x), f"x_{split}")
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise InputError(f"{where}: x_test samples are {list(out['x_test'].shape[1:])}, x_train's "
                         f"{list(out['x_train'].shape[1:])}; both splits need one sample shape")
    num_classes = int(max(out["y_train"].max(), out["y_test"].max())) + 1
    train_classes = int(out["y_train"].max()) + 1
    if num_classes > train_classes:
        row = int(np.argmax(out["y_test"]))
        raise InputError(f"{where}: y_test label {int(out['y_test'][row])} at row {row} is out of "
                         f"range: y_train has classes 0..{train_classes - 1}")
    if num_classes < 2:
        raise InputError(f"{where}: y_train holds one class only (0); a classifier needs at least 2")
    return out, num_classes


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the npz at ``path`` (no pickles).

    Raises:
        InputError: the file is missing, not an npz, truncated, or holds an
            object array (which only pickling could read).
    """
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise InputError(f"{path}: is a single .npy array, expected an .npz with "
                             f"{', '.join(NPZ_ARRAYS)} (np.savez)")
        with archive:
            arrays = {}
            for name in archive.files:
                try:
                    arrays[name] = archive[name]
                except ValueError as exc:  # object arrays need allow_pickle
                    raise InputError(f"{path}: array {name}: cannot be read without pickle "
                                     f"({exc}); save numeric arrays") from None
            return arrays
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (data.npz)") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(f"{path}: cannot read as .npz ({type(exc).__name__}: {exc})") from None
    except ValueError as exc:  # np.load of a non-numpy file
        raise InputError(f"{path}: not an .npz file ({exc})") from None


_MEMO: dict[tuple[str, int, int], UserDataset] = {}


def load_npz(path: str | Path) -> UserDataset:
    """The checked user dataset at ``path`` (`check_arrays`), memoised by path,
    size and modification time (the last file only: a run's checks and its
    data stage then read and hash it once).

    Raises:
        InputError: as `read_npz` and `check_arrays`.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise InputError(f"{path}: no such file (data.npz)") from None
    stamp = (str(path.absolute()), st.st_size, st.st_mtime_ns)
    held = _MEMO.get(stamp)
    if held is not None:
        return held
    arrays, num_classes = check_arrays(read_npz(path), str(path))
    for array in arrays.values():
        array.flags.writeable = False
    dataset = UserDataset(path, sha256_file(path), num_classes=num_classes, **arrays)
    _MEMO.clear()
    _MEMO[stamp] = dataset
    return dataset


def float_rows(x: np.ndarray) -> np.ndarray:
    """Samples as float32 rows ``[N, prod(sample_shape)]``: uint8 divided by 255
    (as `fedsim.data.as_float`), any other dtype cast as it is."""
    flat = x.reshape(len(x), -1)
    if flat.dtype == np.uint8:
        return flat.astype(np.float32) / np.float32(255)
    return np.array(flat, dtype=np.float32)


__all__ = ["NPZ_ARRAYS", "UserDataset", "check_arrays", "float_rows", "load_npz", "read_npz"]
