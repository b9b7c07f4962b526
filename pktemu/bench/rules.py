"""kube-proxy rulesets at cluster size, in the layouts the kernel oracle renders (pktemu.oracle.oracle_rules,
iptables and nftables modes): load time and memory per rule, and the first packet of a new connection
to a Service (PREROUTING then FORWARD through a real Netfilter: conntrack, the NAT core, DNAT);
then manifest load and a full kube-proxy sync (pktemu.bench_load's generated Services)."""
from __future__ import annotations

import gc
import random
import time
import tracemalloc
from typing import Any, Callable

import yaml
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pktemu.bench import Figure, Goal, interleave, timed
from pktemu.bench_load import manifests_text
from pktemu.k8s import manifests
from pktemu.k8s.objects import Service
from pktemu.k8s.proxier_iptables import IptablesOptions, IptablesProxier
from pktemu.k8s.proxy_state import endpoints_map, service_ports
from pktemu.net.frame import Frame
from pktemu.netfilter.core import FORWARD, NF_ACCEPT, PREROUTING
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.xt_parse import LineCache
from pktemu.netfilter.xtables import Ruleset, load_rules
from pktemu.nftables.eval import attach
from pktemu.nftables.parse import load_nft
from pktemu.oracle import oracle_rules

ENDPOINTS = 5
SERVICE_CIDR = "172.20.0.0/14"         # apart from the endpoints' 10.100.0.0/14
US_PER_RULE = 1e6 / 170_000        # the goal: 170k rules in 1 s
US_PER_OBJECT = 2e6 / 10_000       # the goals: 10,000 manifests, or a sync of 10,000 Services, in 2 s


def cluster_ip(i: int) -> str:
    return f"172.{20 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"


def services(n: int) -> list[dict[str, Any]]:
    """N Services x 5 endpoints in oracle_rules' form (each a distinct port name and ClusterIP)."""
    return [{"ns": f"ns{i % 10}", "name": f"svc-{i}", "port_name": "http", "proto": "tcp",
             "cluster_ip": cluster_ip(i), "port": 80,
             "endpoints": [f"10.{100 + e}.{i // 250 % 250}.{i % 250 + 1}:8080" for e in range(ENDPOINTS)]}
            for i in range(n)]


def render(mode: str, n: int) -> str:
    """kube-proxy's ruleset for N Services in `mode`, rendered by the oracle's own renderer."""
    saved = oracle_rules.SERVICES
    oracle_rules.SERVICES = services(n)
    try:
        if mode == "nftables":
            return oracle_rules.render_nft(service_cidr=SERVICE_CIDR)
        return oracle_rules.render()
    finally:
        oracle_rules.SERVICES = saved


def count_rules(mode: str, text: str) -> int:
    start = "add rule " if mode == "nftables" else "-A "
    return sum(1 for ln in text.splitlines() if ln.startswith(start))


class _Node:
    """The namespace a benchmark Netfilter runs in: a router that owns none of the addresses."""
    name = "bench"

    def __init__(self) -> None:
        self.nf: Any = None
        self._rng = random.Random(0)
        self.sysctls: dict[str, int] = {}          # the kernel's defaults

    def is_local(self, addr: int) -> bool:
        return False

    def addr_type(self, addr: int) -> str:
        return "UNICAST"

    def masquerade_source(self, out_dev: str, daddr: int) -> int | None:
        return None

    def send_reject(self, frame: Any, state: Any, reject_with: str) -> None:
        return None

    def rng(self, name: str) -> random.Random:
        return self._rng

    def now(self) -> int:
        return 0


def load(mode: str, text: str) -> Netfilter:
    """A namespace's Netfilter with the ruleset loaded, as a node's `iptables:`/`nftables:` file is."""
    node = _Node()
    if mode == "nftables":
        nf = Netfilter(node, Ruleset(name="nftables"))      # type: ignore[arg-type]
        attach(nf, load_nft(text, "<bench>"))
    else:
        nf = Netfilter(node, load_rules(text, "<bench>"))   # type: ignore[arg-type]
    node.nf = nf
    return nf


_SYNS: dict[tuple[int, int], list[bytes]] = {}


def syns(n: int, packets: int) -> list[bytes]:
    """SYNs from a pod (new source ports) to random Services among N: what opens a connection."""
    if (n, packets) not in _SYNS:
        rnd = random.Random(n)
        _SYNS[(n, packets)] = [bytes(Ether(src="0a:58:0a:00:01:02", dst="0a:58:0a:00:01:01")
                                     / IP(src="10.0.1.2", dst=cluster_ip(rnd.randrange(n)))
                                     / TCP(sport=10_000 + k % 50_000, dport=80, flags="S"))
                               for k in range(packets)]
    return _SYNS[(n, packets)]


def first_packet(nf: Netfilter, raw: bytes) -> tuple[Frame, int]:
    """One SYN through PREROUTING (conntrack, nat: DNAT to an endpoint) and FORWARD (filter)."""
    f = Frame(raw)
    verdict = nf.hook(PREROUTING, f, "eth0", None)
    return f, min(verdict, nf.hook(FORWARD, f, "eth0", "eth1"))


def first_packets(nf: Netfilter, n: int, packets: int) -> float:
    """Seconds per first packet to a random Service among N."""
    frames = syns(n, packets)
    gc.collect()
    t0 = time.perf_counter()
    for raw in frames:
        first_packet(nf, raw)
    return (time.perf_counter() - t0) / packets


def check_dnat(nf: Netfilter, n: int) -> None:
    """The figure means something only if the first packet is translated: refuse to report otherwise."""
    raw = syns(n, 1)[0]
    f, verdict = first_packet(nf, raw)
    if verdict != NF_ACCEPT or f.daddr == int.from_bytes(raw[30:34], "big") or f.dport != 8080:
        raise RuntimeError(f"first packet among {n} Services not DNATed and accepted: "
                           f"{[str(x) for x in f.notes]}")


def mode_figures(mode: str, sizes: tuple[int, int], reps: int, packets: int,
                 say: Callable[[str], None]) -> list[Figure]:
    small_text = render(mode, 10)
    small = (small_text, count_rules(mode, small_text), load(mode, small_text))
    out: list[Figure] = []
    for label, n in zip(("mid", "big"), sizes, strict=True):
        say(f"{mode}: {n:,} Services")
        load_reps = reps if label == "mid" else max(1, reps - 1)
        out += size_figures(mode, label, n, small, load_reps, reps, packets)
        gc.collect()
    return out


def size_figures(mode: str, label: str, n: int, small: tuple[str, int, Netfilter], load_reps: int,
                 reps: int, packets: int) -> list[Figure]:
    """Load (and, for `mid`, memory) and first packet at N Services, each against 10 Services."""
    small_text, small_rules, small_nf = small
    text = render(mode, n)
    rules = count_rules(mode, text)
    ratios, values = interleave(_load_per_rule(mode, text, rules),
                                _load_per_rule(mode, small_text, small_rules), load_reps)
    goal = Goal(f"<= {US_PER_RULE:.1f} us/rule (170k rules in 1 s)", US_PER_RULE, "absolute")
    out = [Figure(f"{mode}_load_{label}", f"{mode} ruleset of {n:,} Services x {ENDPOINTS} "
                  f"({rules:,} rules): load, per rule", f"the same for 10 Services ({small_rules} rules)",
                  ratios, [v * 1e6 for v in values], "us/rule", goal, {"services": n, "rules": rules})]
    if label == "mid":
        gc.collect()
        tracemalloc.start()
        kept = load(mode, text)
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del kept
        out.append(Figure(f"{mode}_bytes_per_rule", f"{mode}, {n:,} Services: memory kept per rule",
                          "the rules text's own size", [current / len(text.encode())],
                          [current / rules], "B/rule", Goal("<= 500 B/rule", 500, "absolute")))
    big_nf = load(mode, text)
    del text
    check_dnat(big_nf, n)
    check_dnat(small_nf, 10)
    ratios, values = interleave(lambda: first_packets(big_nf, n, packets),
                                lambda: first_packets(small_nf, 10, packets), reps, warmup=True)
    out.append(Figure(f"{mode}_first_packet_{label}", f"{mode}, first packet to a Service among "
                      f"{n:,} (PREROUTING + FORWARD)", "the same among 10 Services", ratios,
                      [v * 1e6 for v in values], "us/packet", Goal("<= 1.1", 1.1), {"services": n}))
    return out


_unique = iter(range(10**9))


def _load_per_rule(mode: str, text: str, rules: int) -> Callable[[], float]:
    def once() -> float:            # a text never seen before: no parse cache answers for it
        secs, _ = timed(lambda: load(mode, text + f"# {next(_unique)}\n"))
        return secs / rules
    return once


def sync_figures(n: int, reps: int, say: Callable[[str], None]) -> list[Figure]:
    """Reading N Service manifests (against PyYAML alone reading the same text), and a full kube-proxy
    sync of N Services x 5 (rendering + iptables-restore on a node that parsed nothing yet), per
    Service against the same for 10."""
    say(f"manifests and kube-proxy sync: {n:,} Services")
    text = manifests_text(n, slices=False)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    def ours() -> float:
        return timed(lambda: manifests.load_text(text, "<bench>"))[0]

    def pyyaml() -> float:
        return timed(lambda: list(yaml.load_all(text, Loader=loader)))[0]

    ratios, values = interleave(ours, pyyaml, reps, warmup=True)
    figs = [Figure("manifests_load", f"{n:,} Service manifests: load", f"PyYAML {loader.__name__} "
                   "alone reading the same text", ratios, [v / n * 1e6 for v in values], "us/Service",
                   Goal(f"<= {US_PER_OBJECT:.0f} us/Service (10,000 in 2 s)", US_PER_OBJECT, "absolute"),
                   {"services": n})]

    def state(k: int) -> tuple[Any, Any]:
        objs = manifests.load_text(manifests_text(k, slices=True), "<bench>")
        return (service_ports([o for o in objs if isinstance(o, Service)]),
                endpoints_map([o for o in objs if not isinstance(o, Service)], "node0"))

    def sync(svcs: Any, eps: Any, k: int) -> Callable[[], float]:
        def once() -> float:
            def run() -> None:
                rs = Ruleset()
                rules, _ = IptablesProxier(IptablesOptions(cluster_cidr="10.0.0.0/8")).sync(svcs, eps, rs)
                load_rules(rules, "<kube-proxy>", ruleset=rs, noflush=True, cache=LineCache())
            return timed(run)[0] / k
        return once

    big, small = state(n), state(10)
    ratios, values = interleave(sync(*big, n), sync(*small, 10), reps)
    figs.append(Figure("kube_proxy_sync", f"full kube-proxy sync (iptables mode) of {n:,} Services x "
                       f"{ENDPOINTS}: render + restore, per Service", "the same for 10 Services", ratios,
                       [v * 1e6 for v in values], "us/Service",
                       Goal(f"<= {US_PER_OBJECT:.0f} us/Service (10,000 in 2 s)", US_PER_OBJECT, "absolute"),
                       {"services": n}))
    return figs
