"""Kubernetes API objects, as much of them as Service networking reads (core/v1, discovery/v1).

Plain data, no behaviour: manifests are parsed into these (pktemu.k8s.manifests), the API server
stores them (pktemu.k8s.apiserver), kube-proxy and the cluster DNS read them. Field names follow
the API's JSON names in snake_case.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ObjectMeta:
    name: str
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    #: set by the API server on creation and kept on updates: the order objects were created in,
    #: which kube-proxy uses where upstream iterates a Go map (so output is deterministic)
    creation_seq: int = 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class ServicePort:
    port: int
    protocol: str = "TCP"                 # TCP | UDP | SCTP
    name: str = ""
    target_port: int | str | None = None  # a number, a named container port, or None (= port)
    node_port: int | None = None


@dataclass
class Service:
    meta: ObjectMeta
    ports: list[ServicePort] = field(default_factory=list)
    type: str = "ClusterIP"               # ClusterIP | NodePort | LoadBalancer | ExternalName
    cluster_ip: str | None = None         # "None" in a manifest = headless -> headless=True, cluster_ip None
    headless: bool = False
    selector: dict[str, str] | None = None
    session_affinity: str = "None"        # None | ClientIP
    affinity_timeout_seconds: int = 10800
    external_traffic_policy: str = "Cluster"   # Cluster | Local
    internal_traffic_policy: str = "Cluster"   # Cluster | Local
    external_ips: list[str] = field(default_factory=list)
    load_balancer_ips: list[str] = field(default_factory=list)     # status.loadBalancer.ingress[].ip
    load_balancer_source_ranges: list[str] = field(default_factory=list)
    health_check_node_port: int | None = None


@dataclass
class EndpointConditions:
    ready: bool | None = True
    serving: bool | None = None
    terminating: bool | None = None


@dataclass
class EndpointPort:
    port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass
class Endpoint:
    addresses: list[str]
    conditions: EndpointConditions = field(default_factory=EndpointConditions)
    node_name: str | None = None
    target_pod: str | None = None         # targetRef name of a Pod, if any


@dataclass
class EndpointSlice:
    meta: ObjectMeta
    service_name: str                     # label kubernetes.io/service-name
    address_type: str = "IPv4"
    endpoints: list[Endpoint] = field(default_factory=list)
    ports: list[EndpointPort] = field(default_factory=list)


@dataclass
class ContainerPort:
    container_port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass
class Pod:
    meta: ObjectMeta
    node_name: str | None = None
    pod_ip: str | None = None
    ready: bool = True                    # status.conditions[Ready]
    ports: list[ContainerPort] = field(default_factory=list)
    #: the topology pod (network namespace) this Pod object runs in, when they differ by name
    netns: str | None = None
    terminating: bool = False             # metadata.deletionTimestamp is set
    termination_grace_seconds: int = 30


@dataclass
class EndpointAddress:
    ip: str
    node_name: str | None = None
    target_pod: str | None = None


@dataclass
class EndpointSubset:
    addresses: list[EndpointAddress] = field(default_factory=list)
    not_ready_addresses: list[EndpointAddress] = field(default_factory=list)
    ports: list[EndpointPort] = field(default_factory=list)


@dataclass
class Endpoints:
    """core/v1 Endpoints: mirrored into an EndpointSlice, as the mirroring controller does."""
    meta: ObjectMeta
    subsets: list[EndpointSubset] = field(default_factory=list)


KINDS = ("Service", "EndpointSlice", "Endpoints", "Pod")
