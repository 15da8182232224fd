"""Datasets with checksums, the unlabeled/labeled split, and client partitions.

``load("mnist")`` gives a validated `Dataset` (cached under
``$FEDSIM_DATA``); ``split_unlabeled`` makes the server's unlabeled pool;
``make_partition`` / ``get_partitioner`` spread the labeled pool over the
clients; ``DataConfig`` is the scenario's ``data:`` section.
"""

from fedsim.data.datasets import (
    DATASET_NAMES,
    DATASETS,
    Dataset,
    DatasetSpec,
    UnknownDatasetError,
    as_float,
    cache_paths,
    fetch,
    info,
    load,
    validate_arrays,
)
from fedsim.data.idx import read_idx, write_idx
from fedsim.data.partition import (
    PARTITIONERS,
    DirichletPartitioner,
    IidPartitioner,
    Partitioner,
    ShardPartitioner,
    get_partitioner,
)
from fedsim.data.spec import (
    DataConfig,
    DirichletPartition,
    IidPartition,
    PartitionSpec,
    ShardsPartition,
    make_partition,
)
from fedsim.data.splits import Splits, split_unlabeled

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "PARTITIONERS",
    "DataConfig",
    "Dataset",
    "DatasetSpec",
    "DirichletPartition",
    "DirichletPartitioner",
    "IidPartition",
    "IidPartitioner",
    "PartitionSpec",
    "Partitioner",
    "ShardPartitioner",
    "ShardsPartition",
    "Splits",
    "UnknownDatasetError",
    "as_float",
    "cache_paths",
    "fetch",
    "get_partitioner",
    "info",
    "load",
    "make_partition",
    "read_idx",
    "split_unlabeled",
    "validate_arrays",
    "write_idx",
]
