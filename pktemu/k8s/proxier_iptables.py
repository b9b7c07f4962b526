"""kube-proxy's iptables mode: a port of pkg/proxy/iptables/proxier.go syncProxyRules (v1.28).

Each sync writes one `iptables-restore --noflush` input with the filter and nat tables: the
top-level KUBE-* chains and each service port's chains (pktemu.k8s.iptables_service). As
upstream, chains of services that did not change since the last sync are left out (a partial
sync) unless a full sync is due, stale service chains are deleted with `-X`, and the jumps from
the built-in chains are ensured separately (inserted at the top when missing), since a restore
must not replace the built-in chains.

`variant="kernel-oracle"` reproduces the kernel oracle's rules (tests/data/oracle/reference/rules):
MASQUERADE without `--random-fully` and no KUBE-FIREWALL (kubelet's localnet rule); everything else
is upstream's.
"""
from __future__ import annotations

from pktemu.k8s.iptables_service import (   # noqa: F401 (chain names: what callers of the proxier use)
    _NONE, IptablesOptions, ServiceLines, sep_chain, service_rules, svc_chain,
)
from pktemu.k8s.proxy_state import EndpointsMap, ServicePortMap, StaleUdp, stale_udp
from pktemu.netfilter.xt_parse import parse_line, tokenize
from pktemu.netfilter.xt_base import ParseCtx
from pktemu.netfilter.xtables import Ruleset

FILTER_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS",
                 "KUBE-PROXY-FIREWALL")
MASQ_MARK = "0x004000"            # fmt.Sprintf("%#08x", 1 << 14), as NewProxier formats it
LARGE_CLUSTER_ENDPOINTS = 1000
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-FW-", "KUBE-EXT-")

# (table, destination chain, source chain, comment, extra args): iptablesJumpChains, in order.
_NEW = "-m conntrack --ctstate NEW"
JUMPS: tuple[tuple[str, str, str, str, str], ...] = (
    ("filter", "KUBE-EXTERNAL-SERVICES", "INPUT", "kubernetes externally-visible service portals", _NEW),
    ("filter", "KUBE-EXTERNAL-SERVICES", "FORWARD", "kubernetes externally-visible service portals", _NEW),
    ("filter", "KUBE-NODEPORTS", "INPUT", "kubernetes health check service ports", ""),
    ("filter", "KUBE-SERVICES", "FORWARD", "kubernetes service portals", _NEW),
    ("filter", "KUBE-SERVICES", "OUTPUT", "kubernetes service portals", _NEW),
    ("filter", "KUBE-FORWARD", "FORWARD", "kubernetes forwarding rules", ""),
    ("filter", "KUBE-PROXY-FIREWALL", "INPUT", "kubernetes load balancer firewall", _NEW),
    ("filter", "KUBE-PROXY-FIREWALL", "OUTPUT", "kubernetes load balancer firewall", _NEW),
    ("filter", "KUBE-PROXY-FIREWALL", "FORWARD", "kubernetes load balancer firewall", _NEW),
    ("nat", "KUBE-SERVICES", "OUTPUT", "kubernetes service portals", ""),
    ("nat", "KUBE-SERVICES", "PREROUTING", "kubernetes service portals", ""),
    ("nat", "KUBE-POSTROUTING", "POSTROUTING", "kubernetes postrouting rules", ""),
)
KUBELET_JUMPS: tuple[tuple[str, str, str, str, str], ...] = (
    ("filter", "KUBE-FIREWALL", "INPUT", "", ""),
    ("filter", "KUBE-FIREWALL", "OUTPUT", "", ""),
)


class IptablesProxier:
    """The state kept between syncs: the maps of the last sync and whether the next must be full."""

    def __init__(self, opts: IptablesOptions, shared: "ServiceLines | None" = None) -> None:
        self.opts = opts
        self.shared = shared
        self.svc_map: ServicePortMap = {}
        self.eps_map: EndpointsMap = {}
        self.need_full_sync = True

    def sync(self, svcs: ServicePortMap, eps: EndpointsMap, ruleset: Ruleset) -> tuple[str, StaleUdp]:
        """The restore text for the new state and the stale UDP conntrack entries to delete."""
        full = self.need_full_sync
        changed = None if full else _changed_services(self.svc_map, svcs, self.eps_map, eps)
        text = render(svcs, eps, self.opts, ruleset, changed, self.shared)
        stale = stale_udp(self.svc_map, svcs, self.eps_map, eps)
        self.svc_map, self.eps_map = dict(svcs), {k: list(v) for k, v in eps.items()}
        self.need_full_sync = False
        return text, stale


def _changed_services(old_s: ServicePortMap, new_s: ServicePortMap, old_e: EndpointsMap,
                      new_e: EndpointsMap) -> set[str]:
    """serviceChanges/endpointsChanges.PendingChanges(): "ns/name" of every Service whose ports or
    endpoints differ from the last sync."""
    out: set[str] = set()
    for spn in set(old_s) | set(new_s) | set(old_e) | set(new_e):
        if old_s.get(spn) != new_s.get(spn) or old_e.get(spn) != new_e.get(spn):
            out.add(spn.service)
    return out


class _Buf(list[str]):
    """Lines of one section; `write` joins the non-empty parts (the per-service loop appends whole lines)."""

    def write(self, *parts: str) -> None:
        self.append(" ".join(p for p in parts if p))


def render(svcs: ServicePortMap, eps: EndpointsMap, opts: IptablesOptions, ruleset: Ruleset | None,
           changed: set[str] | None = None, shared: "ServiceLines | None" = None) -> str:
    """syncProxyRules' iptables-restore input. `changed` None means a full sync; otherwise the
    KUBE-SVC/SVL/EXT/FW/SEP chains of services not in it are left out. `shared`: the lines of
    services made by other nodes' syncs, for the services whose lines are alike on every node."""
    f_chains, f_rules, n_chains, n_rules = _Buf(), _Buf(), _Buf(), _Buf()
    for c in FILTER_CHAINS:
        f_chains.write(f":{c} - [0:0]")
    for c in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"):
        n_chains.write(f":{c} - [0:0]")
    n_rules.write("-A KUBE-POSTROUTING -m mark ! --mark", f"{MASQ_MARK}/{MASQ_MARK}", "-j RETURN")
    n_rules.write("-A KUBE-POSTROUTING -j MARK --xor-mark", MASQ_MARK)
    n_rules.write('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
                  "-j MASQUERADE", "--random-fully" if opts.random_fully else "")
    n_rules.write("-A KUBE-MARK-MASQ -j MARK --or-mark", MASQ_MARK)
    if opts.localhost_nodeports and opts.kubelet_firewall:
        f_chains.write(":KUBE-FIREWALL - [0:0]")
        f_rules.write('-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" '
                      "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT "
                      "-j DROP")
    active: set[str] = set()
    large = sum(len(eps.get(spn, [])) for spn in svcs) > LARGE_CLUSTER_ENDPOINTS
    for spn, svc in svcs.items():
        skip = changed is not None and spn.service not in changed
        if shared is not None and not svc.uses_local_endpoints:
            shared.service(spn, svc, eps.get(spn, _NONE), opts, large, active, f_rules, n_chains, n_rules,
                           skip)
        else:
            service_rules(spn, svc, eps.get(spn, []), opts, large, active, f_rules, n_chains, n_rules, skip)
    if ruleset is not None and ruleset.has_table("nat"):
        for name in sorted(ruleset.view("nat").chains):
            if name.startswith(SERVICE_CHAIN_PREFIXES) and name not in active:
                n_chains.write(f":{name} - [0:0]")
                n_rules.write("-X", name)
    dest = "-m addrtype --dst-type LOCAL" + ("" if opts.localhost_nodeports else " ! -d 127.0.0.0/8")
    n_rules.write('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
                  'the last rule in this chain"', dest, "-j KUBE-NODEPORTS")
    f_rules.write("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP")
    f_rules.write('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark',
                  f"{MASQ_MARK}/{MASQ_MARK}", "-j ACCEPT")
    f_rules.write('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
                  "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    jumps = JUMPS + (KUBELET_JUMPS if opts.localhost_nodeports and opts.kubelet_firewall else ())
    missing = missing_jumps(ruleset, jumps) if changed is None else {}
    out = ["*filter", *f_chains, *missing.get("filter", []), *f_rules, "COMMIT",
           "*nat", *n_chains, *missing.get("nat", []), *n_rules, "COMMIT"]
    return shared.text(out) if shared is not None else "\n".join(out) + "\n"


def missing_jumps(ruleset: Ruleset | None, jumps: tuple[tuple[str, str, str, str, str], ...]
                  ) -> dict[str, list[str]]:
    """EnsureRule(Prepend, ...) for each jump: `-I SRC 1 ...` lines for the jumps not there yet."""
    out: dict[str, list[str]] = {}
    for table, dst, src, comment, extra in jumps:
        comment_args = f'-m comment --comment "{comment}"' if comment else ""
        args = " ".join(a for a in (extra, comment_args, f"-j {dst}") if a)
        if not rule_exists(ruleset, table, src, args):
            out.setdefault(table, []).append(f"-I {src} 1 {args}")
    return out


def rule_exists(ruleset: Ruleset | None, table: str, chain: str, args: str) -> bool:
    """iptables -C: is a rule with these arguments (compared as iptables-save prints them) there?"""
    if ruleset is None or not ruleset.has_table(table) or chain not in ruleset.view(table).chains:
        return False
    where = "<kube-proxy>"
    cmd = parse_line(tokenize(f"-A {chain} {args}", where), ParseCtx(where, table, ""))
    want = cmd.rules[0].body
    return any(r.body == want for r in ruleset.view(table).chains[chain].rules)
