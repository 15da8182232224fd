"""The data section's files: resolved, checked, and keyed by their bytes.

A scenario names its user data (``data.npz``) and an external partition
(``data.partition.file``) by path, relative to the scenario file's folder as
``system.clients.trace`` is. `resolve_data_files`, called when a run starts
(`fedsim.pipeline.runner.compute`), before any stage:

* makes both paths absolute (so the data stage, which has no folder, finds them);
* loads and checks the npz (`fedsim.data.user.load_npz`) and the sizes that
  validation could not check without it (``unlabeled``, the partition's needs);
* reads and checks the partition file (`fedsim.data.external_partition`) and
  fills in ``num_clients`` from it (or checks a given one);
* checks that the model fits the data (`check_model_fits`).

`keyed_section` is the data section as the data key holds it: each file's
SHA-256 in place of its path, so editing a file re-runs what depends on the
data and moving it does not. A scenario without files keys as before.

numpy only: no torch (tests/test_import_light.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsim.errors import InputError
from fedsim.store import sha256_file

if TYPE_CHECKING:
    from fedsim.config import Scenario
    from fedsim.data.spec import DataConfig
    from fedsim.data.user import UserDataset
    from fedsim.learn.spec import ModelConfig

#: LeNet-300-100's input values (28x28 images) and classes: the one model
#: whose input is fixed; any other takes samples of any shape
#: (`fedsim.learn.zoo.resolve` checks it against the data's sample shape).
REFERENCE_SAMPLE_SIZE = 784
REFERENCE_CLASSES = 10


def _absolute(path: str, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p.absolute()


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str) -> str:
    """``sha256:<hex>`` of the file at ``path``, or the path itself where it
    does not exist (as `fedsim.pipeline.keys.trace_sha256` does). Memoised by
    path, size and modification time: a run builds many keys from one file."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return path
    stamp = (str(p.absolute()), st.st_size, st.st_mtime_ns)
    if stamp not in _DIGESTS:
        _DIGESTS[stamp] = f"sha256:{sha256_file(p)}"
    return _DIGESTS[stamp]


def keyed_section(data: DataConfig) -> Any:
    """``config.section_key(data)`` with ``npz`` and ``partition.file`` replaced
    by their files' SHA-256 and an external partition's ``num_clients`` left
    out (the file fixes it). Equal to ``section_key`` without files."""
    from fedsim.config import section_key

    key = section_key(data)
    if data.npz is not None:
        key["npz"] = file_digest(data.npz)
    if data.partition.scheme == "external":
        part = key["partition"]
        part["file"] = file_digest(data.partition.file)
        part.pop("num_clients", None)
    return key


def train_size(data: DataConfig) -> int:
    """Training samples of the dataset (the npz must be resolved, or absolute)."""
    if data.npz is not None:
        from fedsim.data.user import load_npz

        return load_npz(data.npz).train_size
    from fedsim.data.registry import DATASETS

    return DATASETS[data.dataset].train_size


def data_sample(data: DataConfig) -> tuple[tuple[int, ...], int, str]:
    """``(sample shape, classes, name in messages)`` of the dataset:
    ``((28, 28), 10, "data.dataset 'mnist'")`` for MNIST and Fashion-MNIST;
    the npz's otherwise (it must be resolved): e.g. ``((3, 32, 32), 10,
    "data.npz '/path/d.npz'")``."""
    if data.npz is None:
        from fedsim.data.registry import IMAGE_SHAPE

        return tuple(IMAGE_SHAPE), REFERENCE_CLASSES, f"data.dataset {data.dataset!r}"
    from fedsim.data.user import load_npz

    dataset = load_npz(data.npz)
    return dataset.sample_shape, dataset.num_classes, f"data.npz {str(dataset.path)!r}"


def data_shape(data: DataConfig) -> tuple[int, int]:
    """``(values per sample, classes)`` of the dataset (`data_sample`): (784,
    10) for MNIST and Fashion-MNIST; the npz's otherwise (it must be resolved)."""
    shape, classes, _ = data_sample(data)
    return math.prod(shape), classes


def check_model_fits(model: ModelConfig, dataset: UserDataset) -> None:
    """Refuse a model that cannot take ``dataset``'s samples or give its classes,
    as far as can be told without building it (no torch): LeNet-300-100 takes
    784 values and gives 10 classes; a ``model.input_shape`` must hold as many
    values as a sample. Samples of any shape are taken otherwise; the model
    itself is checked on them, and its output size against the classes, when
    it is built at the run's start (`fedsim.learn.zoo.resolve`, one forward pass).

    Raises:
        InputError: naming ``model`` and ``data.npz`` with both shapes.
    """
    where = f"model {model.name!r} and data.npz {str(dataset.path)!r}"
    size, classes = dataset.sample_size, dataset.num_classes
    shape = "x".join(map(str, dataset.sample_shape))
    if model.is_reference and (size, classes) != (REFERENCE_SAMPLE_SIZE, REFERENCE_CLASSES):
        raise InputError(f"{where} do not fit: the model takes {REFERENCE_SAMPLE_SIZE} inputs and gives "
                         f"{REFERENCE_CLASSES} classes; the data has samples of {shape} = {size} values "
                         f"and {classes} classes (use a model.factory for other data)")
    if model.input_shape is not None and math.prod(model.input_shape) != size:
        raise InputError(f"{where} do not fit: model.input_shape {list(model.input_shape)} holds "
                         f"{math.prod(model.input_shape)} values; the data's samples {shape} hold {size}")


def resolve_data_files(scenario: Scenario, base_dir: Path | None) -> Scenario:
    """``scenario`` with its data files absolute, checked, and an external
    partition's ``num_clients`` filled in (the same scenario when it has no
    files). See the module docstring.

    Raises:
        InputError: a bad npz or partition file, ``data.unlabeled`` larger than
            the npz's training set, a labeled pool too small for the partition,
            ``data.partition.num_clients`` other than the file's, or a model
            that does not fit the data; each names the file or key.
    """
    data = scenario.data
    if data.npz is None and data.partition.scheme != "external":
        return scenario
    update: dict[str, Any] = {}
    if data.npz is not None:
        from fedsim.data.user import load_npz

        npz = _absolute(data.npz, base_dir)
        dataset = load_npz(npz)
        check_model_fits(scenario.model, dataset)
        update["npz"] = str(npz)
        n_train = dataset.train_size
        if data.unlabeled > n_train:
            raise InputError(f"data.unlabeled: {data.unlabeled} exceeds the {n_train} samples of "
                             f"x_train in {npz}")
    else:
        n_train = train_size(data)
    labeled = n_train - data.unlabeled
    part = data.partition
    if part.scheme == "external":
        from fedsim.data.external_partition import read_partition

        path = _absolute(part.file, base_dir)
        parts = read_partition(path, labeled, allow_overlap=part.allow_overlap)
        if part.num_clients is not None and part.num_clients != len(parts):
            raise InputError(f"data.partition.num_clients: {part.num_clients}, but {path} holds "
                             f"{len(parts)} clients (leave num_clients out to take the file's)")
        update["partition"] = part.model_copy(update={"file": str(path), "num_clients": len(parts)})
    elif part.min_samples() > labeled:
        raise InputError(f"data.partition: scheme {part.scheme} needs {part.min_samples()} labeled "
                         f"samples but {data.source_name} has {n_train} - unlabeled "
                         f"{data.unlabeled} = {labeled}")
    return scenario.model_copy(update={"data": data.model_copy(update=update)})


__all__ = ["REFERENCE_CLASSES", "REFERENCE_SAMPLE_SIZE", "check_model_fits", "data_sample", "data_shape",
           "file_digest", "keyed_section", "resolve_data_files", "train_size"]

