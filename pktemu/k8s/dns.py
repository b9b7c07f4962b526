"""Cluster DNS records as CoreDNS's `kubernetes` plugin serves them, read from the API server.

The names (`<domain>` is the cluster domain, cluster.local unless the Settings say otherwise):

* `<svc>.<ns>.svc.<domain>`: A = the ClusterIP; for a headless Service, the ready endpoint
  addresses (sorted, so runs are reproducible; CoreDNS gives informer order);
* `<ep>.<svc>.<ns>.svc.<domain>`: A of one endpoint, `<ep>` being its address with dashes;
* `_<port>._<proto>.<svc>.<ns>.svc.<domain>` and `<svc>.<ns>.svc.<domain>`: SRV, targets' A in
  the additional section;
* `<a-b-c-d>.<ns>.pod.<domain>`: A of the address in the name (`pods insecure`, as kubeadm's
  Corefile sets it; `verified` needs a Pod with that IP, `disabled` answers nothing);
* `<d.c.b.a>.in-addr.arpa`: PTR of a ClusterIP or a ready endpoint address.

An unknown name in the cluster domain is NXDOMAIN; a known name without records of the type
asked is NODATA (NOERROR, no answer). Both carry the zone's SOA in the authority section, as the
plugin's BackendError writes them. There is no upstream here: what CoreDNS would fall through
or forward (names outside the zones, reverse names it does not know) gets a non-authoritative
NXDOMAIN, as from an upstream that knows nothing.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pktemu.errors import PktemuError
from pktemu.k8s.objects import KINDS, EndpointSlice, Pod, Service
from pktemu.sim import EPOCH_NS, SECOND

if TYPE_CHECKING:
    from pktemu.k8s.apiserver import ApiServer

# RFC 1035 numbers; the k8s layer does not import the apps package (which imports this module)
TYPE_A, TYPE_SOA, TYPE_PTR, TYPE_AAAA, TYPE_SRV = 1, 6, 12, 28, 33
RCODE_NOERROR, RCODE_SERVFAIL, RCODE_NXDOMAIN = 0, 2, 3

DEFAULT_TTL = 5                      # the kubernetes plugin's `ttl` default (kube-dns used 30)
POD_MODES = ("disabled", "insecure", "verified")
REVERSE_ZONE = "in-addr.arpa"
#: namespaces every cluster has, whether or not an object of ours lives in them
BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
_SOA_TIMERS = (7200, 1800, 86400)    # refresh, retry, expire, as plugin.SOA writes them


@dataclass(frozen=True)
class Record:
    """One resource record. `data` by type: A/AAAA (address,), PTR (target,),
    SRV (priority, weight, port, target), SOA (mname, rname, serial, refresh, retry, expire, minimum)."""
    name: str
    rtype: int
    ttl: int
    data: tuple[Any, ...]


@dataclass
class Answer:
    rcode: int
    authoritative: bool = True
    answers: list[Record] = field(default_factory=list)
    authority: list[Record] = field(default_factory=list)
    additional: list[Record] = field(default_factory=list)


@dataclass(frozen=True)
class _Target:
    """msg.Service in CoreDNS: an address, a port (-1 when none is declared), the name it has."""
    host: str
    port: int
    key: str


class _NotFound(Exception):
    """The plugin's errNoItems / errInvalidRequest: the name does not exist (NXDOMAIN)."""


class ClusterDns:
    """The record logic of one CoreDNS instance over one API server."""

    def __init__(self, api: "ApiServer", domain: str | None = None, ttl: int = DEFAULT_TTL,
                 pods: str = "insecure") -> None:
        if pods not in POD_MODES:
            raise PktemuError(f"cluster DNS: pods must be one of {', '.join(POD_MODES)}, got {pods!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 3600:
            raise PktemuError(f"cluster DNS: ttl must be 0-3600 seconds, got {ttl!r}")
        self.api = api
        self.ttl = ttl
        self.pods = pods
        self.domain = _normalize(domain or api.settings.cluster_domain)
        self.modified_ns = api.sim.now
        self._watcher = self._changed
        for kind in KINDS:
            api.watch(kind, self._watcher)

    def close(self) -> None:
        self.api.unwatch(self._watcher)

    def _changed(self, _ev: str, _kind: str, _obj: Any) -> None:
        self.modified_ns = self.api.sim.now

    @property
    def serial(self) -> int:
        """The SOA serial: the Unix time of the last change seen, as the plugin's Modified()."""
        return ((EPOCH_NS + self.modified_ns) // SECOND) & 0xFFFFFFFF

    # ------------------------------------------------------------------ queries
    def lookup(self, qname: str, qtype: int) -> Answer:
        """The answer to one question; `qname` as asked (its case is kept in owner names)."""
        name = _normalize(qname)
        asked = qname.rstrip(".")
        zone = self._zone(name)
        if zone is None:
            return Answer(RCODE_NXDOMAIN, authoritative=False)
        zone_asked = asked[len(asked) - len(zone):]
        base = name[:len(name) - len(zone)].rstrip(".")
        if base == "" and qtype == TYPE_SOA:
            return Answer(RCODE_NOERROR, answers=[self._soa(zone_asked)])
        try:
            if zone == REVERSE_ZONE:
                answers = self._reverse(base, qtype, asked)
                extra: list[Record] = []
            else:
                answers, extra = self._forward(base, qtype, asked, zone)
        except _NotFound:
            if zone == REVERSE_ZONE:         # `fallthrough in-addr.arpa`: the upstream's business
                return Answer(RCODE_NXDOMAIN, authoritative=False)
            return Answer(RCODE_NXDOMAIN, authority=[self._soa(zone_asked)])
        if not answers:
            return Answer(RCODE_NOERROR, authority=[self._soa(zone_asked)])
        return Answer(RCODE_NOERROR, answers=answers, additional=extra)

    def _zone(self, name: str) -> str | None:
        for zone in sorted((self.domain, REVERSE_ZONE), key=len, reverse=True):
            if name == zone or name.endswith("." + zone):
                return zone
        return None

    def _soa(self, zone: str) -> Record:
        minimum = self.ttl
        return Record(zone, TYPE_SOA, min(minimum, 300),
                      (f"ns.dns.{zone}", f"hostmaster.{zone}", self.serial, *_SOA_TIMERS, minimum))

    def _forward(self, base: str, qtype: int, owner: str, zone: str) -> tuple[list[Record], list[Record]]:
        targets = self._targets(base, zone)
        if qtype in (TYPE_A, TYPE_AAAA):
            return self._addresses(targets, qtype, owner), []
        if qtype == TYPE_SRV:
            return self._srv(targets, owner)
        return [], []                        # the plugin's "fake A lookup": NODATA or NXDOMAIN

    def _addresses(self, targets: list[_Target], qtype: int, owner: str) -> list[Record]:
        out: list[Record] = []
        seen: set[str] = set()
        for t in targets:
            if _rtype_of(t.host) == qtype and t.host not in seen:
                seen.add(t.host)
                out.append(Record(owner, qtype, self.ttl, (t.host,)))
        return out

    def _srv(self, targets: list[_Target], owner: str) -> tuple[list[Record], list[Record]]:
        """plugin.SRV: weight 100/n (at least 1) at priority 0, one A per target in the extra."""
        weight = max(1, 100 // len(targets)) if targets else 0
        records: list[Record] = []
        extra: list[Record] = []
        seen: set[tuple[str, Any]] = set()
        for t in targets:
            if t.port == -1:
                continue
            if (t.key, t.port) not in seen:
                seen.add((t.key, t.port))
                records.append(Record(owner, TYPE_SRV, self.ttl, (0, weight, t.port, t.key)))
            if (t.key, t.host) not in seen:
                seen.add((t.key, t.host))
                extra.append(Record(t.key, _rtype_of(t.host), self.ttl, (t.host,)))
        return records, extra

    # ------------------------------------------------------------------ names -> objects
    def _targets(self, base: str, zone: str) -> list[_Target]:
        """parseRequest + findServices / findPods; raises _NotFound for NXDOMAIN."""
        if base in ("", "svc", "pod"):
            return []
        segs = base.split(".")
        kind = segs.pop()
        if kind not in ("svc", "pod"):
            raise _NotFound
        namespace = segs.pop()
        if namespace not in self._namespaces():
            raise _NotFound
        if not segs:
            return []
        service = segs.pop()
        endpoint = port = proto = ""
        if len(segs) == 1:
            endpoint = segs[0]
        elif len(segs) == 2:
            port, proto = segs[0].removeprefix("_"), segs[1].removeprefix("_")
        elif segs:
            raise _NotFound
        if kind == "pod":
            return self._pod(service, namespace, zone)
        svc = self.api.get("Service", f"{namespace}/{service}")
        if not isinstance(svc, Service):
            raise _NotFound
        if svc.headless or endpoint:
            found = self._endpoint_targets(svc, zone, endpoint, port, proto)
        else:
            found = self._cluster_ip_targets(svc, zone, port, proto)
        if found is None:
            raise _NotFound
        return found

    def _cluster_ip_targets(self, svc: Service, zone: str, port: str, proto: str) -> list[_Target] | None:
        """A port that matches makes the name exist, even before a ClusterIP is allocated (NODATA)."""
        key = f"{svc.meta.name}.{svc.meta.namespace}.svc.{zone}"
        found: list[_Target] | None = None
        for pname, pproto, pnum in [(p.name, p.protocol, p.port) for p in svc.ports] or [("", "", -1)]:
            if not (_match(port, pname) and _match(proto, pproto)):
                continue
            found = found if found is not None else []
            if svc.cluster_ip:
                found.append(_Target(svc.cluster_ip, pnum, key))
        return found

    def _endpoint_targets(self, svc: Service, zone: str, endpoint: str, port: str,
                          proto: str) -> list[_Target] | None:
        found: set[_Target] = set()
        for addr, ports in self._ready_addresses(svc):
            host = _dashed(addr)
            if endpoint and endpoint != host:
                continue
            key = f"{host}.{svc.meta.name}.{svc.meta.namespace}.svc.{zone}"
            for pname, pproto, pnum in ports:
                if _match(port, pname) and _match(proto, pproto):
                    found.add(_Target(addr, pnum, key))
        if not found:
            return None
        return sorted(found, key=lambda t: (_sort_key(t.host), t.port))

    def _ready_addresses(self, svc: Service) -> list[tuple[str, list[tuple[str, str, int]]]]:
        """(address, [(port name, protocol, port)]) of every ready endpoint of the Service's slices
        (ready unset counts as ready, as CoreDNS's slice conversion reads it)."""
        out: list[tuple[str, list[tuple[str, str, int]]]] = []
        for sl in self.api.list("EndpointSlice"):
            if not isinstance(sl, EndpointSlice) or sl.address_type not in ("IPv4", "IPv6"):
                continue
            if sl.service_name != svc.meta.name or sl.meta.namespace != svc.meta.namespace:
                continue
            ports = [(p.name, p.protocol, p.port) for p in sl.ports] or [("", "", -1)]
            for ep in sl.endpoints:
                if ep.conditions.ready is False:
                    continue
                out.extend((addr, ports) for addr in ep.addresses)
        return out

    def _pod(self, podname: str, namespace: str, zone: str) -> list[_Target]:
        if self.pods == "disabled":
            raise _NotFound
        if podname.count("-") == 3 and "--" not in podname:
            ip = podname.replace("-", ".")
        else:
            ip = podname.replace("-", ":")
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise _NotFound from None
        target = _Target(ip, -1, f"{podname}.{namespace}.pod.{zone}")
        if self.pods == "insecure":
            return [target]
        for pod in self.api.list("Pod"):
            if isinstance(pod, Pod) and pod.pod_ip == ip and pod.meta.namespace == namespace:
                return [target]
        raise _NotFound

    def _reverse(self, base: str, qtype: int, owner: str) -> list[Record]:
        """serviceRecordForIP: a ClusterIP first, else every ready endpoint with that address."""
        labels = base.split(".") if base else []
        if qtype != TYPE_PTR or len(labels) != 4 or not all(x.isdigit() for x in labels):
            raise _NotFound
        try:
            ip = str(ipaddress.IPv4Address(".".join(reversed(labels))))
        except ValueError:
            raise _NotFound from None
        names: list[str] = []
        for svc in self.api.list("Service"):
            if isinstance(svc, Service) and svc.cluster_ip == ip:
                names = [f"{svc.meta.name}.{svc.meta.namespace}.svc.{self.domain}"]
                break
        else:
            for svc in self.api.list("Service"):
                if not isinstance(svc, Service):
                    continue
                for addr, _ports in self._ready_addresses(svc):
                    name = f"{_dashed(addr)}.{svc.meta.name}.{svc.meta.namespace}.svc.{self.domain}"
                    if addr == ip and name not in names:
                        names.append(name)
        if not names:
            raise _NotFound
        return [Record(owner, TYPE_PTR, self.ttl, (n,)) for n in names]

    def _namespaces(self) -> set[str]:
        ns = set(BUILTIN_NAMESPACES)
        for kind in KINDS:
            ns.update(o.meta.namespace for o in self.api.list(kind))
        return ns


def _normalize(name: str) -> str:
    return name.rstrip(".").lower()


def _match(asked: str, have: str) -> bool:
    """An empty label in the question matches anything; otherwise case-insensitive equality."""
    return not asked or asked.lower() == have.lower()


def _dashed(addr: str) -> str:
    return addr.replace(".", "-").replace(":", "-")


def _rtype_of(host: str) -> int:
    return TYPE_AAAA if ":" in host else TYPE_A


def _sort_key(host: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(host)
    return ip.version, int(ip)
