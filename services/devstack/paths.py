"""Where the local stack keeps downloads (cache, shared by clones) and running state (per clone)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Downloads survive across clones: `MDMPUSH_CACHE_DIR`, else ~/.cache/mdmpush."""
    override = os.environ.get("MDMPUSH_CACHE_DIR")
    return Path(override) if override else Path.home() / ".cache" / "mdmpush"


def state_dir() -> Path:
    """Data and PID files of running processes: `MDMPUSH_STATE_DIR`, else <repo>/.state."""
    override = os.environ.get("MDMPUSH_STATE_DIR")
    return Path(override) if override else REPO_ROOT / ".state"
