"""Where things live on disk, and how they get there safely.

* ``data_dir()`` / ``cache_dir()``: the roots, from ``FEDSIM_DATA`` and
  ``FEDSIM_CACHE`` (defaults under ``~/.cache/fedsim``).
* ``atomic_write(path)``: every file fedsim writes goes to a temporary file in
  the same directory and is renamed into place, so a crash or Ctrl-C never
  leaves a half-written CSV, checkpoint or cache entry.
* ``stable_hash(obj)``: the content address of a JSON-able config, used as the
  cache key of a stage (open_lth names runs the same way).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


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
