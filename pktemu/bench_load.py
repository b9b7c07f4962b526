"""Load-time figures at real cluster size: `python -m pktemu.bench_load [--services N] [--json]`.

What issue 15's goals name, measured as a user pays them: reading N Service manifests, one full
kube-proxy sync of N Services x 5 endpoints (rendering and iptables-restore), loading the resulting
ruleset text (about 17 rules per Service) with the memory it keeps per rule, and the copy another node
sharing the same rules file gets. Seconds of wall time, best of `--repeat`; run it on an idle machine.
"""
from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from typing import Any, Callable

from pktemu.k8s import manifests
from pktemu.k8s.objects import Service
from pktemu.k8s.proxier_iptables import IptablesOptions, IptablesProxier
from pktemu.k8s.proxy_state import endpoints_map, service_ports
from pktemu.netfilter.xt_parse import LineCache
from pktemu.netfilter.xtables import Ruleset, load_rules

ENDPOINTS = 5


def manifests_text(n: int, slices: bool) -> str:
    """N Services (and, with `slices`, an EndpointSlice of 5 ready endpoints each) as one YAML stream."""
    out = []
    for i in range(n):
        ip = f"10.{3 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"
        out.append(f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: ns{i % 10}}}\n"
                   f"spec:\n  clusterIP: {ip}\n  selector: {{app: svc-{i}}}\n"
                   "  ports:\n  - {name: http, protocol: TCP, port: 80, targetPort: 8080}\n")
        if slices:
            eps = "".join(f"- addresses: [\"10.{100 + e}.{i // 250 % 250}.{i % 250 + 1}\"]\n"
                          f"  conditions: {{ready: true}}\n  nodeName: node{e}\n" for e in range(ENDPOINTS))
            out.append("---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                       f"metadata:\n  name: svc-{i}-abc\n  namespace: ns{i % 10}\n"
                       f"  labels: {{kubernetes.io/service-name: svc-{i}}}\naddressType: IPv4\n"
                       f"ports:\n- {{name: http, protocol: TCP, port: 8080}}\nendpoints:\n{eps}")
    return "".join(out)


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def measure(n: int, repeat: int) -> dict[str, float]:
    out: dict[str, float] = {}
    services_only = manifests_text(n, slices=False)
    out["manifests_s"], _ = _best(lambda: manifests.load_text(services_only, "<bench>"), repeat)
    objs = manifests.load_text(manifests_text(n, slices=True), "<bench>")
    svcs = service_ports([o for o in objs if isinstance(o, Service)])
    eps = endpoints_map([o for o in objs if not isinstance(o, Service)], "node0")

    cache = LineCache()

    def sync() -> str:
        rs = Ruleset()
        text, _ = IptablesProxier(IptablesOptions(cluster_cidr="10.0.0.0/8")).sync(svcs, eps, rs)
        load_rules(text, "<kube-proxy>", ruleset=rs, noflush=True, cache=cache)
        return text

    out["sync_s"], text = _best(sync, 1)                     # the first node: nothing parsed yet
    out["sync_again_s"], _ = _best(sync, repeat)             # another node: its lines parsed before
    rules = sum(1 for ln in text.splitlines() if ln.startswith("-A"))
    out["rules"] = rules
    out["rules_load_s"], rs = _best(lambda: load_rules(text, "<rules>"), repeat)
    out["copy_s"], _ = _best(rs.copy, repeat)
    del rs
    gc.collect()
    tracemalloc.start()
    kept = load_rules(text, "<rules>")
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out["bytes_per_rule"] = current / rules
    del kept
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    r = measure(args.services, args.repeat)
    if args.json:
        print(json.dumps(r, indent=2, sort_keys=True))
        return
    n = args.services
    print(f"{n:,} Service manifests: {r['manifests_s']:.2f} s (goal 2 s at 10,000)")
    print(f"full kube-proxy sync, {n:,} x {ENDPOINTS}: {r['sync_s']:.2f} s, on another node "
          f"{r['sync_again_s']:.2f} s (goal 2 s)")
    print(f"load {r['rules']:,.0f} rules: {r['rules_load_s']:.2f} s (goal 1 s at 170k), "
          f"{r['bytes_per_rule']:.0f} B kept per rule (goal 500 B)")
    print(f"copy for another node sharing the file: {r['copy_s']:.2f} s")


if __name__ == "__main__":
    main()
