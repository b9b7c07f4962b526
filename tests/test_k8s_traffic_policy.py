"""A Service whose internal and external traffic policies are both Local and which is reachable
from outside (a NodePort) still needs its Cluster endpoints: upstream's UsesClusterEndpoints is
`!InternalPolicyLocal() || ExternallyAccessible()`, because traffic from pods and from the node
itself to the node port short-circuits to every endpoint. kube-proxy writes KUBE-SVC for it and
KUBE-EXT jumps there for pod and local traffic; the ruleset must load."""
from __future__ import annotations

from pktemu.k8s import manifests
from pktemu.k8s.objects import EndpointSlice, Service
from pktemu.k8s.proxier_iptables import IptablesOptions, IptablesProxier
from pktemu.k8s.proxy_state import endpoints_map, service_ports
from pktemu.netfilter.restore import load_rules
from pktemu.netfilter.xtables import Ruleset

MANIFESTS = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.80
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
  - {addresses: [10.0.2.2], conditions: {ready: true}, nodeName: node2}
ports: [{name: http, port: 8080, protocol: TCP}]
"""


def test_local_local_nodeport_on_a_node_without_local_endpoints_loads_and_short_circuits() -> None:
    objs = manifests.load_text(MANIFESTS, "<test>")
    svcs = service_ports([o for o in objs if isinstance(o, Service)])
    eps = endpoints_map([o for o in objs if isinstance(o, EndpointSlice)], "node1")
    text = IptablesProxier(IptablesOptions(cluster_cidr="10.0.0.0/16")).sync(svcs, eps, Ruleset())[0]
    rs = load_rules(text, "<kube-proxy node1>")             # raised "undeclared chain" before
    nat = rs.table("nat").chains
    [svc] = [c for c in nat if c.startswith("KUBE-SVC-")]
    [ext] = [c for c in nat if c.startswith("KUBE-EXT-")]
    lines = text.splitlines()
    assert f"-A {ext} -m comment --comment \"pod traffic for default/web:http external destinations\" " \
           f"-s 10.0.0.0/16 -j {svc}" in lines
    assert any(ln.startswith(f"-A {svc} ") and "-j KUBE-SEP-" in ln for ln in lines)
    # from outside there is no local endpoint to go to: dropped, as the policy says
    assert any(ln.startswith("-A KUBE-EXTERNAL-SERVICES ") and "--dport 30080 -j DROP" in ln for ln in lines)
