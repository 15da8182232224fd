"""One end-to-end check on real MNIST (slow; the data is the session's MNIST, see conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim import seeding
from fedsim.data import load
from fedsim.learn import FLConfig, MethodConfig, PretrainConfig, build, init_dae, train
from fedsim.learn.federated import ClientData
from fedsim.learn.pretrain import pretrain

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mnist(mnist_root):
    return load("mnist", root=mnist_root)


def test_iid_fedavg_learns_mnist(mnist):
    """10 IID clients x 300 samples, 3 rounds: the global model must beat 80 % (it reaches 84.9 %)."""
    gen = seeding.rng(0, "test-subset")
    rows = gen.permutation(mnist.train_images.shape[0])[:3000]
    parts = np.array_split(np.arange(3000), 10)
    clients = ClientData.from_arrays(mnist.train_images[rows], mnist.train_labels[rows], parts)
    ticket = pretrain(init_dae("glorot_uniform", 0), mnist.train_images[:10], PretrainConfig(), seed=0, iterations=0)
    start = build(MethodConfig(kind="original"), ticket, seed=0)
    test = (mnist.test_images[:2000], mnist.test_labels[:2000])
    trace = train(start.params, start.mask, clients, test, FLConfig(), seed=0, rounds=3)
    accuracy = trace.accuracy
    assert accuracy[-1] > 0.80
    assert accuracy[-1] > accuracy[0]
