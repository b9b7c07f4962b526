"""Where the shared reference material is: `../shared/` beside the checkout (as in CI)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
ORACLE = SHARED / "kernel-oracle"
ORACLE_REF = ORACLE / "reference"
CAPTURES = SHARED / "captures"
