"""The ``data:`` section of a scenario.

```yaml
data:
  dataset: mnist            # mnist | fashion-mnist
  unlabeled: 20000          # server's unlabeled pool size (samples)
  partition:
    scheme: shards          # shards | iid | dirichlet
    num_clients: 100
    shard_size: 200         # shards only
    shards_per_client: 2    # shards only
    alpha: 0.5              # dirichlet only
    min_size: 10            # dirichlet only
```

Defaults are the paper's (Sec. IV-A-1): MNIST, 20,000 unlabeled, shards of
200, 2 per client, 100 clients. ``partition`` is a union discriminated by
``scheme`` (``shards`` when omitted), so a key of another scheme, such as
``alpha`` under ``shards``, is an unknown-key error. The section also checks
that the labeled pool (training size minus ``unlabeled``) is large enough for
the partition, so a bad combination fails at validation, not mid-run.
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


def _scheme_of(value: Any) -> str | None:
    """The union's tag: ``scheme`` of a dict (``shards`` if absent) or a model."""
    if isinstance(value, dict):
        return value.get("scheme", "shards")
    return getattr(value, "scheme", None)


PartitionSpec = Annotated[
    Annotated[ShardsPartition, Tag("shards")]
    | Annotated[IidPartition, Tag("iid")]
    | Annotated[DirichletPartition, Tag("dirichlet")],
    Discriminator(
        _scheme_of,
        custom_error_type="invalid_scheme",
        custom_error_message="partition scheme must be one of: shards, iid, dirichlet",
    ),
]


class DataConfig(Section):
    """The ``data:`` section: dataset, unlabeled pool size, partition."""

    dataset: DatasetName = "mnist"
    unlabeled: int = Field(20_000, strict=True, ge=0)
    partition: PartitionSpec = ShardsPartition()

    @model_validator(mode="after")
    def _fits_the_dataset(self) -> DataConfig:
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
    spec: ShardsPartition | IidPartition | DirichletPartition,
    labels: np.ndarray,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Partition ``labels`` (the labeled pool) as ``spec`` says, drawing from ``rng``
    (e.g. ``fedsim.seeding.rng(seed, "partition")``).

    Returns:
        Per client, sorted int64 indices into ``labels``.
    """
    from fedsim.data.partition import get_partitioner

    settings = spec.model_dump(exclude={"scheme"})
    return get_partitioner(spec.scheme, rng=rng, **settings)(labels)
