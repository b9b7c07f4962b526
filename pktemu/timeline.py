"""Timeline actions by name: what a scenario's `timeline:` (and `Network.cmd`) can change mid-run.

An action registers a `parse` (checks its argument when the topology is loaded, raising a one-line
PktemuError naming the file and field) and a `run`. Cluster actions (`apply`, `scale`, ...; see
pktemu.k8s.timeline) run on the Kubernetes cluster; node actions (`iptables`, `conntrack`,
`ip`, ...; see pktemu.actions) run in one namespace, named by the entry's `node:`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from pktemu.net.node import Node
    from pktemu.network import Network

CLUSTER = "cluster"
NODE = "node"


@dataclass(frozen=True)
class Action:
    #: parse(value, where, base_dir, node_model) -> checked args; `where` is
    #: "file: scenarios.x.timeline[i].action";
    #: node_model is the pktemu.topo.Node a node action runs in (None for cluster actions)
    parse: Callable[[Any, str, str, Any], dict[str, Any]]
    #: run(target, args) -> what the command printed (or None): target is the Cluster for cluster
    #: actions, a pktemu.actions.base.NodeCtx for node actions
    run: Callable[[Any, dict[str, Any]], str | None]
    scope: str = CLUSTER


ACTIONS: dict[str, Action] = {}


class ActionFailed(Exception):
    """The command ran and failed as the real tool would (`iptables -R` on a chain that does not
    exist yet, `conntrack -D` matching nothing): logged and warned about, never a crash of the run."""


@dataclass
class NodeCtx:
    """What a node action runs with."""
    net: "Network"
    node: "Node"
    #: "at 2.000 s": for the notes of the frames the action affects
    when: str
    #: "file: scenarios.x.timeline[2]" or "cmd": for messages
    where: str


def when_text(t_ns: int) -> str:
    return f"at {t_ns / 1e9:.3f} s"


def register(name: str, parse: Callable[[Any, str, str, Any], dict[str, Any]],
             run: Callable[[Any, dict[str, Any]], str | None], scope: str = CLUSTER) -> None:
    ACTIONS[name] = Action(parse, run, scope)


def load_builtin() -> dict[str, Action]:
    """Every built-in action registered (each module registers its own on import)."""
    import pktemu.actions  # noqa: F401
    import pktemu.k8s.timeline  # noqa: F401
    return ACTIONS
