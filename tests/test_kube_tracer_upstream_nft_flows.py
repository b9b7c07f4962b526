"""Upstream kube-proxy nftables packet-flow cases, part 2: the tests without a written ruleset.

Upstream's TestNoEndpointsReject, TestClusterIPGeneral, TestLoadBalancer, TestNodePorts,
TestExternalTrafficPolicy{Local,Cluster}, TestInternalTrafficPolicy,
TestTerminatingEndpointsTrafficPolicy{Local,Cluster} and TestInternalExternalMasquerade
(pkg/proxy/nftables/proxier_test.go at commit 030880a5) let kube-proxy's syncProxyRules write
the ruleset and trace packets through it, so no ruleset text is in the test. The rulesets here
are written by hand from proxier.go's syncProxyRules and writeServiceToEndpointRules for each
test's services and endpoints, on upstream's `baseRules`, in the form TestOverallNFTablesRules
shows; only the 8-character hashes in chain names are placeholders (HASH0001...), as the
engine does not care what a chain is called. Cases and answers are upstream's.
"""
# ruff: noqa: E501  (rulesets are kept line for line as kube-proxy writes them)
from __future__ import annotations

import pytest

from pktemu.explain.kube_nft import load_kube_nft, trace_kube_nft_packet
from tests.test_kube_tracer_upstream_nft import BASE_RULES, BLOCKED, EXT, NODE_IPS

NODE = "192.168.0.2"                    # testNodeIP
RULES: dict[str, str] = {}

RULES["TestNoEndpointsReject"] = BASE_RULES + """\
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy no-endpoint-services { 172.30.0.41 . tcp . 80 comment "ns1/svc1:p80" : goto reject-chain }
add element ip kube-proxy no-endpoint-services { 192.168.99.11 . tcp . 80 comment "ns1/svc1:p80" : goto reject-chain }
add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns1/svc1:p80" : goto reject-chain }
add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns1/svc1:p80" : goto reject-chain }
"""

RULES["TestClusterIPGeneral"] = BASE_RULES + """\
add chain ip kube-proxy service-HASH0001-ns1/svc1/tcp/http
add rule ip kube-proxy service-HASH0001-ns1/svc1/tcp/http ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HASH0001-ns1/svc1/tcp/http numgen random mod 1 vmap { 0 : goto endpoint-HASH0011-ns1/svc1/tcp/http__10.180.0.1/80 }
add chain ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/http__10.180.0.1/80
add rule ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/http__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/http__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-HASH0001-ns1/svc1/tcp/http }

add chain ip kube-proxy service-HASH0002-ns2/svc2/tcp/http
add rule ip kube-proxy service-HASH0002-ns2/svc2/tcp/http ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HASH0002-ns2/svc2/tcp/http numgen random mod 2 vmap { 0 : goto endpoint-HASH0021-ns2/svc2/tcp/http__10.180.0.1/80 , 1 : goto endpoint-HASH0022-ns2/svc2/tcp/http__10.180.2.1/80 }
add chain ip kube-proxy endpoint-HASH0021-ns2/svc2/tcp/http__10.180.0.1/80
add rule ip kube-proxy endpoint-HASH0021-ns2/svc2/tcp/http__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0021-ns2/svc2/tcp/http__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80
add chain ip kube-proxy endpoint-HASH0022-ns2/svc2/tcp/http__10.180.2.1/80
add rule ip kube-proxy endpoint-HASH0022-ns2/svc2/tcp/http__10.180.2.1/80 ip saddr 10.180.2.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0022-ns2/svc2/tcp/http__10.180.2.1/80 meta l4proto tcp dnat to 10.180.2.1:80

add chain ip kube-proxy service-HASH0003-ns2/svc2/tcp/https
add rule ip kube-proxy service-HASH0003-ns2/svc2/tcp/https ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HASH0003-ns2/svc2/tcp/https numgen random mod 2 vmap { 0 : goto endpoint-HASH0031-ns2/svc2/tcp/https__10.180.0.1/8443 , 1 : goto endpoint-HASH0032-ns2/svc2/tcp/https__10.180.2.1/8443 }
add chain ip kube-proxy endpoint-HASH0031-ns2/svc2/tcp/https__10.180.0.1/8443
add rule ip kube-proxy endpoint-HASH0031-ns2/svc2/tcp/https__10.180.0.1/8443 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0031-ns2/svc2/tcp/https__10.180.0.1/8443 meta l4proto tcp dnat to 10.180.0.1:8443
add chain ip kube-proxy endpoint-HASH0032-ns2/svc2/tcp/https__10.180.2.1/8443
add rule ip kube-proxy endpoint-HASH0032-ns2/svc2/tcp/https__10.180.2.1/8443 ip saddr 10.180.2.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0032-ns2/svc2/tcp/https__10.180.2.1/8443 meta l4proto tcp dnat to 10.180.2.1:8443

add chain ip kube-proxy service-HASH0004-ns2/svc2/udp/dns-udp
add rule ip kube-proxy service-HASH0004-ns2/svc2/udp/dns-udp ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HASH0004-ns2/svc2/udp/dns-udp numgen random mod 2 vmap { 0 : goto endpoint-HASH0041-ns2/svc2/udp/dns-udp__10.180.0.1/53 , 1 : goto endpoint-HASH0042-ns2/svc2/udp/dns-udp__10.180.2.1/53 }
add chain ip kube-proxy endpoint-HASH0041-ns2/svc2/udp/dns-udp__10.180.0.1/53
add rule ip kube-proxy endpoint-HASH0041-ns2/svc2/udp/dns-udp__10.180.0.1/53 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0041-ns2/svc2/udp/dns-udp__10.180.0.1/53 meta l4proto udp dnat to 10.180.0.1:53
add chain ip kube-proxy endpoint-HASH0042-ns2/svc2/udp/dns-udp__10.180.2.1/53
add rule ip kube-proxy endpoint-HASH0042-ns2/svc2/udp/dns-udp__10.180.2.1/53 ip saddr 10.180.2.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0042-ns2/svc2/udp/dns-udp__10.180.2.1/53 meta l4proto udp dnat to 10.180.2.1:53

add chain ip kube-proxy service-HASH0005-ns2/svc2/tcp/dns-tcp
add rule ip kube-proxy service-HASH0005-ns2/svc2/tcp/dns-tcp ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HASH0005-ns2/svc2/tcp/dns-tcp numgen random mod 2 vmap { 0 : goto endpoint-HASH0051-ns2/svc2/tcp/dns-tcp__10.180.0.1/5353 , 1 : goto endpoint-HASH0052-ns2/svc2/tcp/dns-tcp__10.180.2.1/5353 }
add chain ip kube-proxy endpoint-HASH0051-ns2/svc2/tcp/dns-tcp__10.180.0.1/5353
add rule ip kube-proxy endpoint-HASH0051-ns2/svc2/tcp/dns-tcp__10.180.0.1/5353 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0051-ns2/svc2/tcp/dns-tcp__10.180.0.1/5353 meta l4proto tcp dnat to 10.180.0.1:5353
add chain ip kube-proxy endpoint-HASH0052-ns2/svc2/tcp/dns-tcp__10.180.2.1/5353
add rule ip kube-proxy endpoint-HASH0052-ns2/svc2/tcp/dns-tcp__10.180.2.1/5353 ip saddr 10.180.2.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0052-ns2/svc2/tcp/dns-tcp__10.180.2.1/5353 meta l4proto tcp dnat to 10.180.2.1:5353

add chain ip kube-proxy service-HASH0006-ns2/svc2/sctp/dns-sctp
add rule ip kube-proxy service-HASH0006-ns2/svc2/sctp/dns-sctp ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HASH0006-ns2/svc2/sctp/dns-sctp numgen random mod 2 vmap { 0 : goto endpoint-HASH0061-ns2/svc2/sctp/dns-sctp__10.180.0.1/53 , 1 : goto endpoint-HASH0062-ns2/svc2/sctp/dns-sctp__10.180.2.1/53 }
add chain ip kube-proxy endpoint-HASH0061-ns2/svc2/sctp/dns-sctp__10.180.0.1/53
add rule ip kube-proxy endpoint-HASH0061-ns2/svc2/sctp/dns-sctp__10.180.0.1/53 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0061-ns2/svc2/sctp/dns-sctp__10.180.0.1/53 meta l4proto sctp dnat to 10.180.0.1:53
add chain ip kube-proxy endpoint-HASH0062-ns2/svc2/sctp/dns-sctp__10.180.2.1/53
add rule ip kube-proxy endpoint-HASH0062-ns2/svc2/sctp/dns-sctp__10.180.2.1/53 ip saddr 10.180.2.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0062-ns2/svc2/sctp/dns-sctp__10.180.2.1/53 meta l4proto sctp dnat to 10.180.2.1:53

add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-HASH0002-ns2/svc2/tcp/http }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 443 : goto service-HASH0003-ns2/svc2/tcp/https }
add element ip kube-proxy service-ips { 172.30.0.42 . udp . 53 : goto service-HASH0004-ns2/svc2/udp/dns-udp }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 53 : goto service-HASH0005-ns2/svc2/tcp/dns-tcp }
add element ip kube-proxy service-ips { 172.30.0.42 . sctp . 53 : goto service-HASH0006-ns2/svc2/sctp/dns-sctp }
"""

RULES["TestLoadBalancer"] = BASE_RULES + """\
add chain ip kube-proxy service-HASH0001-ns1/svc1/tcp/p80
add rule ip kube-proxy service-HASH0001-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HASH0001-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-HASH0011-ns1/svc1/tcp/p80__10.180.0.1/80 }
add chain ip kube-proxy external-HASH0001-ns1/svc1/tcp/p80
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/p80 goto service-HASH0001-ns1/svc1/tcp/p80
add chain ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/p80__10.180.0.1/80
add rule ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80
add chain ip kube-proxy firewall-HASH0001-ns1/svc1/tcp/p80
add rule ip kube-proxy firewall-HASH0001-ns1/svc1/tcp/p80 ip saddr != { 192.168.0.0/24 , 203.0.113.0/25 , 1.2.3.4 , 5.6.7.8 } drop

add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-HASH0001-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-HASH0001-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 5.6.7.8 . tcp . 80 : goto external-HASH0001-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-HASH0001-ns1/svc1/tcp/p80 }
add element ip kube-proxy firewall-ips { 1.2.3.4 . tcp . 80 : goto firewall-HASH0001-ns1/svc1/tcp/p80 }
add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HASH0001-ns1/svc1/tcp/p80 }
"""

_NODEPORT_SVC = """\
add chain ip kube-proxy service-HASH0001-ns1/svc1/tcp/p80
add rule ip kube-proxy service-HASH0001-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HASH0001-ns1/svc1/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-HASH0011-ns1/svc1/tcp/p80__10.180.0.1/80 , 1 : goto endpoint-HASH0012-ns1/svc1/tcp/p80__10.180.2.1/80 }
add chain ip kube-proxy external-HASH0001-ns1/svc1/tcp/p80
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/p80 goto service-HASH0001-ns1/svc1/tcp/p80
add chain ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/p80__10.180.0.1/80
add rule ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80
add chain ip kube-proxy endpoint-HASH0012-ns1/svc1/tcp/p80__10.180.2.1/80
add rule ip kube-proxy endpoint-HASH0012-ns1/svc1/tcp/p80__10.180.2.1/80 ip saddr 10.180.2.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0012-ns1/svc1/tcp/p80__10.180.2.1/80 meta l4proto tcp dnat to 10.180.2.1:80

add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-HASH0001-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-HASH0001-ns1/svc1/tcp/p80 }
"""
RULES["TestNodePorts/ipv4"] = BASE_RULES + _NODEPORT_SVC
# --nodeport-addresses 192.168.0.0/24,192.168.1.0/24: both node IPs in those ranges accept NodePorts
RULES["TestNodePorts/ipv4, multiple nodeport-addresses"] = BASE_RULES + _NODEPORT_SVC + """\
add element ip kube-proxy nodeport-ips { 192.168.1.2 }
"""

_ETP_SVC = """\
add chain ip kube-proxy service-HASH0001-ns1/svc1/tcp/p80
add rule ip kube-proxy service-HASH0001-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HASH0001-ns1/svc1/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-HASH0011-ns1/svc1/tcp/p80__10.180.0.1/80 , 1 : goto endpoint-HASH0012-ns1/svc1/tcp/p80__10.180.2.1/80 }
add chain ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/p80__10.180.0.1/80
add rule ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80
add chain ip kube-proxy endpoint-HASH0012-ns1/svc1/tcp/p80__10.180.2.1/80
add rule ip kube-proxy endpoint-HASH0012-ns1/svc1/tcp/p80__10.180.2.1/80 ip saddr 10.180.2.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0012-ns1/svc1/tcp/p80__10.180.2.1/80 meta l4proto tcp dnat to 10.180.2.1:80

add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-HASH0001-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.11 . tcp . 80 : goto external-HASH0001-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-HASH0001-ns1/svc1/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-HASH0001-ns1/svc1/tcp/p80 }
"""
RULES["TestExternalTrafficPolicyLocal"] = BASE_RULES + _ETP_SVC + """\
add chain ip kube-proxy local-HASH0001-ns1/svc1/tcp/p80
add rule ip kube-proxy local-HASH0001-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-HASH0012-ns1/svc1/tcp/p80__10.180.2.1/80 }
add chain ip kube-proxy external-HASH0001-ns1/svc1/tcp/p80
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/p80 ip saddr 10.0.0.0/8 goto service-HASH0001-ns1/svc1/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/p80 fib saddr type local goto service-HASH0001-ns1/svc1/tcp/p80 comment "short-circuit local traffic"
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/p80 goto local-HASH0001-ns1/svc1/tcp/p80
"""
RULES["TestExternalTrafficPolicyCluster"] = BASE_RULES + _ETP_SVC + """\
add chain ip kube-proxy external-HASH0001-ns1/svc1/tcp/p80
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/p80 goto service-HASH0001-ns1/svc1/tcp/p80
"""

# TestInternalTrafficPolicy: ClusterIP 172.30.1.1:80, unnamed port; with iTP:Local the internal
# (masquerade) rule and the service-ips element go to the local-* chain
RULES["TestInternalTrafficPolicy/internalTrafficPolicy is cluster"] = BASE_RULES + """\
add chain ip kube-proxy service-HASH0001-ns1/svc1/tcp/
add rule ip kube-proxy service-HASH0001-ns1/svc1/tcp/ ip daddr 172.30.1.1 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HASH0001-ns1/svc1/tcp/ numgen random mod 3 vmap { 0 : goto endpoint-HASH0011-ns1/svc1/tcp/__10.0.1.1/80 , 1 : goto endpoint-HASH0012-ns1/svc1/tcp/__10.0.1.2/80 , 2 : goto endpoint-HASH0013-ns1/svc1/tcp/__10.0.1.3/80 }
add chain ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/__10.0.1.1/80
add rule ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/__10.0.1.1/80 ip saddr 10.0.1.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/__10.0.1.1/80 meta l4proto tcp dnat to 10.0.1.1:80
add chain ip kube-proxy endpoint-HASH0012-ns1/svc1/tcp/__10.0.1.2/80
add rule ip kube-proxy endpoint-HASH0012-ns1/svc1/tcp/__10.0.1.2/80 ip saddr 10.0.1.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0012-ns1/svc1/tcp/__10.0.1.2/80 meta l4proto tcp dnat to 10.0.1.2:80
add chain ip kube-proxy endpoint-HASH0013-ns1/svc1/tcp/__10.0.1.3/80
add rule ip kube-proxy endpoint-HASH0013-ns1/svc1/tcp/__10.0.1.3/80 ip saddr 10.0.1.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0013-ns1/svc1/tcp/__10.0.1.3/80 meta l4proto tcp dnat to 10.0.1.3:80
add element ip kube-proxy cluster-ips { 172.30.1.1 }
add element ip kube-proxy service-ips { 172.30.1.1 . tcp . 80 : goto service-HASH0001-ns1/svc1/tcp/ }
"""
RULES["TestInternalTrafficPolicy/internalTrafficPolicy is local and there is one local endpoint"] = BASE_RULES + """\
add chain ip kube-proxy local-HASH0001-ns1/svc1/tcp/
add rule ip kube-proxy local-HASH0001-ns1/svc1/tcp/ ip daddr 172.30.1.1 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy local-HASH0001-ns1/svc1/tcp/ numgen random mod 1 vmap { 0 : goto endpoint-HASH0011-ns1/svc1/tcp/__10.0.1.1/80 }
add chain ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/__10.0.1.1/80
add rule ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/__10.0.1.1/80 ip saddr 10.0.1.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/__10.0.1.1/80 meta l4proto tcp dnat to 10.0.1.1:80
add element ip kube-proxy cluster-ips { 172.30.1.1 }
add element ip kube-proxy service-ips { 172.30.1.1 . tcp . 80 : goto local-HASH0001-ns1/svc1/tcp/ }
"""
RULES["TestInternalTrafficPolicy/internalTrafficPolicy is local and there are multiple local endpoints"] = BASE_RULES + """\
add chain ip kube-proxy local-HASH0001-ns1/svc1/tcp/
add rule ip kube-proxy local-HASH0001-ns1/svc1/tcp/ ip daddr 172.30.1.1 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy local-HASH0001-ns1/svc1/tcp/ numgen random mod 2 vmap { 0 : goto endpoint-HASH0011-ns1/svc1/tcp/__10.0.1.1/80 , 1 : goto endpoint-HASH0012-ns1/svc1/tcp/__10.0.1.2/80 }
add chain ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/__10.0.1.1/80
add rule ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/__10.0.1.1/80 ip saddr 10.0.1.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0011-ns1/svc1/tcp/__10.0.1.1/80 meta l4proto tcp dnat to 10.0.1.1:80
add chain ip kube-proxy endpoint-HASH0012-ns1/svc1/tcp/__10.0.1.2/80
add rule ip kube-proxy endpoint-HASH0012-ns1/svc1/tcp/__10.0.1.2/80 ip saddr 10.0.1.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH0012-ns1/svc1/tcp/__10.0.1.2/80 meta l4proto tcp dnat to 10.0.1.2:80
add element ip kube-proxy cluster-ips { 172.30.1.1 }
add element ip kube-proxy service-ips { 172.30.1.1 . tcp . 80 : goto local-HASH0001-ns1/svc1/tcp/ }
"""
RULES["TestInternalTrafficPolicy/internalTrafficPolicy is local and there are no local endpoints"] = BASE_RULES + """\
add element ip kube-proxy cluster-ips { 172.30.1.1 }
add element ip kube-proxy no-endpoint-services { 172.30.1.1 . tcp . 80 comment "ns1/svc1" : drop }
"""
# every test's service after its EndpointSlice is deleted: no endpoints, REJECT
RULES["svc1 at 172.30.1.1 without endpoints"] = BASE_RULES + """\
add element ip kube-proxy cluster-ips { 172.30.1.1 }
add element ip kube-proxy no-endpoint-services { 172.30.1.1 . tcp . 80 comment "ns1/svc1" : goto reject-chain }
add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns1/svc1" : goto reject-chain }
"""

# TestTerminatingEndpointsTrafficPolicy{Local,Cluster}: LoadBalancer 172.30.1.1:80, LB 1.2.3.4,
# no NodePort; the endpoints each case's EndpointSlice leaves usable (ready ones, else serving
# terminating ones), cluster-wide and on this node
_TERM_HEAD = """\
add element ip kube-proxy cluster-ips { 172.30.1.1 }
add element ip kube-proxy service-ips { 172.30.1.1 . tcp . 80 : goto service-HASH0001-ns1/svc1/tcp/ }
add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-HASH0001-ns1/svc1/tcp/ }
"""
_TERM_EXT_LOCAL = """\
add chain ip kube-proxy external-HASH0001-ns1/svc1/tcp/
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/ ip saddr 10.0.0.0/8 goto service-HASH0001-ns1/svc1/tcp/ comment "short-circuit pod traffic"
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/ fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/ fib saddr type local goto service-HASH0001-ns1/svc1/tcp/ comment "short-circuit local traffic"
"""
_TERM_EXT_CLUSTER = """\
add chain ip kube-proxy external-HASH0001-ns1/svc1/tcp/
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/ jump mark-for-masquerade
add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/ goto service-HASH0001-ns1/svc1/tcp/
"""


def _term_eps(*ips: str) -> str:
    """The endpoint chains of `ips` (placeholder hashes from the last octet)."""
    return "".join(f"""\
add chain ip kube-proxy endpoint-HASH001{ip[-1]}-ns1/svc1/tcp/__{ip}/80
add rule ip kube-proxy endpoint-HASH001{ip[-1]}-ns1/svc1/tcp/__{ip}/80 ip saddr {ip} jump mark-for-masquerade
add rule ip kube-proxy endpoint-HASH001{ip[-1]}-ns1/svc1/tcp/__{ip}/80 meta l4proto tcp dnat to {ip}:80
""" for ip in ips)


def _term_chain(kind: str, *ips: str, masq: bool = False) -> str:
    vmap = " , ".join(f"{i} : goto endpoint-HASH001{ip[-1]}-ns1/svc1/tcp/__{ip}/80" for i, ip in enumerate(ips))
    rule = "add rule ip kube-proxy {kind}-HASH0001-ns1/svc1/tcp/ ".format(kind=kind)
    out = f"add chain ip kube-proxy {kind}-HASH0001-ns1/svc1/tcp/\n"
    if masq:
        out += rule + "ip daddr 172.30.1.1 ip saddr != 10.0.0.0/8 jump mark-for-masquerade\n"
    return out + rule + f"numgen random mod {len(ips)} vmap {{ {vmap} }}\n"


_NO_EPS = RULES["svc1 at 172.30.1.1 without endpoints"]
RULES["TestTerminatingEndpointsTrafficPolicyLocal/ready endpoints exist"] = BASE_RULES + _TERM_HEAD + _term_chain("service", "10.0.1.1", "10.0.1.2", "10.0.1.5", masq=True) + _term_chain("local", "10.0.1.1", "10.0.1.2") + _TERM_EXT_LOCAL + "add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/ goto local-HASH0001-ns1/svc1/tcp/\n" + _term_eps("10.0.1.1", "10.0.1.2", "10.0.1.5")
RULES["TestTerminatingEndpointsTrafficPolicyLocal/only terminating endpoints exist"] = BASE_RULES + _TERM_HEAD + _term_chain("service", "10.0.1.5", masq=True) + _term_chain("local", "10.0.1.2", "10.0.1.3") + _TERM_EXT_LOCAL + "add rule ip kube-proxy external-HASH0001-ns1/svc1/tcp/ goto local-HASH0001-ns1/svc1/tcp/\n" + _term_eps("10.0.1.2", "10.0.1.3", "10.0.1.5")
RULES["TestTerminatingEndpointsTrafficPolicyLocal/terminating endpoints on remote node"] = BASE_RULES + _TERM_HEAD + _term_chain("service", "10.0.1.5", masq=True) + _TERM_EXT_LOCAL + _term_eps("10.0.1.5") + 'add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns1/svc1" : drop }\n'
RULES["TestTerminatingEndpointsTrafficPolicyLocal/no usable endpoints on any node"] = _NO_EPS
RULES["TestTerminatingEndpointsTrafficPolicyCluster/ready endpoints exist"] = BASE_RULES + _TERM_HEAD + _term_chain("service", "10.0.1.1", "10.0.1.2", "10.0.1.5", masq=True) + _TERM_EXT_CLUSTER + _term_eps("10.0.1.1", "10.0.1.2", "10.0.1.5")
RULES["TestTerminatingEndpointsTrafficPolicyCluster/only terminating endpoints exist"] = BASE_RULES + _TERM_HEAD + _term_chain("service", "10.0.1.2", "10.0.1.3", "10.0.1.5", masq=True) + _TERM_EXT_CLUSTER + _term_eps("10.0.1.2", "10.0.1.3", "10.0.1.5")
RULES["TestTerminatingEndpointsTrafficPolicyCluster/terminating endpoints on remote node"] = BASE_RULES + _TERM_HEAD + _term_chain("service", "10.0.1.5", masq=True) + _TERM_EXT_CLUSTER + _term_eps("10.0.1.5")
RULES["TestTerminatingEndpointsTrafficPolicyCluster/no usable endpoints on any node"] = _NO_EPS


def _iem(masquerade_all: bool, local_detector: bool) -> str:
    """TestInternalExternalMasquerade's three LoadBalancers (svc2 eTP:Local, svc3 iTP:Local), each
    with a local endpoint 10.180.0.N and a remote one 10.180.1.N, under the test case's flags."""
    out = [BASE_RULES]
    for n, extra in ((1, ""), (2, "etp"), (3, "itp")):
        vip, lb = f"172.30.0.4{n}", ("1.2.3.4", "5.6.7.8", "9.10.11.12")[n - 1]
        base = f"HASH000{n}-ns{n}/svc{n}/tcp/p80"
        svc, ext, loc = f"service-{base}", f"external-{base}", f"local-{base}"
        ep = [f"endpoint-HASH00{n}{i}-ns{n}/svc{n}/tcp/p80__10.180.{i}.{n}/80" for i in (0, 1)]
        masq = (f"ip daddr {vip} tcp dport 80" if masquerade_all
                else f"ip daddr {vip} ip saddr != 10.0.0.0/8" if local_detector else None)
        internal = loc if extra == "itp" else svc
        out.append(f"add element ip kube-proxy cluster-ips {{ {vip} }}\n"
                   f"add element ip kube-proxy service-ips {{ {vip} . tcp . 80 : goto {internal} }}\n"
                   f"add element ip kube-proxy service-ips {{ {lb} . tcp . 80 : goto {ext} }}\n"
                   f"add element ip kube-proxy service-nodeports {{ tcp . 300{n} : goto {ext} }}\n")
        if extra:
            out.append(f"add chain ip kube-proxy {loc}\n")
            if extra == "itp" and masq:
                out.append(f"add rule ip kube-proxy {loc} {masq} jump mark-for-masquerade\n")
            out.append(f"add rule ip kube-proxy {loc} numgen random mod 1 vmap {{ 0 : goto {ep[0]} }}\n")
        out.append(f"add chain ip kube-proxy {svc}\n")
        if extra != "itp" and masq:
            out.append(f"add rule ip kube-proxy {svc} {masq} jump mark-for-masquerade\n")
        out.append(f"add rule ip kube-proxy {svc} numgen random mod 2 vmap {{ 0 : goto {ep[0]} , 1 : goto {ep[1]} }}\n")
        out.append(f"add chain ip kube-proxy {ext}\n")
        if extra == "etp":
            if local_detector:
                out.append(f'add rule ip kube-proxy {ext} ip saddr 10.0.0.0/8 goto {svc} comment "short-circuit pod traffic"\n')
            out.append(f'add rule ip kube-proxy {ext} fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"\n'
                       f'add rule ip kube-proxy {ext} fib saddr type local goto {svc} comment "short-circuit local traffic"\n'
                       f"add rule ip kube-proxy {ext} goto {loc}\n")
        else:
            out.append(f"add rule ip kube-proxy {ext} jump mark-for-masquerade\nadd rule ip kube-proxy {ext} goto {svc}\n")
        for i, e in enumerate(ep):
            out.append(f"add chain ip kube-proxy {e}\n"
                       f"add rule ip kube-proxy {e} ip saddr 10.180.{i}.{n} jump mark-for-masquerade\n"
                       f"add rule ip kube-proxy {e} meta l4proto tcp dnat to 10.180.{i}.{n}:80\n")
    return "".join(out)


RULES["TestInternalExternalMasquerade/base"] = _iem(False, True)
RULES["TestInternalExternalMasquerade/no LocalTrafficDetector"] = _iem(False, False)
RULES["TestInternalExternalMasquerade/masqueradeAll"] = _iem(True, True)
RULES["TestInternalExternalMasquerade/masqueradeAll, no LocalTrafficDetector"] = _iem(True, False)

_EP = "10.180.0.1:80, 10.180.2.1:80"
_T = "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80"
#: (ruleset, upstream case name, source, protocol, destination, port, output, masq)
CASES: list[tuple[str, str, str, str, str, int, str, bool]] = [
    ("TestNoEndpointsReject", "pod to cluster IP with no endpoints", "10.0.0.2", "tcp", "172.30.0.41", 80, "REJECT", False),
    ("TestNoEndpointsReject", "external to external IP with no endpoints", EXT, "tcp", "192.168.99.11", 80, "REJECT", False),
    ("TestNoEndpointsReject", "pod to NodePort with no endpoints", "10.0.0.2", "tcp", NODE, 3001, "REJECT", False),
    ("TestNoEndpointsReject", "external to NodePort with no endpoints", EXT, "tcp", NODE, 3001, "REJECT", False),
    ("TestNoEndpointsReject", "pod to LoadBalancer IP with no endpoints", "10.0.0.2", "tcp", "1.2.3.4", 80, "REJECT", False),
    ("TestNoEndpointsReject", "external to LoadBalancer IP with no endpoints", EXT, "tcp", "1.2.3.4", 80, "REJECT", False),
    ("TestClusterIPGeneral", "simple clusterIP", "10.180.0.2", "tcp", "172.30.0.41", 80, "10.180.0.1:80", False),
    ("TestClusterIPGeneral", "hairpin to cluster IP", "10.180.0.1", "tcp", "172.30.0.41", 80, "10.180.0.1:80", True),
    ("TestClusterIPGeneral", "clusterIP with multiple endpoints", "10.180.0.2", "tcp", "172.30.0.42", 80, _EP, False),
    ("TestClusterIPGeneral", "clusterIP with TargetPort", "10.180.0.2", "tcp", "172.30.0.42", 443, "10.180.0.1:8443, 10.180.2.1:8443", False),
    ("TestClusterIPGeneral", "clusterIP with TCP, UDP, and SCTP on same port (TCP)", "10.180.0.2", "tcp", "172.30.0.42", 53, "10.180.0.1:5353, 10.180.2.1:5353", False),
    ("TestClusterIPGeneral", "clusterIP with TCP, UDP, and SCTP on same port (UDP)", "10.180.0.2", "udp", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False),
    ("TestClusterIPGeneral", "clusterIP with TCP, UDP, and SCTP on same port (SCTP)", "10.180.0.2", "sctp", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False),
    ("TestClusterIPGeneral", "TCP-only port does not match UDP traffic", "10.180.0.2", "udp", "172.30.0.42", 80, "REJECT", False),
    ("TestClusterIPGeneral", "svc1 does not accept svc2's ports", "10.180.0.2", "tcp", "172.30.0.41", 443, "REJECT", False),
    ("TestClusterIPGeneral", "packet to unallocated cluster ip", "10.180.0.2", "tcp", "172.30.0.50", 80, "DROP", False),
    ("TestLoadBalancer", "pod to cluster IP", "10.0.0.2", "tcp", "172.30.0.41", 80, "10.180.0.1:80", False),
    ("TestLoadBalancer", "external to nodePort", EXT, "tcp", NODE, 3001, "10.180.0.1:80", True),
    ("TestLoadBalancer", "nodePort bypasses LoadBalancerSourceRanges", BLOCKED, "tcp", NODE, 3001, "10.180.0.1:80", True),
    ("TestLoadBalancer", "accepted external to LB1", EXT, "tcp", "1.2.3.4", 80, "10.180.0.1:80", True),
    ("TestLoadBalancer", "accepted external to LB2", EXT, "tcp", "5.6.7.8", 80, "10.180.0.1:80", True),
    ("TestLoadBalancer", "blocked external to LB1", BLOCKED, "tcp", "1.2.3.4", 80, "DROP", False),
    ("TestLoadBalancer", "blocked external to LB2", BLOCKED, "tcp", "5.6.7.8", 80, "DROP", False),
    ("TestLoadBalancer", "pod to LB1 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", "tcp", "1.2.3.4", 80, "DROP", False),
    ("TestLoadBalancer", "pod to LB2 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", "tcp", "5.6.7.8", 80, "DROP", False),
    ("TestLoadBalancer", "node to LB1 (allowed by LoadBalancerSourceRanges)", NODE, "tcp", "1.2.3.4", 80, "10.180.0.1:80", True),
    ("TestLoadBalancer", "node to LB2 (allowed by LoadBalancerSourceRanges)", NODE, "tcp", "5.6.7.8", 80, "10.180.0.1:80", True),
    ("TestLoadBalancer", "same node to LB1, SNATted to LB1 (implicitly allowed)", "1.2.3.4", "tcp", "1.2.3.4", 80, "10.180.0.1:80", True),
    ("TestLoadBalancer", "same node to LB2, SNATted to LB2 (implicitly allowed)", "5.6.7.8", "tcp", "5.6.7.8", 80, "10.180.0.1:80", True),
]
for _np in ("TestNodePorts/ipv4", "TestNodePorts/ipv4, multiple nodeport-addresses"):
    CASES += [
        (_np, "pod to cluster IP", "10.0.0.2", "tcp", "172.30.0.41", 80, _EP, False),
        (_np, "external to nodePort", EXT, "tcp", NODE, 3001, _EP, True),
        (_np, "node to nodePort", NODE, "tcp", NODE, 3001, _EP, True),
    ]
CASES += [
    ("TestNodePorts/ipv4", "secondary nodeIP ignores NodePorts", EXT, "tcp", "192.168.1.2", 3001, "", False),
    ("TestNodePorts/ipv4, multiple nodeport-addresses", "external to nodePort on secondary IP", EXT, "tcp", "192.168.1.2", 3001, _EP, True),
    ("TestExternalTrafficPolicyLocal", "pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", "tcp", "172.30.0.41", 80, _EP, False),
    ("TestExternalTrafficPolicyLocal", "pod to external IP hits both endpoints, unmasqueraded", "10.0.0.2", "tcp", "192.168.99.11", 80, _EP, False),
    ("TestExternalTrafficPolicyLocal", "external to external IP hits only local endpoint, unmasqueraded", EXT, "tcp", "192.168.99.11", 80, "10.180.2.1:80", False),
    ("TestExternalTrafficPolicyLocal", "pod to LB IP hits only both endpoints, unmasqueraded", "10.0.0.2", "tcp", "1.2.3.4", 80, _EP, False),
    ("TestExternalTrafficPolicyLocal", "external to LB IP hits only local endpoint, unmasqueraded", EXT, "tcp", "1.2.3.4", 80, "10.180.2.1:80", False),
    ("TestExternalTrafficPolicyLocal", "pod to NodePort hits both endpoints, unmasqueraded", "10.0.0.2", "tcp", NODE, 3001, _EP, False),
    ("TestExternalTrafficPolicyLocal", "external to NodePort hits only local endpoint, unmasqueraded", EXT, "tcp", NODE, 3001, "10.180.2.1:80", False),
    ("TestExternalTrafficPolicyCluster", "pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", "tcp", "172.30.0.41", 80, _EP, False),
    ("TestExternalTrafficPolicyCluster", "pod to external IP hits both endpoints, masqueraded", "10.0.0.2", "tcp", "192.168.99.11", 80, _EP, True),
    ("TestExternalTrafficPolicyCluster", "external to external IP hits both endpoints, masqueraded", EXT, "tcp", "192.168.99.11", 80, _EP, True),
    ("TestExternalTrafficPolicyCluster", "pod to LB IP hits both endpoints, masqueraded", "10.0.0.2", "tcp", "1.2.3.4", 80, _EP, True),
    ("TestExternalTrafficPolicyCluster", "external to LB IP hits both endpoints, masqueraded", EXT, "tcp", "1.2.3.4", 80, _EP, True),
    ("TestExternalTrafficPolicyCluster", "pod to NodePort hits both endpoints, masqueraded", "10.0.0.2", "tcp", NODE, 3001, _EP, True),
    ("TestExternalTrafficPolicyCluster", "external to NodePort hits both endpoints, masqueraded", EXT, "tcp", NODE, 3001, _EP, True),
    ("TestInternalTrafficPolicy/internalTrafficPolicy is cluster", "pod to ClusterIP hits all endpoints", "10.0.0.2", "tcp", "172.30.1.1", 80, "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80", False),
    ("TestInternalTrafficPolicy/internalTrafficPolicy is local and there is one local endpoint", "pod to ClusterIP hits only local endpoint", "10.0.0.2", "tcp", "172.30.1.1", 80, "10.0.1.1:80", False),
    ("TestInternalTrafficPolicy/internalTrafficPolicy is local and there are multiple local endpoints", "pod to ClusterIP hits all local endpoints", "10.0.0.2", "tcp", "172.30.1.1", 80, "10.0.1.1:80, 10.0.1.2:80", False),
    ("TestInternalTrafficPolicy/internalTrafficPolicy is local and there are no local endpoints", "no endpoints", "10.0.0.2", "tcp", "172.30.1.1", 80, "DROP", False),
    ("svc1 at 172.30.1.1 without endpoints", "endpoints deleted (TestInternalTrafficPolicy)", "10.0.0.2", "tcp", "172.30.1.1", 80, "REJECT", False),
    ("svc1 at 172.30.1.1 without endpoints", "pod to clusterIP after endpoints deleted (TestTerminating*)", "10.0.0.2", "tcp", "172.30.1.1", 80, "REJECT", False),
    ("svc1 at 172.30.1.1 without endpoints", "external to LB after endpoints deleted (TestTerminating*)", EXT, "tcp", "1.2.3.4", 80, "REJECT", False),
    ("TestTerminatingEndpointsTrafficPolicyLocal/ready endpoints exist", "pod to clusterIP", "10.0.0.2", "tcp", "172.30.1.1", 80, _T, False),
    ("TestTerminatingEndpointsTrafficPolicyLocal/ready endpoints exist", "external to LB", EXT, "tcp", "1.2.3.4", 80, "10.0.1.1:80, 10.0.1.2:80", False),
    ("TestTerminatingEndpointsTrafficPolicyLocal/only terminating endpoints exist", "pod to clusterIP", "10.0.0.2", "tcp", "172.30.1.1", 80, "10.0.1.5:80", False),
    ("TestTerminatingEndpointsTrafficPolicyLocal/only terminating endpoints exist", "external to LB", EXT, "tcp", "1.2.3.4", 80, "10.0.1.2:80, 10.0.1.3:80", False),
    ("TestTerminatingEndpointsTrafficPolicyLocal/terminating endpoints on remote node", "pod to clusterIP", "10.0.0.2", "tcp", "172.30.1.1", 80, "10.0.1.5:80", False),
    ("TestTerminatingEndpointsTrafficPolicyLocal/terminating endpoints on remote node", "external to LB, no locally-usable endpoints", EXT, "tcp", "1.2.3.4", 80, "DROP", False),
    ("TestTerminatingEndpointsTrafficPolicyLocal/no usable endpoints on any node", "pod to clusterIP, no usable endpoints", "10.0.0.2", "tcp", "172.30.1.1", 80, "REJECT", False),
    ("TestTerminatingEndpointsTrafficPolicyLocal/no usable endpoints on any node", "external to LB, no usable endpoints", EXT, "tcp", "1.2.3.4", 80, "REJECT", False),
    ("TestTerminatingEndpointsTrafficPolicyCluster/ready endpoints exist", "pod to clusterIP", "10.0.0.2", "tcp", "172.30.1.1", 80, _T, False),
    ("TestTerminatingEndpointsTrafficPolicyCluster/ready endpoints exist", "external to LB", EXT, "tcp", "1.2.3.4", 80, _T, True),
    ("TestTerminatingEndpointsTrafficPolicyCluster/only terminating endpoints exist", "pod to clusterIP", "10.0.0.2", "tcp", "172.30.1.1", 80, "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80", False),
    ("TestTerminatingEndpointsTrafficPolicyCluster/only terminating endpoints exist", "external to LB", EXT, "tcp", "1.2.3.4", 80, "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80", True),
    ("TestTerminatingEndpointsTrafficPolicyCluster/terminating endpoints on remote node", "pod to clusterIP", "10.0.0.2", "tcp", "172.30.1.1", 80, "10.0.1.5:80", False),
    ("TestTerminatingEndpointsTrafficPolicyCluster/terminating endpoints on remote node", "external to LB", EXT, "tcp", "1.2.3.4", 80, "10.0.1.5:80", True),
    ("TestTerminatingEndpointsTrafficPolicyCluster/no usable endpoints on any node", "pod to clusterIP", "10.0.0.2", "tcp", "172.30.1.1", 80, "REJECT", False),
    ("TestTerminatingEndpointsTrafficPolicyCluster/no usable endpoints on any node", "external to LB", EXT, "tcp", "1.2.3.4", 80, "REJECT", False),
]

_A1, _A2, _A3 = "10.180.0.1:80, 10.180.1.1:80", "10.180.0.2:80, 10.180.1.2:80", "10.180.0.3:80, 10.180.1.3:80"
#: TestInternalExternalMasquerade's flowTests, (name, source, destination, port, output, masq)
IEM_FLOWS = [
    ("pod to ClusterIP", "10.0.0.2", "172.30.0.41", 80, _A1, False),
    ("pod to NodePort", "10.0.0.2", NODE, 3001, _A1, True),
    ("pod to LB", "10.0.0.2", "1.2.3.4", 80, _A1, True),
    ("node to ClusterIP", NODE, "172.30.0.41", 80, _A1, True),
    ("node to NodePort", NODE, NODE, 3001, _A1, True),
    ("node to LB", NODE, "1.2.3.4", 80, _A1, True),
    ("external to ClusterIP", EXT, "172.30.0.41", 80, _A1, True),
    ("external to NodePort", EXT, NODE, 3001, _A1, True),
    ("external to LB", EXT, "1.2.3.4", 80, _A1, True),
    ("pod to ClusterIP with eTP:Local", "10.0.0.2", "172.30.0.42", 80, _A2, False),
    ("pod to NodePort with eTP:Local", "10.0.0.2", NODE, 3002, _A2, False),
    ("pod to LB with eTP:Local", "10.0.0.2", "5.6.7.8", 80, _A2, False),
    ("node to ClusterIP with eTP:Local", NODE, "172.30.0.42", 80, _A2, True),
    ("node to NodePort with eTP:Local", NODE, NODE, 3001, _A1, True),
    ("node to LB with eTP:Local", NODE, "5.6.7.8", 80, _A2, True),
    ("external to ClusterIP with eTP:Local", EXT, "172.30.0.42", 80, _A2, True),
    ("external to NodePort with eTP:Local", EXT, NODE, 3002, "10.180.0.2:80", False),
    ("external to LB with eTP:Local", EXT, "5.6.7.8", 80, "10.180.0.2:80", False),
    ("pod to ClusterIP with iTP:Local", "10.0.0.2", "172.30.0.43", 80, "10.180.0.3:80", False),
    ("pod to NodePort with iTP:Local", "10.0.0.2", NODE, 3003, _A3, True),
    ("pod to LB with iTP:Local", "10.0.0.2", "9.10.11.12", 80, _A3, True),
    ("node to ClusterIP with iTP:Local", NODE, "172.30.0.43", 80, "10.180.0.3:80", True),
    ("node to NodePort with iTP:Local", NODE, NODE, 3003, _A3, True),
    ("node to LB with iTP:Local", NODE, "9.10.11.12", 80, _A3, True),
    ("external to ClusterIP with iTP:Local", EXT, "172.30.0.43", 80, "10.180.0.3:80", True),
    ("external to NodePort with iTP:Local", EXT, NODE, 3003, _A3, True),
    ("external to LB with iTP:Local", EXT, "9.10.11.12", 80, _A3, True),
]
_NO_DETECTOR = {"node to ClusterIP": (None, False), "node to ClusterIP with eTP:Local": (None, False),
                "node to ClusterIP with iTP:Local": (None, False), "external to ClusterIP": (None, False),
                "external to ClusterIP with eTP:Local": (None, False), "external to ClusterIP with iTP:Local": (None, False),
                "pod to NodePort with eTP:Local": ("10.180.0.2:80", None), "pod to LB with eTP:Local": ("10.180.0.2:80", None)}
_MASQ_ALL = {"pod to ClusterIP": (None, True), "pod to ClusterIP with eTP:Local": (None, True),
             "pod to ClusterIP with iTP:Local": (None, True)}
#: upstream's per-test-case overrides of (output, masq)
IEM_OVERRIDES: dict[str, dict[str, tuple[str | None, bool | None]]] = {
    "base": {},
    "no LocalTrafficDetector": _NO_DETECTOR,
    "masqueradeAll": _MASQ_ALL,
    "masqueradeAll, no LocalTrafficDetector": {**_MASQ_ALL, **{k: v for k, v in _NO_DETECTOR.items() if v[0] is not None}},
}
for _tc, _over in IEM_OVERRIDES.items():
    for _name, _src, _dst, _port, _out, _masq in IEM_FLOWS:
        _o, _m = _over.get(_name, (None, None))
        CASES.append((f"TestInternalExternalMasquerade/{_tc}", _name, _src, "tcp", _dst, _port,
                      _out if _o is None else _o, _masq if _m is None else _m))


@pytest.mark.parametrize("test,name,src,proto,dst,port,output,masq", CASES, ids=[f"{c[0]}/{c[1]}" for c in CASES])
def test_upstream_packet_flow(test: str, name: str, src: str, proto: str, dst: str, port: int, output: str,
                              masq: bool) -> None:
    t = trace_kube_nft_packet(load_kube_nft(RULES[test], test), src, proto, dst, port, NODE_IPS)
    assert (t.output, t.masquerade) == (output, masq), [b.rules for b in t.branches]
