"""The content checks: are these four arrays exactly the published dataset?

`validate_arrays` compares arrays, from any source or the cache, with a
dataset's registry entry (`fedsim.data.registry.DatasetSpec`): names, dtype,
shapes, label values and per-class counts, and the SHA-256 of each array's
uncompressed IDX encoding (`fedsim.data.idx.idx_sha256`). `fedsim.data.datasets`
runs them on every load and fetch.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedsim.data.idx import idx_sha256
from fedsim.data.registry import IMAGE_SHAPE, DatasetSpec
from fedsim.data.sources import ARRAY_NAMES
from fedsim.errors import DataError


def label_counts(labels: np.ndarray, num_classes: int) -> list[int]:
    """Samples per class ``0..num_classes-1``."""
    return np.bincount(labels, minlength=num_classes).tolist()


def validate_arrays(spec: DatasetSpec, arrays: Mapping[str, np.ndarray], origin: str) -> None:
    """Check that ``arrays`` is exactly the published dataset ``spec``.

    Checks, in order: the four names; dtype uint8; shapes ``[N, 28, 28]`` and
    ``[N]`` with the known N; label values and per-class counts; the SHA-256 of
    each array's IDX encoding.

    Raises:
        DataError: one line naming ``origin``, the array, and expected vs found.
    """
    if set(arrays) != set(ARRAY_NAMES):
        raise DataError(f"{origin}: expected arrays {list(ARRAY_NAMES)}, found {sorted(arrays)}")
    sizes = {"train": spec.train_size, "test": spec.test_size}
    counts = {"train": spec.train_label_counts, "test": spec.test_label_counts}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        for what, array, shape in (
            (f"{split}_images", images, (sizes[split], *IMAGE_SHAPE)),
            (f"{split}_labels", labels, (sizes[split],)),
        ):
            if array.dtype != np.uint8 or array.shape != shape:
                raise DataError(
                    f"{origin}: {what} is {array.dtype} {list(array.shape)}; "
                    f"expected uint8 {list(shape)} for {spec.name}"
                )
        if labels.max() >= spec.num_classes:
            raise DataError(
                f"{origin}: {split}_labels has label {labels.max()}; expected 0..{spec.num_classes - 1}"
            )
        found = label_counts(labels, spec.num_classes)
        if found != list(counts[split]):
            raise DataError(
                f"{origin}: {split}_labels per-class counts {found} differ from "
                f"{spec.name}'s {list(counts[split])}"
            )
    for name in ARRAY_NAMES:
        digest = idx_sha256(arrays[name])
        if digest != spec.idx_sha256[name]:
            raise DataError(
                f"{origin}: {name} content SHA-256 {digest} differs from the published "
                f"{spec.name} file's {spec.idx_sha256[name]}"
            )


__all__ = ["label_counts", "validate_arrays"]
