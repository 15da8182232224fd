"""The store publishes whole cache entries atomically (`CacheEntry.staged`),
and one module names the files (`fedsim.store.artifacts`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsim import store
from fedsim.store import artifacts


def _siblings(entry: store.CacheEntry) -> list[str]:
    """Everything in the entry's stage directory (staging directories included)."""
    parent = entry.path.parent
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_an_exception_while_staging_leaves_no_entry_and_no_temporary_directory(tmp_path: Path) -> None:
    entry = store.CacheEntry("system", "k1", root=tmp_path)
    with pytest.raises(RuntimeError, match="simulator broke"), entry.staged() as staging:
        (staging.path / "timeline.parquet").write_bytes(b"half")
        assert staging.path != entry.path and staging.path.parent == entry.path.parent
        raise RuntimeError("simulator broke")
    assert not entry.path.exists() and not entry.valid()
    assert _siblings(entry) == []


def test_an_interrupt_while_staging_leaves_no_temporary_directory(tmp_path: Path) -> None:
    entry = store.CacheEntry("system", "k1", root=tmp_path)
    with pytest.raises(KeyboardInterrupt), entry.staged() as staging:
        (staging.path / "a.bin").write_bytes(b"x")
        staging.seal(["a.bin"])
        raise KeyboardInterrupt
    assert _siblings(entry) == []


def test_a_published_entry_is_valid_and_holds_what_was_staged(tmp_path: Path) -> None:
    entry = store.CacheEntry("system", "k1", root=tmp_path)
    with entry.staged() as staging:
        assert not entry.path.exists()  # nothing visible while staging
        (staging.path / "a.bin").write_bytes(b"payload")
        staging.seal(["a.bin"], {"rounds": 3})
    assert entry.valid()
    assert (entry.path / "a.bin").read_bytes() == b"payload"
    assert entry.manifest()["info"] == {"rounds": 3} and entry.manifest()["key"] == "k1"
    assert _siblings(entry) == ["k1"]


def test_an_unsealed_staging_is_not_published(tmp_path: Path) -> None:
    entry = store.CacheEntry("system", "k1", root=tmp_path)
    with pytest.raises(ValueError, match="not sealed"), entry.staged() as staging:
        (staging.path / "a.bin").write_bytes(b"payload")
    assert not entry.path.exists() and _siblings(entry) == []


def test_a_valid_entry_published_first_by_another_process_is_kept(tmp_path: Path) -> None:
    entry = store.CacheEntry("system", "k1", root=tmp_path)
    with entry.staged() as staging:
        (staging.path / "a.bin").write_bytes(b"first")
        staging.seal(["a.bin"])
        # another process publishes the same key while this one is still writing
        with entry.staged() as other:
            (other.path / "a.bin").write_bytes(b"other")
            other.seal(["a.bin"])
    assert entry.valid() and (entry.path / "a.bin").read_bytes() == b"other"
    assert _siblings(entry) == ["k1"]


def test_a_damaged_entry_is_replaced_on_publish(tmp_path: Path) -> None:
    entry = store.CacheEntry("system", "k1", root=tmp_path)
    entry.file("a.bin").write_bytes(b"old")
    entry.seal(["a.bin"])
    (entry.path / "a.bin").write_bytes(b"tampered")  # checksum no longer matches
    assert not entry.valid()
    with entry.staged() as staging:
        (staging.path / "a.bin").write_bytes(b"new")
        staging.seal(["a.bin"])
    assert entry.valid() and (entry.path / "a.bin").read_bytes() == b"new"


def test_publish_refuses_another_stage_or_key(tmp_path: Path) -> None:
    entry = store.CacheEntry("system", "k1", root=tmp_path)
    other = store.CacheEntry("system", "k2", root=tmp_path)
    other.file("a.bin").write_bytes(b"x")
    other.seal(["a.bin"])
    with pytest.raises(ValueError, match="cannot publish"):
        entry.publish(other)
    assert other.valid() and not entry.path.exists()


def test_checkpoint_file_names() -> None:
    assert artifacts.checkpoint_files(42) == ["trace.r000042.npz", "params.r000042.npz"]
    assert artifacts.find_checkpoint({"params.r000007.npz": "h", "trace.r000007.npz": "h"}) == (
        "trace.r000007.npz", "params.r000007.npz")
    with pytest.raises(StopIteration):
        artifacts.find_checkpoint(["trace.r000007.npz"])
    assert store.CacheEntry.MANIFEST == artifacts.MANIFEST == "manifest.json"
    assert sorted(artifacts.SYSTEM_FILES.values()) == ["profiles.parquet", "rounds.parquet", "timeline.parquet"]


def test_the_system_stage_writes_the_files_the_artifacts_module_names(tmp_path: Path) -> None:
    """save_result and load_result agree with `artifacts.SYSTEM_FILES` (the
    system stage seals exactly those names)."""
    import numpy as np

    from fedsim import config
    from fedsim.system.payload import Payload
    from fedsim.system.sim import load_result, save_result, simulate

    scenario = config.load(Path(__file__).parent / "scenarios" / "tiny.yaml")
    result = simulate(scenario.system, client_samples=np.full(4, 100), payload=Payload(1000, 1000),
                      work_fraction=1.0, rounds=2, seed=0)
    save_result(result, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(artifacts.SYSTEM_FILES.values())
    assert load_result(tmp_path).participation[0].tolist() == result.participation[0].tolist()
