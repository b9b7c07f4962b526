"""A topology's interface `type:`s other than veth: each tunnel device's own keys, read as the
`ip link add ... type T` and `ip tunnel` words they stand for (pktemu.net.device.DEVICE_KINDS builds
the devices)."""
from __future__ import annotations

from typing import Any, Callable

from pktemu.io.topofile_fields import Src, boolean, integer, interface_name, ipv4, mac, mapping, seq

ZERO_MAC = "00:00:00:00:00:00"


def _vxlan_params(src: Src, at: str, m: dict[str, Any]) -> dict[str, Any]:
    """`ip link add NAME type vxlan id VNI [local A] [dev D] [dstport P] [nolearning] ...`, plus
    the device's `bridge fdb append` and `ip neigh add ... nud permanent` entries."""
    if m.get("vni") is None:
        raise src.error(f"{at}.vni", "required for a vxlan interface (ip link add ... type vxlan id VNI)")
    p: dict[str, Any] = {"vni": integer(src, f"{at}.vni", m["vni"], 0, 2**24 - 1)}
    if m.get("dstport") is not None:
        p["dstport"] = integer(src, f"{at}.dstport", m["dstport"], 1, 65535)
    if m.get("local") is not None:
        p["local"] = str(ipv4(src, f"{at}.local", m["local"]))
    if m.get("dev") is not None:
        p["dev"] = interface_name(src, f"{at}.dev", m["dev"])
    for key in ("learning", "udpcsum"):
        if m.get(key) is not None:
            p[key] = boolean(src, f"{at}.{key}", m[key])
    if m.get("ttl") is not None:
        p["ttl"] = integer(src, f"{at}.ttl", m["ttl"], 1, 255)
    p["fdb"] = []
    for i, e in enumerate(seq(src, f"{at}.fdb", m.get("fdb"))):
        em = mapping(src, f"{at}.fdb[{i}]", e, required=("mac", "dst"))
        zero = str(em["mac"]).lower() == ZERO_MAC       # the default entry: every unknown MAC
        p["fdb"].append({"mac": ZERO_MAC if zero else mac(src, f"{at}.fdb[{i}].mac", em["mac"]),
                         "dst": str(ipv4(src, f"{at}.fdb[{i}].dst", em["dst"]))})
    p["neighbours"] = []
    for i, e in enumerate(seq(src, f"{at}.neighbours", m.get("neighbours"))):
        em = mapping(src, f"{at}.neighbours[{i}]", e, required=("ip", "lladdr"))
        p["neighbours"].append({"ip": str(ipv4(src, f"{at}.neighbours[{i}].ip", em["ip"])),
                                "lladdr": mac(src, f"{at}.neighbours[{i}].lladdr", em["lladdr"])})
    return p


def _ipip_params(src: Src, at: str, m: dict[str, Any]) -> dict[str, Any]:
    """The ipip module's fallback `tunl0` (remote any, local any), with `ip tunnel change tunl0
    [ttl N] [pmtudisc]`; by default `ttl inherit nopmtudisc`."""
    if not at.endswith(".tunl0"):
        raise src.error(at, "an ipip interface is the ipip module's fallback device, named tunl0 "
                            "(remote any, local any)")
    p: dict[str, Any] = {}
    if m.get("pmtudisc") is not None:
        p["pmtudisc"] = boolean(src, f"{at}.pmtudisc", m["pmtudisc"])
    if m.get("ttl") is not None:
        p["ttl"] = integer(src, f"{at}.ttl", m["ttl"], 1, 255)
        if not p.get("pmtudisc"):
            raise src.error(f"{at}.ttl", "a fixed ttl needs pmtudisc: true (ip tunnel: ttl != 0 and "
                                         "nopmtudisc are incompatible)")
    return p


#: interface `type:` -> (its own keys, their parser); pktemu.net.device.DEVICE_KINDS builds them
LINK_TYPES: dict[str, tuple[tuple[str, ...], Callable[[Src, str, dict[str, Any]], dict[str, Any]] | None]] = {
    "veth": ((), None),
    "vxlan": (("vni", "dstport", "local", "dev", "learning", "udpcsum", "ttl", "fdb", "neighbours"),
              _vxlan_params),
    "ipip": (("ttl", "pmtudisc"), _ipip_params),
}
