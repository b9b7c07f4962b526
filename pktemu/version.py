"""pktemu's version, from the installed package's metadata (pyproject.toml is the one source)."""
from __future__ import annotations

from functools import cache


@cache
def version() -> str:
    """`0.1.0`, or `unknown` when running from a tree that was never installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("pktemu")
    except PackageNotFoundError:
        return "unknown"
