"""What a replay did, counted: tcpreplay's summary lines, then where every frame went and why.

Records are counted once per capture (read, truncated, refused, client or server side, bad
checksums); what was sent, not sent and answered is counted as it happened, over all loops. The
emulated kernels' drops come from the run's drop log, grouped by place and reason.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pktemu.sim import SECOND


@dataclass
class FlowSummary:
    """One flow in one loop, as the replay saw it."""
    loop: int
    proto: str
    client: str                  # mapped endpoint, as replayed
    server: str
    records: int                 # client frames of the flow in the capture
    sent: int = 0
    answers: int = 0
    outcome: str = "complete"

    def to_json(self) -> dict[str, Any]:
        return {"loop": self.loop, "proto": self.proto, "client": self.client, "server": self.server,
                "records": self.records, "sent": self.sent, "answers": self.answers, "outcome": self.outcome}


@dataclass
class ReplayStats:
    capture: str
    format: str
    topology: str
    inject: str
    stands_in_for: str
    split: str
    maps: list[str]
    timing: str
    loops: int
    fix_checksums: bool
    records: int = 0
    client_side: int = 0
    server_side: int = 0
    truncated: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    bad_checksums: Counter[str] = field(default_factory=Counter)
    vlan_tags_removed: int = 0
    unmapped: set[str] = field(default_factory=set)
    sent_packets: int = 0
    sent_bytes: int = 0
    first_sent: int | None = None
    last_sent: int | None = None
    not_sent: Counter[str] = field(default_factory=Counter)
    answers: int = 0
    arp_replies: int = 0
    flows: list[FlowSummary] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    out_dir: str = ""
    virtual_ns: int = 0

    def sent(self, now: int, nbytes: int) -> None:
        if self.first_sent is None:
            self.first_sent = now
        self.last_sent = now
        self.sent_packets += 1
        self.sent_bytes += nbytes

    @property
    def seconds(self) -> float:
        if self.first_sent is None or self.last_sent is None:
            return 0.0
        return (self.last_sent - self.first_sent) / SECOND

    def rates(self) -> dict[str, float] | None:
        s = self.seconds
        if s <= 0:
            return None
        return {"Bps": self.sent_bytes / s, "Mbps": self.sent_bytes * 8 / s / 1e6,
                "pps": self.sent_packets / s, "fps": len(self.flows) / s}

    def to_json(self) -> dict[str, Any]:
        flow_pkts = sum(f.sent for f in self.flows if f.proto != "arp")
        return {
            "capture": self.capture, "format": self.format, "topology": self.topology,
            "inject": self.inject, "stands_in_for": self.stands_in_for, "split": self.split,
            "maps": self.maps, "timing": self.timing, "loops": self.loops,
            "fix_checksums": self.fix_checksums,
            "records": self.records, "client_side": self.client_side, "server_side": self.server_side,
            "truncated": self.truncated, "refused": dict(sorted(self.refused.items())),
            "bad_checksums": dict(sorted(self.bad_checksums.items())),
            "vlan_tags_removed": self.vlan_tags_removed, "unmapped_addresses": sorted(self.unmapped),
            "sent": {"packets": self.sent_packets, "bytes": self.sent_bytes, "seconds": self.seconds,
                     "rated": self.rates(), "flow_packets": flow_pkts,
                     "non_flow_packets": self.sent_packets - flow_pkts},
            "not_sent": dict(sorted(self.not_sent.items())),
            "answers": self.answers, "arp_replies": self.arp_replies,
            "flows": [f.to_json() for f in self.flows],
            "dropped": dict(sorted(self.dropped.items())),
            "out_dir": self.out_dir, "virtual_seconds": self.virtual_ns / SECOND,
        }

    def text(self) -> list[str]:
        """tcpreplay's three summary lines, then the replay's own accounting."""
        flow_pkts = sum(f.sent for f in self.flows if f.proto != "arp")
        r = self.rates()
        lines = [f"Actual: {self.sent_packets} packets ({self.sent_bytes} bytes) "
                 f"sent in {self.seconds:.6f} seconds"]
        if r is None:
            lines.append("Rated: n/a (everything was sent at one instant)")
            lines.append(f"Flows: {len(self.flows)} flows, {flow_pkts} flow packets, "
                         f"{self.sent_packets - flow_pkts} non-flow")
        else:
            lines.append(f"Rated: {r['Bps']:.1f} Bps, {r['Mbps']:.3f} Mbps, {r['pps']:.2f} pps")
            lines.append(f"Flows: {len(self.flows)} flows, {r['fps']:.2f} fps, {flow_pkts} flow packets, "
                         f"{self.sent_packets - flow_pkts} non-flow")
        loops = f"{self.loops} loop" + ("s" if self.loops != 1 else "")
        lines += [
            f"Statistics for network device: {self.inject} (the replay stands in for {self.stands_in_for})",
            f"\tRecords read:       {self.records} ({self.format}, {loops}, timing: {self.timing})",
            f"\tClient side:        {self.client_side} records (split {self.split}); "
            f"{self.sent_packets} frames sent",
            f"\tServer side:        {self.server_side} records left to the emulation; "
            f"{self.answers} frames came back, {self.arp_replies} ARP replies given",
            f"\tTruncated:          {self.truncated} (caplen < wirelen: never sent)",
        ]
        lines += _by_reason("Refused", self.refused)
        lines += _by_reason("Not sent", self.not_sent)
        fixed = ("recomputed (--fix-checksums)" if self.fix_checksums
                 else "kept: the receiving stack drops them")
        bad = ", ".join(f"{k} {v}" for k, v in sorted(self.bad_checksums.items()))
        lines.append(f"\tBad checksums:      {sum(self.bad_checksums.values())}"
                     + (f" ({bad}; {fixed})" if bad else ""))
        if self.vlan_tags_removed:
            lines.append(f"\tVLAN tags removed:  {self.vlan_tags_removed}")
        if self.unmapped:
            shown = sorted(self.unmapped)
            more = f" and {len(shown) - 8} more" if len(shown) > 8 else ""
            lines.append(f"\tNot in the topology (no --map): {', '.join(shown[:8])}{more}")
        lines += _by_reason("Dropped", self.dropped, "by the emulated kernels, see drops.txt")
        return lines


def _by_reason(title: str, counts: Counter[str], what: str = "") -> list[str]:
    total = sum(counts.values())
    out = [f"\t{title + ':':<20}{total}" + (f" ({what})" if what and total else "")]
    for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"\t\t{n:6d}  {reason}")
    return out
