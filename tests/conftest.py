"""Shared fixtures: a private stage cache per test, and the tiny scenario."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see fedsim/__init__.py

import pytest

TESTS = Path(__file__).parent
TINY = TESTS / "scenarios" / "tiny.yaml"


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty FEDSIM_CACHE for this test (datasets stay in the shared FEDSIM_DATA)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("FEDSIM_CACHE", str(root))
    return root


@pytest.fixture
def tiny_path() -> Path:
    return TINY
