"""`pktemu import --redact`: node, pod and namespace names and public addresses replaced, the
same way everywhere (topology, rules files, manifests), from a seeded mapping.

Public (globally routable) IPv4 addresses are mapped prefix-preservingly: two addresses that
share their first k bits still do after mapping, so subnets, gateways and CIDRs in rules stay
consistent. The first octet goes through a permutation of the octets that hold only public
space and the rest through keyed bit flips; in the octets that also hold private space (10,
100, 127, 169, 172, 192, 198, 203) only the last 16 bits change, so a public address never
lands on a private one. RFC 1918 and other special addresses are kept: they say nothing
outside the cluster.
"""
from __future__ import annotations

import hashlib
import ipaddress
import random
import re
from typing import Any

MIXED = {0, 10, 100, 127, 169, 172, 192, 198, 203}
KEEP_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}
_ADDR = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(/\d{1,2})?(?!\.?\d)")
_COMMENT_NS = re.compile(r'(--comment "?)([a-z0-9][a-z0-9-]*)/')


class Redactor:
    def __init__(self, seed: int) -> None:
        self.key = str(seed).encode()
        pure = [o for o in range(1, 224) if o not in MIXED]
        shuffled = pure[:]
        random.Random(seed).shuffle(shuffled)
        self.octet = dict(zip(pure, shuffled, strict=True))
        self.nodes: dict[str, str] = {}
        self.pods: dict[str, str] = {}
        self.namespaces: dict[str, str] = {}
        self._cache: dict[int, int] = {}

    # ------------------------------------------------------------------ names
    def node(self, name: str) -> str:
        return self.nodes.setdefault(name, f"node-{len(self.nodes) + 1}")

    def pod(self, name: str) -> str:
        return self.pods.setdefault(name, f"pod-{len(self.pods) + 1}")

    def namespace(self, ns: str) -> str:
        if ns in KEEP_NAMESPACES:
            return ns
        return self.namespaces.setdefault(ns, f"ns-{len(self.namespaces) + 1}")

    # ------------------------------------------------------------------ addresses
    def _bit(self, tag: str, i: int, prefix: int) -> int:
        return hashlib.sha256(self.key + f"|{tag}|{i}|{prefix}".encode()).digest()[0] & 1

    def _flip(self, value: int, bits: int, tag: str) -> int:
        out = 0
        for i in range(bits):
            shift = bits - 1 - i
            prefix = value >> (shift + 1)
            bit = (value >> shift) & 1
            out = (out << 1) | (bit ^ self._bit(tag, i, prefix))
        return out

    def ip_int(self, a: int) -> int:
        if a not in self._cache:
            top = a >> 24
            if top in self.octet:
                self._cache[a] = (self.octet[top] << 24) | self._flip(a & 0xFFFFFF, 24, f"o{top}")
            else:
                self._cache[a] = (a & 0xFFFF0000) | self._flip(a & 0xFFFF, 16, f"h{a >> 16}")
        return self._cache[a]

    def _address(self, m: re.Match[str]) -> str:
        text, plen = m.group(1), m.group(2)
        try:
            addr = ipaddress.IPv4Address(text)
        except ValueError:
            return m.group(0)
        if not addr.is_global:
            return m.group(0)
        new = self.ip_int(int(addr))
        if plen is not None:
            n = int(plen[1:])
            if n <= 32 and int(addr) & ((1 << (32 - n)) - 1) == 0:     # a network: keep it one
                new &= (0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF
        return str(ipaddress.IPv4Address(new)) + (plen or "")

    def text(self, s: str) -> str:
        return _ADDR.sub(self._address, s)

    def rules(self, s: str) -> str:
        s = self.text(s)
        return _COMMENT_NS.sub(lambda m: m.group(1) + self.namespace(m.group(2)) + "/", s)

    def values(self, v: Any) -> Any:
        """Every string inside `v` with its addresses mapped."""
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, list):
            return [self.values(x) for x in v]
        if isinstance(v, dict):
            return {self.values(k) if isinstance(k, str) else k: self.values(x) for k, x in v.items()}
        return v

    # ------------------------------------------------------------------ objects
    def topology(self, topo: dict[str, Any], pod_names: dict[str, str]) -> dict[str, Any]:
        """Node and pod keys and every reference to them renamed; `pod_names` maps a topology pod
        name to the Pod's redacted name."""
        t = dict(topo)
        t["nodes"] = {self.node(n) if n in self.nodes else n: v for n, v in topo["nodes"].items()}
        for v in t["nodes"].values():
            if "iptables" in v:
                v["iptables"] = f"{self._file_node(v['iptables'])}.iptables"
            if "nftables" in v:
                v["nftables"] = f"{self._file_node(v['nftables'].removesuffix('.nft'))}.nft"
        if "pods" in topo:
            t["pods"] = {pod_names[p]: {**v, "node": self.nodes.get(v["node"], v["node"])}
                         for p, v in topo["pods"].items()}
        t["veths"] = [[self._end(e) for e in pair] for pair in topo.get("veths", [])]
        k = t.get("kubernetes")
        if isinstance(k, dict) and "pod_cidrs" in k:
            t["kubernetes"] = {**k, "pod_cidrs": {self.nodes.get(n, n): c for n, c in k["pod_cidrs"].items()}}
        return dict(self.values(t))

    def _file_node(self, fname: str) -> str:
        node = fname.removesuffix(".iptables")
        return self.nodes.get(node, node)

    def _end(self, end: str) -> str:
        n, _, ifn = end.partition("/")
        return f"{self.nodes.get(n, n)}/{ifn}"

    def object(self, obj: dict[str, Any], pod_names: dict[str, str]) -> dict[str, Any]:
        """A manifest object with its namespace, Pod names and node names replaced."""
        o: dict[str, Any] = self.values(obj)
        meta = o.get("metadata") or {}
        ns = str(meta.get("namespace") or "default")
        if "namespace" in meta or ns != "default":
            meta["namespace"] = self.namespace(ns)
        if o.get("kind") == "Pod":
            meta["name"] = self.pod(f"{ns}/{meta.get('name')}")
            ann = meta.get("annotations") or {}
            if "pktemu.io/netns" in ann:
                ann["pktemu.io/netns"] = pod_names[ann["pktemu.io/netns"]]
            spec = o.get("spec") or {}
            if "nodeName" in spec:
                spec["nodeName"] = self.nodes.get(spec["nodeName"], self.node(spec["nodeName"]))
        for ep in (o.get("endpoints") or []) if o.get("kind") == "EndpointSlice" else []:
            self._ref(ep, ns)
        for sub in (o.get("subsets") or []) if o.get("kind") == "Endpoints" else []:
            for ep in (sub.get("addresses") or []) + (sub.get("notReadyAddresses") or []):
                self._ref(ep, ns)
        return o

    def _ref(self, ep: Any, ns: str) -> None:
        if not isinstance(ep, dict):
            return
        if isinstance(ep.get("nodeName"), str):
            ep["nodeName"] = self.node(ep["nodeName"])
        ref = ep.get("targetRef")
        if isinstance(ref, dict) and ref.get("kind") == "Pod" and isinstance(ref.get("name"), str):
            rns = str(ref.get("namespace") or ns)
            ref["name"] = self.pod(f"{rns}/{ref['name']}")
            if "namespace" in ref:
                ref["namespace"] = self.namespace(rns)
