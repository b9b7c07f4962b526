"""pktemu: a packet-level emulator of Linux and Kubernetes networking.

`pktemu.Network` (the Python API) and `pktemu.Error` are imported on first use, so that
`import pktemu` stays light: the CLI installs its signal handlers before anything heavy loads.
"""
from __future__ import annotations

from typing import Any

#: Verdicts a Python netfilter hook may answer (NF_ACCEPT, NF_DROP in the kernel's numbering)
ACCEPT, DROP = 1, 0


def __getattr__(name: str) -> Any:
    if name == "Network":
        from pktemu.api.network import Network
        return Network
    if name == "Error":
        from pktemu.errors import PktemuError
        return PktemuError
    raise AttributeError(f"module 'pktemu' has no attribute {name!r}")
