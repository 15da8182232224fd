"""Splits and partitions: hand-checked cases and invariants over varied inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedsim.data.partition import (
    PARTITIONERS,
    DirichletPartitioner,
    IidPartitioner,
    ShardPartitioner,
    get_partitioner,
)
from fedsim.data.splits import Splits, split_unlabeled
from fedsim.seeding import rng


def assert_disjoint_sorted_int64(parts: list[np.ndarray], n: int) -> np.ndarray:
    for part in parts:
        assert part.dtype == np.int64 and part.ndim == 1
        assert np.all(np.diff(part) > 0)  # sorted, no repeats within a client
        assert part.size == 0 or (part[0] >= 0 and part[-1] < n)
    union = np.concatenate([np.empty(0, np.int64), *parts])
    assert np.unique(union).size == union.size  # no sample in two clients
    return union


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------- splits


def test_paper_split_sizes():
    splits = split_unlabeled(60_000, 20_000, rng(0, "split"))
    assert splits.n_unlabeled == 20_000 and splits.n_labeled == 40_000
    both = np.concatenate([splits.unlabeled_idx, splits.labeled_idx])
    np.testing.assert_array_equal(np.sort(both), np.arange(60_000))


@settings(max_examples=60, deadline=None)
@given(n_train=st.integers(0, 500), frac=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_split_invariants(n_train, frac, seed):
    n_unlabeled = round(frac * n_train)
    splits = split_unlabeled(n_train, n_unlabeled, rng(seed, "split"))
    assert splits.unlabeled_idx.dtype == np.int64 and splits.labeled_idx.dtype == np.int64
    assert splits.n_unlabeled == n_unlabeled and splits.n_labeled == n_train - n_unlabeled
    assert np.all(np.diff(splits.unlabeled_idx) > 0) and np.all(np.diff(splits.labeled_idx) > 0)
    union = np.union1d(splits.unlabeled_idx, splits.labeled_idx)
    np.testing.assert_array_equal(union, np.arange(n_train))
    again = split_unlabeled(n_train, n_unlabeled, rng(seed, "split"))
    np.testing.assert_array_equal(again.unlabeled_idx, splits.unlabeled_idx)


def test_split_depends_on_the_seed():
    a = split_unlabeled(1000, 300, rng(1, "split")).unlabeled_idx
    b = split_unlabeled(1000, 300, rng(2, "split")).unlabeled_idx
    assert not np.array_equal(a, b)


@pytest.mark.parametrize(
    ("n_train", "n_unlabeled", "message"),
    [
        (100, 101, r"n_unlabeled must be in \[0, n_train=100\], got 101"),
        (100, -1, r"n_unlabeled must be in \[0, n_train=100\], got -1"),
        (-5, 0, "n_train must be >= 0, got -5"),
        (100, 2.5, "n_unlabeled must be an integer, got 2.5"),
        (100, True, "n_unlabeled must be an integer, got True"),
    ],
)
def test_split_validation(n_train, n_unlabeled, message):
    with pytest.raises(ValueError, match=message):
        split_unlabeled(n_train, n_unlabeled, rng(0, "split"))


def test_splits_refuse_overlap_and_unsorted():
    with pytest.raises(ValueError, match="overlap"):
        Splits(np.array([1, 2], np.int64), np.array([2, 3], np.int64))
    with pytest.raises(ValueError, match="strictly increasing"):
        Splits(np.array([2, 1], np.int64), np.array([3], np.int64))
    with pytest.raises(ValueError, match="int64"):
        Splits(np.array([1], np.int32), np.array([3], np.int64))


# ---------------------------------------------------------------------- shards


def test_shards_by_hand():
    # labels sorted by a stable sort: [1,3,5 | 0,2,4] -> shards of 3: {1,3,5} (label 0), {0,2,4} (label 1)
    labels = np.array([1, 0, 1, 0, 1, 0])
    parts = ShardPartitioner(num_clients=2, shard_size=3, shards_per_client=1, rng=rng(0, "p"))(
        labels
    )
    assert sorted(p.tolist() for p in parts) == [[0, 2, 4], [1, 3, 5]]
    assert {frozenset(labels[p].tolist()) for p in parts} == {frozenset({0}), frozenset({1})}


def test_shards_paper_numbers():
    # 40,000 labeled samples, 10 classes of 4,000: shards of 200 never straddle two
    # classes, so each of the 100 clients holds 400 samples of at most 2 classes.
    labels = rng(0, "labels").permutation(np.repeat(np.arange(10), 4000))
    parts = ShardPartitioner(rng=rng(0, "partition"))(labels)
    assert len(parts) == 100
    union = assert_disjoint_sorted_int64(parts, labels.size)
    assert union.size == 40_000  # every sample used
    assert all(p.size == 400 for p in parts)
    assert max(np.unique(labels[p]).size for p in parts) <= 2
    assert sum(np.unique(labels[p]).size == 2 for p in parts) > 50  # most clients: two classes


@st.composite
def shard_cases(draw):
    shard_size = draw(st.integers(1, 6))
    num_classes = draw(st.integers(1, 5))
    class_sizes = [shard_size * draw(st.integers(1, 4)) for _ in range(num_classes)]
    extra = draw(st.integers(0, shard_size - 1)) if shard_size > 1 else 0  # a partial last shard
    num_shards = sum(class_sizes) // shard_size
    shards_per_client = draw(st.integers(1, num_shards))
    num_clients = draw(st.integers(1, num_shards // shards_per_client))
    labels = np.repeat(np.arange(num_classes), class_sizes)
    labels = np.concatenate([labels, np.full(extra, num_classes)])
    labels = draw(st.permutations(labels.tolist()))
    return np.array(labels), num_clients, shard_size, shards_per_client, draw(st.integers(0, 99))


@settings(max_examples=80, deadline=None)
@given(shard_cases())
def test_shard_invariants(case):
    labels, num_clients, shard_size, shards_per_client, seed = case
    make = lambda s: ShardPartitioner(  # noqa: E731
        num_clients=num_clients, shard_size=shard_size, shards_per_client=shards_per_client,
        rng=rng(s, "partition"),
    )  # fmt: skip
    parts = make(seed)(labels)
    assert len(parts) == num_clients
    union = assert_disjoint_sorted_int64(parts, labels.size)
    assert all(p.size == shards_per_client * shard_size for p in parts)
    assert union.size == num_clients * shards_per_client * shard_size
    # shard_size divides every class size: each shard holds one label
    assert all(np.unique(labels[p]).size <= shards_per_client for p in parts)
    assert same(make(seed)(labels), parts)


def test_shards_depend_on_the_seed():
    labels = np.repeat(np.arange(10), 100)
    a = ShardPartitioner(num_clients=10, shard_size=50, rng=rng(1, "p"))(labels)
    b = ShardPartitioner(num_clients=10, shard_size=50, rng=rng(2, "p"))(labels)
    assert not same(a, b)


def test_shards_too_few_samples_quotes_the_numbers():
    with pytest.raises(
        ValueError,
        match=r"num_clients \* shards_per_client \* shard_size = 100 \* 2 \* 200 = 40000 samples, "
        r"but the labeled pool has only 39999",
    ):
        ShardPartitioner(rng=rng(0, "p"))(np.zeros(39_999, np.int64))


def test_shards_leftovers_are_unused():
    labels = np.repeat(np.arange(3), [7, 7, 7])  # 21 samples, shards of 5 -> 4 shards, 1 left over
    parts = ShardPartitioner(num_clients=3, shard_size=5, shards_per_client=1, rng=rng(0, "p"))(
        labels
    )
    union = assert_disjoint_sorted_int64(parts, labels.size)
    assert union.size == 15
    assert 20 not in union  # the incomplete last shard (the tail of the highest label)


# ------------------------------------------------------------------------- iid


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    num_clients=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_iid_invariants(n, num_clients, seed):
    if num_clients > n:
        with pytest.raises(ValueError, match=f"need {num_clients} samples"):
            IidPartitioner(num_clients=num_clients, rng=rng(seed, "p"))(np.zeros(n, np.int64))
        return
    labels = np.arange(n) % 7
    parts = IidPartitioner(num_clients=num_clients, rng=rng(seed, "p"))(labels)
    union = assert_disjoint_sorted_int64(parts, n)
    np.testing.assert_array_equal(np.sort(union), np.arange(n))  # complete
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert same(IidPartitioner(num_clients=num_clients, rng=rng(seed, "p"))(labels), parts)


def test_iid_depends_on_the_seed():
    labels = np.zeros(1000, np.int64)
    a = IidPartitioner(num_clients=10, rng=rng(1, "p"))(labels)
    b = IidPartitioner(num_clients=10, rng=rng(2, "p"))(labels)
    assert not same(a, b)


# ------------------------------------------------------------------- dirichlet


@settings(max_examples=40, deadline=None)
@given(
    num_classes=st.integers(1, 6),
    per_class=st.integers(20, 80),
    num_clients=st.integers(1, 8),
    alpha=st.floats(0.5, 100),
    min_size=st.integers(0, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_invariants(num_classes, per_class, num_clients, alpha, min_size, seed):
    labels = np.repeat(np.arange(num_classes), per_class)
    assume(4 * num_clients * min_size <= labels.size)  # feasible within max_tries
    make = lambda: DirichletPartitioner(  # noqa: E731
        num_clients=num_clients, alpha=alpha, min_size=min_size, rng=rng(seed, "p")
    )
    parts = make()(labels)
    assert len(parts) == num_clients
    union = assert_disjoint_sorted_int64(parts, labels.size)
    np.testing.assert_array_equal(np.sort(union), np.arange(labels.size))  # every sample placed
    assert min(p.size for p in parts) >= min_size
    assert same(make()(labels), parts)


def test_dirichlet_small_alpha_is_label_skewed():
    labels = np.repeat(np.arange(10), 500)
    skewed = DirichletPartitioner(num_clients=10, alpha=0.05, min_size=1, rng=rng(0, "p"))(labels)
    uniform = DirichletPartitioner(num_clients=10, alpha=1000, min_size=1, rng=rng(0, "p"))(labels)

    def mean_classes(parts):
        # classes holding >= 5% of a client's samples
        return np.mean(
            [(np.bincount(labels[p], minlength=10) >= 0.05 * p.size).sum() for p in parts]
        )

    assert mean_classes(skewed) < 4 < 9.5 < mean_classes(uniform)


def test_dirichlet_min_size_gives_up_clearly():
    labels = np.repeat(np.arange(2), 50)  # 100 samples, 10 clients, min 10 each: only exact splits
    with pytest.raises(ValueError, match=r"min_size=10 samples in max_tries=20 draws"):
        DirichletPartitioner(num_clients=10, alpha=0.1, min_size=10, max_tries=20, rng=rng(0, "p"))(
            labels
        )
    with pytest.raises(ValueError, match="need 110 samples, but the labeled pool has 100"):
        DirichletPartitioner(num_clients=11, min_size=10, rng=rng(0, "p"))(labels)


def test_dirichlet_depends_on_the_seed():
    labels = np.repeat(np.arange(5), 100)
    a = DirichletPartitioner(num_clients=5, rng=rng(1, "p"))(labels)
    b = DirichletPartitioner(num_clients=5, rng=rng(2, "p"))(labels)
    assert not same(a, b)


# -------------------------------------------------------------------- registry


def test_registry():
    assert set(PARTITIONERS) == {"shards", "iid", "dirichlet"}
    part = get_partitioner("iid", num_clients=3, rng=rng(0, "p"))
    assert isinstance(part, IidPartitioner)
    with pytest.raises(
        ValueError, match="unknown partition scheme 'pathological'; choices: dirichlet, iid, shards"
    ):
        get_partitioner("pathological", rng=rng(0, "p"))
    with pytest.raises(TypeError):
        get_partitioner("iid", alpha=0.5, rng=rng(0, "p"))
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        get_partitioner("iid", rng=0)


@pytest.mark.parametrize(
    ("scheme", "settings_", "message"),
    [
        ("shards", {"shard_size": 0}, "shards: shard_size must be an integer >= 1, got 0"),
        ("shards", {"num_clients": 2.0}, "shards: num_clients must be an integer >= 1, got 2.0"),
        ("iid", {"num_clients": True}, "iid: num_clients must be an integer >= 1, got True"),
        ("dirichlet", {"alpha": 0}, "dirichlet: alpha must be a finite number > 0, got 0"),
        ("dirichlet", {"alpha": float("inf")}, "alpha must be a finite number > 0, got inf"),
        ("dirichlet", {"min_size": -1}, "min_size must be an integer >= 0, got -1"),
    ],
)
def test_bad_settings(scheme, settings_, message):
    with pytest.raises(ValueError, match=message):
        get_partitioner(scheme, rng=rng(0, "p"), **settings_)


@pytest.mark.parametrize("scheme", ["shards", "iid", "dirichlet"])
def test_labels_must_be_1d_integers(scheme):
    part = get_partitioner(scheme, num_clients=1, rng=rng(0, "p"))
    with pytest.raises(ValueError, match="labels must be a 1-D integer array"):
        part(np.zeros((10, 2), np.int64))
    with pytest.raises(ValueError, match="labels must be a 1-D integer array"):
        part(np.zeros(10, np.float32))
