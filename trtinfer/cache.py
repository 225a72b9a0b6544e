"""Where trtinfer keeps what it can rebuild: timing caches, benchmark artifacts, backend choices."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_NAME = "trtinfer"


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/trtinfer`` (an absolute XDG_CACHE_HOME only, as the spec says), else ``~/.cache/trtinfer``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / CACHE_DIR_NAME
