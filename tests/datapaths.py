"""Where the tests' reference material lives: inside the repository, so a fresh clone stands alone.

`pktemu/oracle/` is the kernel oracle (the scripts that build the reference topology out of real
network namespaces, and its summariser); `tests/data/oracle/reference*` are good runs of it on a real
kernel; `tests/data/captures/` are public captures. Provenance: tests/data/README.md.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
ORACLE = ROOT / "pktemu" / "oracle"
ORACLE_REF = DATA / "oracle" / "reference"
ORACLE_REF_NFT = DATA / "oracle" / "reference-nftables"
CAPTURES = DATA / "captures"
