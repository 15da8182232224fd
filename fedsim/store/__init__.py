"""Where things live on disk, and how they get there safely: the roots, atomic
files and cache entries (`fedsim.store.cache`), and the name of every file
fedsim writes (`fedsim.store.artifacts`)."""

from fedsim.store import artifacts
from fedsim.store.cache import (
    CacheEntry,
    atomic_write,
    cache_dir,
    canonical_json,
    data_dir,
    sha256_file,
    stable_hash,
    write_bytes,
    write_text,
)

__all__ = ["CacheEntry", "artifacts", "atomic_write", "cache_dir", "canonical_json", "data_dir",
           "sha256_file", "stable_hash", "write_bytes", "write_text"]
