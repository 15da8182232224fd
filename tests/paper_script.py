"""scripts/paper_tables.py loaded as a module for the paper tests (one home
for its path and loading); importing it puts scripts/ on sys.path, so the
tests import `paper` after it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLES = ROOT / "reports" / "paper" / "tables"


def _load_script():
    spec = importlib.util.spec_from_file_location("paper_tables", ROOT / "scripts" / "paper_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_tables"] = module
    spec.loader.exec_module(module)  # puts scripts/ on sys.path: `paper` imports
    return module


script = sys.modules.get("paper_tables") or _load_script()

from paper import common, figures, traces  # noqa: E402  (scripts/ is on sys.path now)

__all__ = ["ROOT", "TABLES", "common", "figures", "script", "traces"]
