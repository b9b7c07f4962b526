"""Upstream kube-proxy packet-flow cases, part 3: terminating endpoints and session affinity.

Rulesets and cases as in the iptables proxier tests (danwinship/kubernetes@07fb8ceb,
pkg/proxy/iptables/rules_test.go: TestTerminatingEndpointsTrafficPolicyLocal and ...Cluster, four
EndpointSlices each); see test_kube_tracer_upstream_lb for how they are converted. These Services
have ClientIP session affinity, so every KUBE-SVC chain starts with `recent --rcheck` rules that
a first packet never matches. The "after endpoints deleted" cases are ported only where upstream
asserts that the ruleset did not change (no usable endpoints); elsewhere the test holds no text
of the ruleset they run against.
"""
# ruff: noqa: E501  (rulesets are kept line for line as upstream prints them)
from __future__ import annotations

import pytest

from pktemu.explain.kube import load_kube_restore, trace_kube_packet

NODE = "192.168.0.2"
EXT = "203.0.113.2"

_HEALTH = '-A KUBE-NODEPORTS -m comment --comment "ns1/svc1 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT\n'
_FILTER_HEAD = """\
*filter
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
"""
_FILTER_TAIL = """\
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
"""
_NAT_NO_ENDPOINTS = """\
*nat
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
COMMIT
"""
_NAT_COMMON = """\
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
"""
_SERVICES = """\
-A KUBE-SERVICES -m comment --comment "ns1/svc1 cluster IP" -m tcp -p tcp -d 172.30.1.1 --dport 80 -j KUBE-SVC-AQI2S6QIMU7PVVRP
-A KUBE-SERVICES -m comment --comment "ns1/svc1 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j KUBE-EXT-AQI2S6QIMU7PVVRP
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
"""
_EXT_LOCAL = """\
-A KUBE-EXT-AQI2S6QIMU7PVVRP -m comment --comment "pod traffic for ns1/svc1 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-AQI2S6QIMU7PVVRP
-A KUBE-EXT-AQI2S6QIMU7PVVRP -m comment --comment "masquerade LOCAL traffic for ns1/svc1 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-AQI2S6QIMU7PVVRP -m comment --comment "route LOCAL traffic for ns1/svc1 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-AQI2S6QIMU7PVVRP
"""
_EXT_CLUSTER = """\
-A KUBE-EXT-AQI2S6QIMU7PVVRP -m comment --comment "masquerade traffic for ns1/svc1 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-AQI2S6QIMU7PVVRP -j KUBE-SVC-AQI2S6QIMU7PVVRP
"""
_SVC_MASQ = '-A KUBE-SVC-AQI2S6QIMU7PVVRP -m comment --comment "ns1/svc1 cluster IP" -m tcp -p tcp -d 172.30.1.1 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ\n'


def _sep(name: str, ip: str) -> str:
    """A KUBE-SEP chain's two rules exactly as these dumps print them (affinity: recent --set)."""
    return (f"-A KUBE-SEP-{name} -m comment --comment ns1/svc1 -s {ip} -j KUBE-MARK-MASQ\n"
            f"-A KUBE-SEP-{name} -m comment --comment ns1/svc1 -m recent --name KUBE-SEP-{name} --set "
            f"-m tcp -p tcp -j DNAT --to-destination {ip}:80\n")


def _affinity(chain: str, name: str, ip: str) -> str:
    return (f'-A {chain} -m comment --comment "ns1/svc1 -> {ip}:80" -m recent --name KUBE-SEP-{name} '
            f"--rcheck --seconds 10800 --reap -j KUBE-SEP-{name}\n")


def _pick(chain: str, name: str, ip: str, probability: str | None) -> str:
    stat = f" -m statistic --mode random --probability {probability}" if probability else ""
    return f'-A {chain} -m comment --comment "ns1/svc1 -> {ip}:80"{stat} -j KUBE-SEP-{name}\n'


def _chains(*names: str) -> str:
    return "*nat\n" + "".join(f":{n} - [0:0]\n" for n in names)


SVC, SVL = "KUBE-SVC-AQI2S6QIMU7PVVRP", "KUBE-SVL-AQI2S6QIMU7PVVRP"
E1, E2, E3, E5 = "3JOIVZTXZZRGORX4", "IO5XOSKPAXIFQXAJ", "XGJFVO3L2O5SRFNT", "EQCHZ7S2PJ72OHAY"
BASE = ("KUBE-NODEPORTS", "KUBE-SERVICES", "KUBE-EXT-AQI2S6QIMU7PVVRP", "KUBE-MARK-MASQ", "KUBE-POSTROUTING")

RULES: dict[str, str] = {}

RULES["Local/ready endpoints exist"] = (
    _FILTER_HEAD + _HEALTH + _FILTER_TAIL
    + _chains(*BASE, f"KUBE-SEP-{E1}", f"KUBE-SEP-{E5}", f"KUBE-SEP-{E2}", SVC, SVL)
    + _SERVICES + _EXT_LOCAL + f"-A KUBE-EXT-AQI2S6QIMU7PVVRP -j {SVL}\n" + _NAT_COMMON
    + _sep(E1, "10.0.1.1") + _sep(E5, "10.0.1.5") + _sep(E2, "10.0.1.2") + _SVC_MASQ
    + _affinity(SVC, E1, "10.0.1.1") + _affinity(SVC, E2, "10.0.1.2") + _affinity(SVC, E5, "10.0.1.5")
    + _pick(SVC, E1, "10.0.1.1", "0.3333333333") + _pick(SVC, E2, "10.0.1.2", "0.5000000000")
    + _pick(SVC, E5, "10.0.1.5", None)
    + _affinity(SVL, E1, "10.0.1.1") + _affinity(SVL, E2, "10.0.1.2")
    + _pick(SVL, E1, "10.0.1.1", "0.5000000000") + _pick(SVL, E2, "10.0.1.2", None) + "COMMIT\n")

RULES["Local/only terminating endpoints exist"] = (
    _FILTER_HEAD + _HEALTH + _FILTER_TAIL
    + _chains(*BASE, f"KUBE-SEP-{E5}", f"KUBE-SEP-{E2}", f"KUBE-SEP-{E3}", SVC, SVL)
    + _SERVICES + _EXT_LOCAL + f"-A KUBE-EXT-AQI2S6QIMU7PVVRP -j {SVL}\n" + _NAT_COMMON
    + _sep(E5, "10.0.1.5") + _sep(E2, "10.0.1.2") + _sep(E3, "10.0.1.3") + _SVC_MASQ
    + _affinity(SVC, E5, "10.0.1.5") + _pick(SVC, E5, "10.0.1.5", None)
    + _affinity(SVL, E2, "10.0.1.2") + _affinity(SVL, E3, "10.0.1.3")
    + _pick(SVL, E2, "10.0.1.2", "0.5000000000") + _pick(SVL, E3, "10.0.1.3", None) + "COMMIT\n")

RULES["Local/terminating endpoints on remote node"] = (
    _FILTER_HEAD + _HEALTH
    + '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1 has no local endpoints" -m tcp -p tcp '
      "-d 1.2.3.4 --dport 80 -j DROP\n" + _FILTER_TAIL
    + _chains(*BASE, f"KUBE-SEP-{E5}", SVC)
    + _SERVICES + _EXT_LOCAL + _NAT_COMMON + _sep(E5, "10.0.1.5") + _SVC_MASQ
    + _affinity(SVC, E5, "10.0.1.5") + _pick(SVC, E5, "10.0.1.5", None) + "COMMIT\n")

_REJECTS = (
    '-A KUBE-SERVICES -m comment --comment "ns1/svc1 has no endpoints" -m tcp -p tcp -d 172.30.1.1 --dport 80 '
    "-j REJECT\n"
    '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1 has no endpoints" -m tcp -p tcp -d 1.2.3.4 '
    "--dport 80 -j REJECT\n")

RULES["Local/no usable endpoints on any node"] = (
    _FILTER_HEAD + _HEALTH + _REJECTS + _FILTER_TAIL + _NAT_NO_ENDPOINTS)

RULES["Cluster/ready endpoints exist"] = (
    _FILTER_HEAD + _FILTER_TAIL
    + _chains(*BASE, f"KUBE-SEP-{E1}", f"KUBE-SEP-{E5}", f"KUBE-SEP-{E2}", SVC)
    + _SERVICES + _EXT_CLUSTER + _NAT_COMMON
    + _sep(E1, "10.0.1.1") + _sep(E5, "10.0.1.5") + _sep(E2, "10.0.1.2") + _SVC_MASQ
    + _affinity(SVC, E1, "10.0.1.1") + _affinity(SVC, E2, "10.0.1.2") + _affinity(SVC, E5, "10.0.1.5")
    + _pick(SVC, E1, "10.0.1.1", "0.3333333333") + _pick(SVC, E2, "10.0.1.2", "0.5000000000")
    + _pick(SVC, E5, "10.0.1.5", None) + "COMMIT\n")

RULES["Cluster/only terminating endpoints exist"] = (
    _FILTER_HEAD + _FILTER_TAIL
    + _chains(*BASE, f"KUBE-SEP-{E5}", f"KUBE-SEP-{E2}", f"KUBE-SEP-{E3}", SVC)
    + _SERVICES + _EXT_CLUSTER + _NAT_COMMON
    + _sep(E5, "10.0.1.5") + _sep(E2, "10.0.1.2") + _sep(E3, "10.0.1.3") + _SVC_MASQ
    + _affinity(SVC, E2, "10.0.1.2") + _affinity(SVC, E3, "10.0.1.3") + _affinity(SVC, E5, "10.0.1.5")
    + _pick(SVC, E2, "10.0.1.2", "0.3333333333") + _pick(SVC, E3, "10.0.1.3", "0.5000000000")
    + _pick(SVC, E5, "10.0.1.5", None) + "COMMIT\n")

RULES["Cluster/terminating endpoints on remote node"] = (
    _FILTER_HEAD + _FILTER_TAIL
    + _chains(*BASE, f"KUBE-SEP-{E5}", SVC)
    + _SERVICES + _EXT_CLUSTER + _NAT_COMMON + _sep(E5, "10.0.1.5") + _SVC_MASQ
    + _affinity(SVC, E5, "10.0.1.5") + _pick(SVC, E5, "10.0.1.5", None) + "COMMIT\n")

RULES["Cluster/no usable endpoints on any node"] = _FILTER_HEAD + _REJECTS + _FILTER_TAIL + _NAT_NO_ENDPOINTS

POD, LB = ("10.0.0.2", "172.30.1.1"), (EXT, "1.2.3.4")

# (subtest, case name, (source, destination), output, masquerade); all to port 80/tcp
CASES = [
    ("Local/ready endpoints exist", "pod to clusterIP", POD, "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", False),
    ("Local/ready endpoints exist", "external to LB", LB, "10.0.1.1:80, 10.0.1.2:80", False),
    ("Local/only terminating endpoints exist", "pod to clusterIP", POD, "10.0.1.5:80", False),
    ("Local/only terminating endpoints exist", "external to LB", LB, "10.0.1.2:80, 10.0.1.3:80", False),
    ("Local/terminating endpoints on remote node", "pod to clusterIP", POD, "10.0.1.5:80", False),
    ("Local/terminating endpoints on remote node", "external to LB, no locally-usable endpoints", LB, "DROP",
     False),
    ("Local/no usable endpoints on any node", "pod to clusterIP, no usable endpoints", POD, "REJECT", False),
    ("Local/no usable endpoints on any node", "external to LB, no usable endpoints", LB, "REJECT", False),
    ("Local/no usable endpoints on any node", "pod to clusterIP after endpoints deleted", POD, "REJECT", False),
    ("Local/no usable endpoints on any node", "external to LB after endpoints deleted", LB, "REJECT", False),
    ("Cluster/ready endpoints exist", "pod to clusterIP", POD, "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", False),
    ("Cluster/ready endpoints exist", "external to LB", LB, "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", True),
    ("Cluster/only terminating endpoints exist", "pod to clusterIP", POD, "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80",
     False),
    ("Cluster/only terminating endpoints exist", "external to LB", LB, "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80",
     True),
    ("Cluster/terminating endpoints on remote node", "pod to clusterIP", POD, "10.0.1.5:80", False),
    ("Cluster/terminating endpoints on remote node", "external to LB", LB, "10.0.1.5:80", True),
    ("Cluster/no usable endpoints on any node", "pod to clusterIP", POD, "REJECT", False),
    ("Cluster/no usable endpoints on any node", "external to LB", LB, "REJECT", False),
    ("Cluster/no usable endpoints on any node", "pod to clusterIP after endpoints deleted", POD, "REJECT", False),
    ("Cluster/no usable endpoints on any node", "external to LB after endpoints deleted", LB, "REJECT", False),
]


@pytest.mark.parametrize("test,name,flow,output,masq", CASES, ids=[f"{c[0]}/{c[1]}" for c in CASES])
def test_upstream_packet_flow(test: str, name: str, flow: tuple[str, str], output: str, masq: bool) -> None:
    t = trace_kube_packet(load_kube_restore(RULES[test], test), flow[0], "tcp", flow[1], 80, [NODE])
    assert (t.output, t.masquerade) == (output, masq), [b.rules for b in t.branches]


def test_session_affinity_rules_are_what_upstream_printed() -> None:
    """The helpers rebuild the dump line for line: spot-check two lines against upstream's text."""
    text = RULES["Local/ready endpoints exist"]
    assert ('-A KUBE-SVC-AQI2S6QIMU7PVVRP -m comment --comment "ns1/svc1 -> 10.0.1.1:80" -m recent --name '
            "KUBE-SEP-3JOIVZTXZZRGORX4 --rcheck --seconds 10800 --reap -j KUBE-SEP-3JOIVZTXZZRGORX4\n") in text
    assert ("-A KUBE-SEP-EQCHZ7S2PJ72OHAY -m comment --comment ns1/svc1 -m recent --name KUBE-SEP-EQCHZ7S2PJ72OHAY "
            "--set -m tcp -p tcp -j DNAT --to-destination 10.0.1.5:80\n") in text
