"""The ``data:`` section of a scenario.

```yaml
data:
  dataset: mnist            # mnist | fashion-mnist
  npz: my_data.npz          # or: your own arrays (replaces dataset; fedsim.data.user)
  unlabeled: 20000          # server's unlabeled pool size (samples)
  partition:
    scheme: shards          # shards | iid | dirichlet | external
    num_clients: 100
    shard_size: 200         # shards only
    shards_per_client: 2    # shards only
    alpha: 0.5              # dirichlet only
    min_size: 10            # dirichlet only
    file: clients.json      # external only: client -> sample indices (.json or .csv)
    allow_overlap: false    # external only: may two clients hold one sample?
```

Defaults are the paper's (Sec. IV-A-1): MNIST, 20,000 unlabeled, shards of
200, 2 per client, 100 clients. ``partition`` is a union discriminated by
``scheme`` (``shards`` when omitted), so a key of another scheme, such as
``alpha`` under ``shards``, is an unknown-key error. The section also checks
that the labeled pool (training size minus ``unlabeled``) is large enough for
the partition, so a bad combination fails at validation, not mid-run.

Files (``npz``, ``partition.file``) are resolved against the scenario file's
folder, as ``system.clients.trace`` is, and checked when a run starts, before
any stage (`fedsim.data.resolve.resolve_data_files`): their content, not
their name, joins the data key. With ``npz`` the dataset's size is unknown
here, so the size checks above run then too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from fedsim.data.registry import DATASETS
from fedsim.schema import Section

if TYPE_CHECKING:  # the partitioners are imported when a partition is made, not to validate
    import numpy as np

DatasetName = Literal["mnist", "fashion-mnist"]

_StrictPositiveInt = Annotated[int, Field(strict=True, gt=0)]


class ShardsPartition(Section):
    """Sort by label, shards of ``shard_size``, ``shards_per_client`` per client."""

    scheme: Literal["shards"] = "shards"
    num_clients: _StrictPositiveInt = 100
    shard_size: _StrictPositiveInt = 200
    shards_per_client: _StrictPositiveInt = 2

    def min_samples(self) -> int:
        """Samples the labeled pool must hold."""
        return self.num_clients * self.shards_per_client * self.shard_size


class IidPartition(Section):
    """Uniformly random, near-equal client sizes."""

    scheme: Literal["iid"] = "iid"
    num_clients: _StrictPositiveInt = 100

    def min_samples(self) -> int:
        return self.num_clients


class DirichletPartition(Section):
    """Per-class client proportions ~ Dir(``alpha``); every client >= ``min_size``."""

    scheme: Literal["dirichlet"] = "dirichlet"
    num_clients: _StrictPositiveInt = 100
    alpha: float = Field(0.5, strict=True, gt=0, allow_inf_nan=False)
    min_size: int = Field(10, strict=True, ge=0)

    def min_samples(self) -> int:
        return self.num_clients * self.min_size


class ExternalPartition(Section):
    """Client -> sample indices read from ``file`` (`fedsim.data.external_partition`).

    ``num_clients`` comes from the file: left out, it is filled in when the
    run starts; given, the file must hold exactly that many clients.
    """

    scheme: Literal["external"] = "external"
    file: str = Field(min_length=1)
    allow_overlap: bool = Field(False, strict=True)
    num_clients: _StrictPositiveInt | None = None

    def min_samples(self) -> int:
        return self.num_clients or 1


def _scheme_of(value: Any) -> str | None:
    """The union's tag: ``scheme`` of a dict (``shards`` if absent) or a model."""
    if isinstance(value, dict):
        return value.get("scheme", "shards")
    return getattr(value, "scheme", None)


PartitionSpec = Annotated[
    Annotated[ShardsPartition, Tag("shards")]
    | Annotated[IidPartition, Tag("iid")]
    | Annotated[DirichletPartition, Tag("dirichlet")]
    | Annotated[ExternalPartition, Tag("external")],
    Discriminator(
        _scheme_of,
        custom_error_type="invalid_scheme",
        custom_error_message="partition scheme must be one of: shards, iid, dirichlet, external",
    ),
]


class DataConfig(Section):
    """The ``data:`` section: dataset (or ``npz``), unlabeled pool size, partition."""

    dataset: DatasetName = "mnist"
    npz: str | None = Field(None, min_length=1)
    unlabeled: int = Field(20_000, strict=True, ge=0)
    partition: PartitionSpec = ShardsPartition()

    @property
    def source_name(self) -> str:
        """The dataset in messages: its name, or ``npz:<path>``."""
        return self.dataset if self.npz is None else f"npz:{self.npz}"

    @model_validator(mode="after")
    def _fits_the_dataset(self) -> DataConfig:
        if self.npz is not None:
            if "dataset" in self.model_fields_set:
                raise ValueError(f"give dataset ({self.dataset!r}) or npz ({self.npz!r}), not both")
            return self  # the file's size is known when the run starts (fedsim.data.resolve)
        train_size = DATASETS[self.dataset].train_size
        if self.unlabeled > train_size:
            raise ValueError(
                f"unlabeled: {self.unlabeled} exceeds the {train_size} training images of "
                f"{self.dataset}"
            )
        labeled = train_size - self.unlabeled
        needed = self.partition.min_samples()
        if needed > labeled:
            raise ValueError(
                f"partition: scheme {self.partition.scheme} needs {needed} labeled samples "
                f"but {self.dataset} has {train_size} - unlabeled {self.unlabeled} = {labeled}"
            )
        return self


def make_partition(
    spec: ShardsPartition | IidPartition | DirichletPartition | ExternalPartition,
    labels: np.ndarray,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Partition ``labels`` (the labeled pool) as ``spec`` says, drawing from ``rng``
    (e.g. ``fedsim.seeding.rng(seed, "partition")``).

    An ``external`` partition is read from its file (`fedsim.data.external_partition`;
    give ``spec`` as resolved by `fedsim.data.resolve.resolve_data_files`, so a
    relative file is found); ``rng`` is unused then.

    Returns:
        Per client, sorted int64 indices into ``labels``.

    Raises:
        InputError: a bad external partition file.
    """
    if isinstance(spec, ExternalPartition):
        from fedsim.data.external_partition import read_partition

        return read_partition(spec.file, len(labels), allow_overlap=spec.allow_overlap)
    from fedsim.data.partition import get_partitioner

    settings = spec.model_dump(exclude={"scheme"})
    return get_partitioner(spec.scheme, rng=rng, **settings)(labels)
