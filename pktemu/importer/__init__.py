"""`pktemu import`: a topology of a real cluster from `pktemu collect` dumps and Kubernetes objects.

sources reads the DUMP arguments (archives, folders, YAML files) and tells node dumps from cluster
objects by their content; node turns one node dump into a topology node, with the devices the
CNIs registered in cni claim (bridge, flannel VXLAN, Calico), its routes and rules (routes) and
nft's tables, each field checked as the loader will check it (fields); cluster wires the
Pods to their host veths (bridged) or makes them nodes behind their cali veths (routed) and joins
the nodes through an underlay router (underlay); redact renames what is
sensitive; build assembles the files and writes them. Every problem is a `Notes` line, never an
exception, unless nothing runnable is left.
"""
from __future__ import annotations

import sys


class Notes:
    """The problems met on the way, one line each (`pktemu: warning: ...` on stderr)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def warn(self, where: str, what: str) -> None:
        from pktemu.errors import one_line

        self.lines.append(one_line(f"{where}: {what}" if where else what, 400))

    def print(self) -> None:
        for line in self.lines:
            print(f"pktemu: warning: {line}", file=sys.stderr)
