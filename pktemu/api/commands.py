"""Commands inside a namespace, now or at a virtual time, like Mininet's `node.cmd()`: the same
actions a scenario's `timeline:` runs (`iptables`, `iptables-restore`, `conntrack`, `ip`,
`bridge`, `sysctl`, `app`, and the cluster's `apply`, `delete`, `scale`, ...) (a part of
`pktemu.Network`)."""
from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from pktemu.errors import PktemuError, excerpt
from pktemu.sim import SECOND
from pktemu.timeline import CLUSTER, load_builtin
from pktemu.topo import TimelineEntry

if TYPE_CHECKING:
    from pktemu.net.node import Node
    from pktemu.network import ActionRecord
    from pktemu.network import Network as Engine


class Commands:
    """`cmd` and `schedule`; the network supplies `engine` and `_node`."""

    engine: "Engine"

    def _node(self, what: str, where: str) -> "Node":
        raise NotImplementedError

    def cmd(self, where: str, line: str, *, at: float | None = None, stdin: str | None = None) -> str | None:
        """Run a command line in pod or node `where`: `"conntrack -D -p udp --orig-dst 10.3.0.10"`,
        `"iptables -t nat -R KUBE-SVC-X 1 -j KUBE-SEP-Y"`, `"ip link set eth0 down"`,
        `"ip route add 10.9.0.0/16 via 10.240.0.1"`, `"bridge link set dev veth-a hairpin on"`,
        `"sysctl -w net.ipv4.ip_forward=0"`, `"iptables-restore --noflush"` with `stdin=` rules.
        Now: returns what the tool prints, and a failure raises PktemuError with its message; with
        `at=` (virtual seconds) it is scheduled and its outcome goes to the run's timeline.txt."""
        if not isinstance(line, str) or not line.strip():
            raise PktemuError(f"cmd: expected a command line, got {excerpt(line)}")
        try:
            program, _, rest = line.strip().partition(" ")
            toks = shlex.split(rest)
        except ValueError as e:
            raise PktemuError(f"cmd: {e} in {excerpt(line)}") from None
        if program == "iptables-restore":
            if stdin is None:
                raise PktemuError("cmd: iptables-restore reads its rules from stdin=")
            unknown = [t for t in toks if t not in ("-n", "--noflush")]
            if unknown:
                raise PktemuError(f"cmd: iptables-restore: unsupported option {excerpt(unknown[0])}")
            value: Any = {"text": stdin, "noflush": bool(toks)}
        elif stdin is not None:
            raise PktemuError(f"cmd: {excerpt(program)} reads no stdin")
        else:
            value = rest
        return self.schedule(at, program, value, node=where, text=line.strip())

    def schedule(self, at: float | None, action: str, value: Any, *, node: str | None = None,
                 text: str | None = None) -> str | None:
        """Run timeline action `action` with the argument a topology file would give it (`{start:
        {kind: udp-echo, port: 7}}` for `app`, a manifest for `apply`), now or at `at` seconds."""
        actions = load_builtin()
        if action not in actions:
            raise PktemuError(f"cmd: unknown command {excerpt(action)} (known: {', '.join(actions)})")
        kind = actions[action]
        where = action                  # messages name the command, as a shell would
        n = ""
        model = None
        if kind.scope != CLUSTER:
            if node is None:
                raise PktemuError(f"{action}: give node= (the pod or node it runs in)")
            n = self._node(action, node).name
            model = self.engine.topology.nodes.get(n)
        args = kind.parse(value, where, ".", model)
        entry = TimelineEntry(0, action, args, where, n, text or f"{action} {value}")
        if at is None:
            rec: ActionRecord = self.engine.run_action(entry)
            if rec.failed:
                raise PktemuError(f"{rec.command}: {rec.output}")
            return rec.output
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not 0 <= at < 1e9:
            raise PktemuError(f"{action}: at={excerpt(at)} is not a number of seconds (0 or more)")
        when = round(at * SECOND)
        if when < self.engine.sim.now:
            raise PktemuError(f"{action}: at={at} is in the past (now is {self.engine.sim.now / SECOND})")
        self.engine.sim.at(when, self.engine.run_action, entry)
        return None
