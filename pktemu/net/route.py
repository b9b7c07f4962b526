"""IPv4 routing tables (`main` and the numbered ones of pktemu.net.fib_rules), longest prefix first.

Lookups are one dict probe per prefix length that is present (at most 33), never a scan of
all routes, so a node with thousands of routes costs the same as one with three.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from pktemu.net.frame import int2ip

RT_SCOPE_UNIVERSE = "global"
RT_SCOPE_LINK = "link"
RT_SCOPE_HOST = "host"


def prefix_mask(plen: int) -> int:
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0


@dataclass(frozen=True)
class Route:
    prefix: int
    plen: int
    dev: str
    gateway: int | None = None
    src: int | None = None
    scope: str = RT_SCOPE_UNIVERSE
    metric: int = 0
    proto: str = "static"      # "kernel" for connected routes, as `ip route` shows
    onlink: bool = False
    table: int = 254           # RT_TABLE_MAIN; pktemu.net.fib_rules holds the others
    type: str = "unicast"      # or blackhole | unreachable | prohibit | throw (no device used)
    #: a route a timeline added ("added at 2.000 s by ip route add"): routing notes say so
    why: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.text

    @cached_property
    def text(self) -> str:
        """`ip route` syntax, built once: routing notes quote it for every forwarded packet."""
        dst = "default" if self.plen == 0 else f"{int2ip(self.prefix)}/{self.plen}"
        s = dst if self.type == "unicast" else f"{self.type} {dst}"
        if self.type != "unicast":
            return s + (f" metric {self.metric}" if self.metric else "")
        if self.gateway is not None:
            s += f" via {int2ip(self.gateway)}"
        s += f" dev {self.dev}"
        if self.proto == "kernel":
            s += " proto kernel"
        if self.scope != RT_SCOPE_UNIVERSE:
            s += f" scope {self.scope}"
        if self.src is not None:
            s += f" src {int2ip(self.src)}"
        if self.metric:
            s += f" metric {self.metric}"
        if self.onlink:
            s += " onlink"
        return s


class RouteTable:
    """The main table: longest-prefix match, then lowest metric, then insertion order."""

    def __init__(self) -> None:
        self._by_len: dict[int, dict[int, list[Route]]] = {}
        self._lens: list[int] = []
        #: (netmask, its bucket) per prefix length present, longest first: what a lookup probes
        self._probes: list[tuple[int, dict[int, list[Route]]]] = []

    def _index(self) -> None:
        self._lens = sorted(self._by_len, reverse=True)
        self._probes = [(prefix_mask(plen), self._by_len[plen]) for plen in self._lens]

    def add(self, route: Route) -> None:
        bucket = self._by_len.get(route.plen)
        if bucket is None:
            bucket = self._by_len[route.plen] = {}
            self._index()
        routes = bucket.setdefault(route.prefix & prefix_mask(route.plen), [])
        routes.append(route)
        routes.sort(key=lambda r: r.metric)

    def remove(self, route: Route) -> bool:
        """`ip route del`: take out the first route equal to `route`; False when there is none."""
        bucket = self._by_len.get(route.plen, {})
        routes = bucket.get(route.prefix & prefix_mask(route.plen))
        if not routes or route not in routes:
            return False
        routes.remove(route)
        if not routes:
            del bucket[route.prefix & prefix_mask(route.plen)]
            if not bucket:
                del self._by_len[route.plen]
                self._index()
        return True

    def lookup(self, daddr: int) -> Route | None:
        for mask, bucket in self._probes:
            routes = bucket.get(daddr & mask)
            if routes:
                return routes[0]
        return None

    def routes(self) -> list[Route]:
        return [r for plen in self._lens for rs in self._by_len[plen].values() for r in rs]
