"""Where things live on disk, and how they get there safely.

* ``data_dir()`` / ``cache_dir()``: the roots, from ``FEDSIM_DATA`` and
  ``FEDSIM_CACHE`` (defaults under ``~/.cache/fedsim``).
* ``atomic_write(path)``: every file fedsim writes goes to a temporary file in
  the same directory and is renamed into place, so a crash or Ctrl-C never
  leaves a half-written CSV, checkpoint or cache entry.
* ``CacheEntry.staged()``: the same for a whole cache entry (a directory of
  files): written into a private directory, published by one rename.
* ``stable_hash(obj)``: the content address of a JSON-able config, used as the
  cache key of a stage (open_lth names runs the same way).

The names of the files themselves are decided in `fedsim.store.artifacts`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fedsim.store.artifacts import MANIFEST


def data_dir() -> Path:
    """Dataset cache root: ``$FEDSIM_DATA`` or ``~/.cache/fedsim/data``."""
    return Path(os.environ.get("FEDSIM_DATA") or Path.home() / ".cache" / "fedsim" / "data")


def cache_dir() -> Path:
    """Stage-artifact cache root: ``$FEDSIM_CACHE`` or ``~/.cache/fedsim/cache``."""
    return Path(os.environ.get("FEDSIM_CACHE") or Path.home() / ".cache" / "fedsim" / "cache")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path``
    only if the block finishes without an exception.

    The rename is atomic on POSIX, so readers see the old file or the new one,
    never a partial one. On error the temporary file is removed and the old
    ``path`` (an earlier result) is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates 0600; results and caches get the usual mode (0666 - umask).
    os.fchmod(fd, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs, equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex SHA-256 prefix of ``canonical_json(obj)``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


class CacheEntry:
    """One stage artifact in the content-addressed cache:
    ``<cache_dir>/<stage>/<key>/`` with its files and a ``manifest.json``.

    The manifest is written last and lists the SHA-256 of every file, so an entry
    is either sealed and verified, or treated as absent: a crash mid-write or a
    corrupted file (checked on every ``valid()``) means "recompute", never
    "use silently". Files other than the manifest may be written (atomically)
    before sealing, e.g. a training checkpoint that a resumed run picks up.
    An entry written all at once is better written with `staged`, so that no
    other process ever sees its files before they are complete.
    """

    MANIFEST = MANIFEST

    def __init__(self, stage: str, key: str, root: Path | None = None) -> None:
        self.stage = stage
        self.key = key
        self.path = (root or cache_dir()) / stage / key

    def file(self, name: str) -> Path:
        """Path of one file of the entry (the directory is created)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path / name

    def manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when the entry is not sealed or unreadable."""
        try:
            return json.loads((self.path / self.MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def valid(self) -> bool:
        """True if sealed and every listed file has its recorded SHA-256."""
        manifest = self.manifest()
        if manifest is None:
            return False
        try:
            return all(sha256_file(self.path / name) == digest
                       for name, digest in manifest["files"].items())
        except (OSError, KeyError, TypeError):
            return False

    def seal(self, files: list[str], info: dict[str, Any] | None = None) -> None:
        """Record the files' checksums (and ``info``) in the manifest."""
        manifest = {
            "stage": self.stage,
            "key": self.key,
            "files": {name: sha256_file(self.path / name) for name in files},
            "info": info or {},
        }
        write_text(self.path / self.MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))

    def unseal(self) -> None:
        """Forget the manifest (the entry becomes invalid; files stay)."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / self.MANIFEST).unlink()

    def clear(self) -> None:
        """Remove the whole entry."""
        shutil.rmtree(self.path, ignore_errors=True)

    @contextlib.contextmanager
    def staged(self) -> Iterator[CacheEntry]:
        """A private staging entry to write this entry's files into and seal;
        published as this entry (`publish`) when the block finishes.

        The staging directory is a hidden sibling of the entry
        (``<stage>/.<key>.<random>``), so that two processes computing the
        same key never see each other's partial files. On an exception it is
        removed and this entry is left as it was. ::

            with entry.staged() as staging:
                save_result(result, staging.path)
                staging.seal(files)
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = CacheEntry(self.stage, self.key)
        staging.path = Path(tempfile.mkdtemp(prefix=f".{self.key}.", dir=self.path.parent))
        try:
            yield staging
            self.publish(staging)
        finally:  # published: already moved; failed: never published
            shutil.rmtree(staging.path, ignore_errors=True)

    def publish(self, staging: CacheEntry) -> bool:
        """Move the sealed ``staging`` entry (a directory of the same stage and
        key) into this entry's place by one rename; True when it was published.

        When this entry is already valid (another process finished first) it is
        kept (same key, same content) and ``staging`` is removed; a lost race
        to the rename is the same. Anything else at the path (an unsealed or
        damaged entry) is replaced.

        Raises:
            ValueError: ``staging`` is not sealed, or is of another stage or key.
        """
        if (staging.stage, staging.key) != (self.stage, self.key):
            raise ValueError(f"cannot publish {staging.stage}/{staging.key} as {self.stage}/{self.key}")
        if staging.manifest() is None:
            raise ValueError(f"staging directory {staging.path} is not sealed; seal() it first")
        if self.valid():
            shutil.rmtree(staging.path, ignore_errors=True)
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        try:
            os.replace(staging.path, self.path)
        except OSError:  # lost a race to another writer; its entry is as good
            shutil.rmtree(staging.path, ignore_errors=True)
            return False
        return True
