"""Small hand-written stand-ins for the node and Netfilter the rules engine calls back into,
plus packet builders. Shared by the test_xtables_* modules (no tests here)."""
from __future__ import annotations

import random
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktemu.net.frame import Frame, ip2int
from pktemu.netfilter.core import NF_ACCEPT, PREROUTING, HookState, NatRange
from pktemu.netfilter.xtables import Ruleset, load_rules


class FakeNode:
    """NodeView: address types from a dict, a settable clock, recorded REJECTs."""

    def __init__(self, name: str = "node1", seed: int = 1) -> None:
        self.name = name
        self.sysctls: dict[str, int] = {}      # the kernel's defaults
        self.local = {ip2int("10.0.1.1"), ip2int("10.100.0.11"), ip2int("127.0.0.1")}
        self.masq: dict[str, int | None] = {"eth0": ip2int("10.100.0.11"), "cbr0": ip2int("10.0.1.1")}
        self.rejects: list[tuple[Frame, str, str]] = []
        self.clock = 0
        self._seed = seed
        self._rngs: dict[str, random.Random] = {}
        self.dev_types: dict[tuple[int, str], str] = {}

    def is_local(self, addr: int) -> bool:
        return addr in self.local

    def addr_type(self, addr: int) -> str:
        if addr in self.local:
            return "LOCAL"
        if addr == 0xFFFFFFFF:
            return "BROADCAST"
        if addr >> 28 == 0xE:
            return "MULTICAST"
        return "UNICAST"

    def masquerade_source(self, out_dev: str, daddr: int) -> int | None:
        return self.masq.get(out_dev)

    def send_reject(self, frame: Frame, state: HookState, reject_with: str) -> None:
        self.rejects.append((frame, state.hook, reject_with))

    def rng(self, name: str) -> random.Random:
        if name not in self._rngs:
            self._rngs[name] = random.Random(f"{self._seed}/{name}")
        return self._rngs[name]

    def now(self) -> int:
        return self.clock


class FakeNf:
    """The part of Netfilter NAT targets use: records nat_setup calls, answers redirect_address."""

    def __init__(self, verdict: int = NF_ACCEPT, redirect: int | None = ip2int("10.0.1.1")) -> None:
        self.calls: list[tuple[Frame, int, NatRange, str]] = []
        self.verdict = verdict
        self.redirect = redirect

    def nat_setup(self, frame: Frame, manip: int, rng: NatRange, state: HookState) -> int:
        self.calls.append((frame, manip, rng, state.hook))
        return self.verdict

    def redirect_address(self, frame: Frame, state: HookState) -> int | None:
        return self.redirect


def tcp(src: str = "10.0.1.2", dst: str = "10.3.241.152", sport: int = 40000, dport: int = 80,
        flags: str = "S", ttl: int = 64, payload: bytes = b"", **kw: Any) -> Frame:
    seg = TCP(sport=sport, dport=dport, flags=flags, **kw)
    return Frame(bytes(Ether() / IP(src=src, dst=dst, ttl=ttl) / seg / payload))


def udp(src: str = "10.0.1.2", dst: str = "10.3.240.10", sport: int = 40053, dport: int = 53,
        payload: bytes = b"q" * 56) -> Frame:
    return Frame(bytes(Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload))


def icmp(src: str = "10.0.1.2", dst: str = "10.0.2.2", type: int = 8, code: int = 0) -> Frame:
    return Frame(bytes(Ether() / IP(src=src, dst=dst) / ICMP(type=type, code=code)))


def state(hook: str = PREROUTING, in_dev: str | None = "cbr0", out_dev: str | None = None,
          node: FakeNode | None = None, nf: FakeNf | None = None, **kw: Any) -> HookState:
    return HookState(hook, in_dev, out_dev, node or FakeNode(), nf or FakeNf(), **kw)


def table(name: str, *rules: str, chains: tuple[str, ...] = (), index: bool = True) -> Ruleset:
    """A ruleset with one table made of `rules` (restore lines) after declaring `chains`."""
    text = "\n".join([f"*{name}", *(f":{c} - [0:0]" for c in chains), *rules, "COMMIT", ""])
    return load_rules(text, "test.rules", Ruleset("test", index=index))
