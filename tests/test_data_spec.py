"""The ``data:`` config section: paper defaults, strictness, make_partition."""

from __future__ import annotations

import typing

import numpy as np
import pydantic
import pytest

from fedsim.data import DATASETS, DataConfig, get_partitioner, make_partition
from fedsim.data.spec import DatasetName, DirichletPartition, IidPartition, ShardsPartition
from fedsim.seeding import rng


def test_defaults_are_the_paper():
    config = DataConfig()
    assert config.dataset == "mnist" and config.unlabeled == 20_000
    assert config.partition == ShardsPartition(num_clients=100, shard_size=200, shards_per_client=2)
    assert config.model_dump() == {
        "dataset": "mnist",
        "npz": None,  # a user dataset instead (tests/test_data_user.py)
        "unlabeled": 20000,
        "partition": {
            "scheme": "shards",
            "num_clients": 100,
            "shard_size": 200,
            "shards_per_client": 2,
        },
    }


def test_dataset_choices_match_the_registry():
    assert set(typing.get_args(DatasetName)) == set(DATASETS)


def test_scheme_selects_the_model_and_defaults_to_shards():
    assert isinstance(DataConfig(partition={"scheme": "iid"}).partition, IidPartition)
    config = DataConfig(partition={"scheme": "dirichlet", "alpha": 1, "min_size": 0})
    assert config.partition == DirichletPartition(alpha=1.0, min_size=0)
    assert DataConfig(partition={"num_clients": 50}).partition == ShardsPartition(num_clients=50)
    # round trip through the dump (the resolved scenario)
    assert DataConfig.model_validate(config.model_dump()) == config


def errors_of(**data) -> list[dict]:
    with pytest.raises(pydantic.ValidationError) as err:
        DataConfig(**data)
    return err.value.errors()


def test_key_of_another_scheme_is_an_extra_key():
    (error,) = errors_of(partition={"scheme": "shards", "alpha": 0.5})
    assert error["type"] == "extra_forbidden"
    assert error["loc"] == ("partition", "shards", "alpha")
    (error,) = errors_of(partition={"scheme": "iid", "shard_size": 10})
    assert error["loc"] == ("partition", "iid", "shard_size")


def test_unknown_scheme_and_dataset():
    (error,) = errors_of(partition={"scheme": "pathological"})
    assert error["loc"] == ("partition",)
    assert "shards, iid, dirichlet" in error["msg"]
    (error,) = errors_of(dataset="cifar10")
    assert error["loc"] == ("dataset",)


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"unlabeled": -1}, ("unlabeled",)),
        ({"unlabeled": 2.5}, ("unlabeled",)),
        ({"unlabeled": True}, ("unlabeled",)),
        ({"partition": {"num_clients": 0}}, ("partition", "shards", "num_clients")),
        ({"partition": {"shard_size": "200"}}, ("partition", "shards", "shard_size")),
        ({"partition": {"scheme": "dirichlet", "alpha": 0}}, ("partition", "dirichlet", "alpha")),
        (
            {"partition": {"scheme": "dirichlet", "alpha": float("nan")}},
            ("partition", "dirichlet", "alpha"),
        ),
        (
            {"partition": {"scheme": "dirichlet", "min_size": -1}},
            ("partition", "dirichlet", "min_size"),
        ),
    ],
)
def test_ranges_and_kinds(data, loc):
    (error,) = errors_of(**data)
    assert error["loc"] == loc


def test_labeled_pool_must_fit_the_partition():
    (error,) = errors_of(unlabeled=30_000)  # 30,000 labeled < 100 * 2 * 200
    assert (
        "needs 40000 labeled samples but mnist has 60000 - unlabeled 30000 = 30000" in error["msg"]
    )
    (error,) = errors_of(unlabeled=60_001)
    assert "unlabeled: 60001 exceeds the 60000 training images of mnist" in error["msg"]
    assert DataConfig(unlabeled=30_000, partition={"scheme": "iid"}).unlabeled == 30_000


def test_config_is_frozen():
    with pytest.raises(pydantic.ValidationError):
        DataConfig().unlabeled = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "partition",
    [
        {"scheme": "shards", "num_clients": 10, "shard_size": 20},
        {"scheme": "iid", "num_clients": 7},
        {"scheme": "dirichlet", "num_clients": 5, "alpha": 0.3, "min_size": 3},
    ],
)
def test_make_partition_is_the_registered_partitioner(partition):
    spec = DataConfig(partition=partition).partition
    labels = np.repeat(np.arange(10), 60)
    got = make_partition(spec, labels, rng(7, "partition"))
    settings = {k: v for k, v in partition.items() if k != "scheme"}
    want = get_partitioner(partition["scheme"], rng=rng(7, "partition"), **settings)(labels)
    assert len(got) == len(want) == partition["num_clients"]
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
