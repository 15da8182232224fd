"""Datasets with checksums, the unlabeled/labeled split, and client partitions.

``load("mnist")`` gives a validated `Dataset` (cached under
``$FEDSIM_DATA``); ``split_unlabeled`` makes the server's unlabeled pool;
``make_partition`` / ``get_partitioner`` spread the labeled pool over the
clients; ``DataConfig`` is the scenario's ``data:`` section. A user's own
arrays (``data.npz``) are `load_npz`; a partition from a file (``scheme:
external``) is `read_partition`; `resolve_data_files` checks both when a run
starts.
"""


# Names are imported on first use (PEP 562), so that ``import fedsim.data.spec``
# (the config section) does not import the dataset readers; see docs/performance.md.
from fedsim import lazy

_EXPORTS: dict[str, str] = {
    "DATASET_NAMES": "registry", "DATASETS": "registry", "Dataset": "datasets",
    "DatasetSpec": "registry", "UnknownDatasetError": "registry", "as_float": "datasets",
    "cache_paths": "datasets", "fetch": "datasets", "info": "datasets", "load": "datasets",
    "validate_arrays": "checks",
    "read_idx": "idx", "write_idx": "idx",
    "PARTITIONERS": "partition", "DirichletPartitioner": "partition", "IidPartitioner": "partition",
    "Partitioner": "partition", "ShardPartitioner": "partition", "get_partitioner": "partition",
    "DataConfig": "spec", "DirichletPartition": "spec", "IidPartition": "spec",
    "PartitionSpec": "spec", "ShardsPartition": "spec", "make_partition": "spec",
    "Splits": "splits", "split_unlabeled": "splits",
    "ExternalPartition": "spec", "UserDataset": "user", "load_npz": "user",
    "read_partition": "external_partition", "resolve_data_files": "resolve",
}


__getattr__, __dir__ = lazy.exports(globals(), _EXPORTS)


__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "PARTITIONERS",
    "DataConfig",
    "Dataset",
    "DatasetSpec",
    "DirichletPartition",
    "DirichletPartitioner",
    "ExternalPartition",
    "IidPartition",
    "IidPartitioner",
    "PartitionSpec",
    "Partitioner",
    "ShardPartitioner",
    "ShardsPartition",
    "Splits",
    "UnknownDatasetError",
    "UserDataset",
    "as_float",
    "cache_paths",
    "fetch",
    "get_partitioner",
    "info",
    "load",
    "load_npz",
    "make_partition",
    "read_idx",
    "read_partition",
    "resolve_data_files",
    "split_unlabeled",
    "validate_arrays",
    "write_idx",
]
