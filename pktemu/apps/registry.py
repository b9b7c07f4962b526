"""Application kinds register themselves here; topology files name them by `kind`.

An app is started in one namespace (node) at a virtual time with the parameters the topology
gives; it talks to the network only through the node's sockets, and reports what it saw in a
result dict (the oracle's client-result.json).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from pktemu.errors import PktemuError, excerpt

if TYPE_CHECKING:
    from pktemu.net.node import Node


@dataclass(frozen=True)
class AppKind:
    kind: str
    #: start(node, params, result, done) -> None. `result` is a dict the app fills in as it runs;
    #: a client calls `done()` once when it has finished (servers never do), so the scenario
    #: runner knows when to stop.
    start: Callable[["Node", dict[str, Any], dict[str, Any], Callable[[], None]], None]
    #: validate(params, where) -> normalised params; raises PktemuError naming `where` and the field.
    validate: Callable[[dict[str, Any], str], dict[str, Any]]
    description: str = ""


_REGISTRY: dict[str, AppKind] = {}


def register(kind: AppKind) -> AppKind:
    if kind.kind in _REGISTRY:
        raise ValueError(f"app kind {kind.kind!r} registered twice")
    _REGISTRY[kind.kind] = kind
    return kind


def get(kind: str, where: str) -> AppKind:
    _load_builtin()
    try:
        return _REGISTRY[kind]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise PktemuError(f"{where}: unknown app kind {excerpt(kind)} (known: {known})") from None


def kinds() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    """Import the built-in app modules once; each registers itself on import."""
    import pktemu.apps  # noqa: F401  (pktemu/apps/__init__.py imports the built-in apps)
