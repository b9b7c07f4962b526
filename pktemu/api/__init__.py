"""The Python API: an emulated network spoken to in Scapy packets (docs/python-api.md)."""
from __future__ import annotations

from pktemu.api.network import Network
from pktemu.api.state import Conntrack, CtEntry
from pktemu.errors import PktemuError as Error

__all__ = ["Conntrack", "CtEntry", "Error", "Network"]
