"""Kubernetes manifests -> pktemu.k8s.objects: v1 Service, Endpoints and Pod, discovery.k8s.io/v1
EndpointSlice, one or many YAML documents per file, and `kind: List` as `kubectl get -o yaml` prints.

Only what Service networking reads is kept; the rest of a `kubectl get -o yaml` dump (status,
managedFields, container images...) is accepted and ignored. The fields that are read are
checked, and an unknown field inside a Service or EndpointSlice spec is an error (a misspelt
`targetport` must not pass silently). Errors are one line:
`file:line: Service default/service-test: spec.ports[0].port: expected an integer 1-65535, got 'x'`.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from pktemu.errors import PktemuError, excerpt, shorten
from pktemu.infile import load_yaml_all, read_text
from pktemu.k8s.manifest_fields import (
    Ctx, boolean, integer, ipv4, labels, mapping, port, protocol, seq, string,
)
from pktemu.k8s.objects import (
    ContainerPort, Endpoint, EndpointAddress, EndpointConditions, EndpointPort, Endpoints, EndpointSlice,
    EndpointSubset, ObjectMeta, Pod, Service, ServicePort,
)
from pktemu.units import parse_ipv4_interface

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
NETNS_ANNOTATION = "pktemu.io/netns"
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?\Z")   # IANA_SVC_NAME, 15 characters

_SERVICE_SPEC = {"type", "clusterIP", "clusterIPs", "selector", "ports", "sessionAffinity",
                 "sessionAffinityConfig", "externalTrafficPolicy", "internalTrafficPolicy", "externalIPs",
                 "loadBalancerSourceRanges", "loadBalancerIP", "loadBalancerClass", "healthCheckNodePort",
                 "ipFamilies", "ipFamilyPolicy", "externalName", "publishNotReadyAddresses",
                 "allocateLoadBalancerNodePorts", "trafficDistribution"}
_SERVICE_PORT = {"name", "protocol", "port", "targetPort", "nodePort", "appProtocol"}
_SLICE_ENDPOINT = {"addresses", "conditions", "nodeName", "targetRef", "hostname", "zone", "hints",
                   "deprecatedTopology"}


# ---------------------------------------------------------------------------- documents
def load_file(path: str) -> list[Any]:
    """Every object of a manifest file, in file order (List items in their order)."""
    return [obj for obj, _ in load_file_located(path)]


def load_file_located(path: str) -> list[tuple[Any, Ctx]]:
    """Like load_file, each object with where it was written (for later cross-object checks)."""
    return load_text_located(read_text(path, "manifest"), path)


def load_text(text: str, path: str) -> list[Any]:
    return [obj for obj, _ in load_text_located(text, path)]


def load_text_located(text: str, path: str) -> list[tuple[Any, Ctx]]:
    """Every object of `text`; the YAML is read within the bounds of pktemu.infile."""
    out: list[tuple[Any, Ctx]] = []
    for data, node in load_yaml_all(text, path):
        _collect(data, node, path, out)
    return out


def _collect(data: Any, node: yaml.Node, path: str, out: list[tuple[Any, Ctx]]) -> None:
    line = node.start_mark.line + 1
    if data is None:
        return
    if not isinstance(data, dict):
        raise PktemuError(f"{path}:{line}: expected a Kubernetes object (a mapping), "
                          f"got {type(data).__name__}")
    kind = data.get("kind")
    if isinstance(kind, str) and kind.endswith("List"):
        items = data.get("items") or []
        if not isinstance(items, list):
            raise PktemuError(f"{path}:{line}: {shorten(kind)}: items: expected a list")
        item_nodes = _item_nodes(node)
        for i, item in enumerate(items):
            _collect(item, item_nodes[i] if i < len(item_nodes) else node, path, out)
        return
    ctx = Ctx(path, line, shorten(kind, 40) if isinstance(kind, str) else excerpt(kind, 40))
    out.append((parse_object(data, ctx), ctx))


def _item_nodes(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if getattr(k, "value", None) == "items" and isinstance(v, yaml.SequenceNode):
                return list(v.value)
    return []


def parse_object(data: dict[str, Any], ctx: Ctx) -> Any:
    """One object of a known kind; `ctx.obj` is refined to `Kind ns/name` once the name is read."""
    kind = data.get("kind")
    parsers = {"Service": (("v1",), _service), "Pod": (("v1",), _pod), "Endpoints": (("v1",), _endpoints),
               "EndpointSlice": (("discovery.k8s.io/v1",), _endpointslice)}
    if not isinstance(kind, str) or kind not in parsers:
        raise ctx.error("kind", f"unsupported kind {excerpt(kind)} (supported: {', '.join(parsers)}, List)")
    versions, parser = parsers[kind]
    if data.get("apiVersion") not in versions:
        raise ctx.error("apiVersion", f"{kind} needs apiVersion {' or '.join(versions)}, "
                                      f"got {excerpt(data.get('apiVersion'))}")
    meta = _meta(data.get("metadata"), ctx, kind)
    ctx.obj = f"{kind} {meta.key}"
    return parser(data, meta, ctx)


def _meta(v: Any, ctx: Ctx, kind: str) -> ObjectMeta:
    m = mapping(v, ctx, "metadata")
    if m.get("name") is None:
        raise ctx.error("metadata.name", "required")
    name = string(m["name"], ctx, "metadata.name")
    ns = string(m.get("namespace", "default"), ctx, "metadata.namespace")
    pat = _DNS_LABEL if kind == "Service" else _DNS_SUBDOMAIN
    if not pat.match(name):
        raise ctx.error("metadata.name", f"not a valid {kind} name: {excerpt(name)} "
                                         "(lower-case letters, digits, '-')")
    if not _DNS_LABEL.match(ns):
        raise ctx.error("metadata.namespace", f"not a valid namespace: {excerpt(ns)}")
    return ObjectMeta(name, ns, labels(m.get("labels"), ctx, "metadata.labels"),
                      labels(m.get("annotations"), ctx, "metadata.annotations"))


# ---------------------------------------------------------------------------- Service
def _service(data: dict[str, Any], meta: ObjectMeta, ctx: Ctx) -> Service:
    spec = mapping(data.get("spec"), ctx, "spec", _SERVICE_SPEC)
    svc = Service(meta)
    stype = spec.get("type") or "ClusterIP"
    if stype not in SERVICE_TYPES:
        raise ctx.error("spec.type", f"expected one of {', '.join(SERVICE_TYPES)}, got {excerpt(stype)}")
    svc.type = stype
    cip = spec.get("clusterIP")
    if cip is None and spec.get("clusterIPs"):
        cip = seq(spec["clusterIPs"], ctx, "spec.clusterIPs")[0]
    if cip == "None":
        if svc.type != "ClusterIP":
            raise ctx.error("spec.clusterIP",
                            f"None (headless) is only valid with type ClusterIP, not {svc.type}")
        svc.headless = True
    elif cip not in (None, ""):
        svc.cluster_ip = ipv4(cip, ctx, "spec.clusterIP")
    if spec.get("selector") is not None:
        svc.selector = labels(spec["selector"], ctx, "spec.selector")
    names: set[str] = set()
    ports = seq(spec.get("ports"), ctx, "spec.ports")
    for i, pv in enumerate(ports):
        svc.ports.append(_service_port(pv, ctx, f"spec.ports[{i}]", svc.type, multi=len(ports) > 1,
                                       names=names))
    if not svc.ports and not svc.headless and svc.type != "ExternalName":
        raise ctx.error("spec.ports", "a Service needs at least one port (unless it is headless)")
    seen: set[tuple[int, str]] = set()
    for i, p in enumerate(svc.ports):
        if (p.port, p.protocol) in seen:
            raise ctx.error(f"spec.ports[{i}]", f"duplicate port {p.port}/{p.protocol}")
        seen.add((p.port, p.protocol))
    affinity = spec.get("sessionAffinity") or "None"
    if affinity not in ("None", "ClientIP"):
        raise ctx.error("spec.sessionAffinity", f"expected None or ClientIP, got {excerpt(affinity)}")
    svc.session_affinity = affinity
    sac = mapping(spec.get("sessionAffinityConfig"), ctx, "spec.sessionAffinityConfig", {"clientIP"})
    cip_cfg = mapping(sac.get("clientIP"), ctx, "spec.sessionAffinityConfig.clientIP", {"timeoutSeconds"})
    if cip_cfg.get("timeoutSeconds") is not None:
        svc.affinity_timeout_seconds = integer(cip_cfg["timeoutSeconds"], ctx,
                                            "spec.sessionAffinityConfig.clientIP.timeoutSeconds", 1, 86400)
    for key, attr in (("externalTrafficPolicy", "external_traffic_policy"),
                      ("internalTrafficPolicy", "internal_traffic_policy")):
        v = spec.get(key)
        if v is None:
            continue
        if v not in ("Cluster", "Local"):
            raise ctx.error(f"spec.{key}", f"expected Cluster or Local, got {excerpt(v)}")
        setattr(svc, attr, v)
    if svc.external_traffic_policy == "Local" and svc.type not in ("NodePort", "LoadBalancer") \
            and not spec.get("externalIPs"):
        raise ctx.error("spec.externalTrafficPolicy", "Local only applies to NodePort, LoadBalancer or "
                                                      "externalIPs Services")
    svc.external_ips = [ipv4(v, ctx, f"spec.externalIPs[{i}]")
                        for i, v in enumerate(seq(spec.get("externalIPs"), ctx, "spec.externalIPs"))]
    for i, r in enumerate(seq(spec.get("loadBalancerSourceRanges"), ctx, "spec.loadBalancerSourceRanges")):
        try:
            net = parse_ipv4_interface(string(r, ctx, f"spec.loadBalancerSourceRanges[{i}]")).network
            svc.load_balancer_source_ranges.append(str(net))
        except ValueError as e:
            raise ctx.error(f"spec.loadBalancerSourceRanges[{i}]", f"not a CIDR: {excerpt(r)} ({e})"
                            ) from None
    if spec.get("healthCheckNodePort") is not None:
        svc.health_check_node_port = port(spec["healthCheckNodePort"], ctx, "spec.healthCheckNodePort")
    status = mapping(data.get("status"), ctx, "status")
    lb = mapping(status.get("loadBalancer"), ctx, "status.loadBalancer")
    for i, ing in enumerate(seq(lb.get("ingress"), ctx, "status.loadBalancer.ingress")):
        im = mapping(ing, ctx, f"status.loadBalancer.ingress[{i}]")
        if im.get("ip") is not None:
            svc.load_balancer_ips.append(ipv4(im["ip"], ctx, f"status.loadBalancer.ingress[{i}].ip"))
    return svc


def _service_port(v: Any, ctx: Ctx, field: str, stype: str, multi: bool, names: set[str]) -> ServicePort:
    m = mapping(v, ctx, field, _SERVICE_PORT)
    if m.get("port") is None:
        raise ctx.error(f"{field}.port", "required")
    p = ServicePort(port(m["port"], ctx, f"{field}.port"),
                    protocol(m.get("protocol"), ctx, f"{field}.protocol"))
    if m.get("name") is not None:
        p.name = string(m["name"], ctx, f"{field}.name")
        if p.name and not _DNS_LABEL.match(p.name):
            raise ctx.error(f"{field}.name", f"not a valid port name: {excerpt(p.name)}")
    if multi and not p.name:
        raise ctx.error(f"{field}.name", "required when a Service has more than one port")
    if p.name in names:
        raise ctx.error(f"{field}.name", f"duplicate port name {p.name!r}")
    names.add(p.name)
    tp = m.get("targetPort")
    if isinstance(tp, str) and tp.isdigit():
        tp = int(tp)
    if isinstance(tp, str):
        if not _PORT_NAME.match(tp):
            raise ctx.error(f"{field}.targetPort", f"not a port number or port name: {excerpt(tp)}")
        p.target_port = tp
    elif tp is not None:
        p.target_port = port(tp, ctx, f"{field}.targetPort")
    if m.get("nodePort") is not None:
        if stype not in ("NodePort", "LoadBalancer"):
            raise ctx.error(f"{field}.nodePort", f"only NodePort and LoadBalancer Services have node ports, "
                                                 f"not {stype}")
        p.node_port = port(m["nodePort"], ctx, f"{field}.nodePort")
    return p


# ---------------------------------------------------------------------------- EndpointSlice / Endpoints
def _endpoint_port(v: Any, ctx: Ctx, field: str) -> EndpointPort:
    m = mapping(v, ctx, field, {"name", "port", "protocol", "appProtocol"})
    if m.get("port") is None:
        raise ctx.error(f"{field}.port", "required")
    return EndpointPort(port(m["port"], ctx, f"{field}.port"),
                        protocol(m.get("protocol"), ctx, f"{field}.protocol"),
                        string(m.get("name") or "", ctx, f"{field}.name"))


def _target_pod(v: Any, ctx: Ctx, field: str) -> str | None:
    m = mapping(v, ctx, field)
    if m.get("kind", "Pod") != "Pod" or m.get("name") is None:
        return None
    return string(m["name"], ctx, f"{field}.name")


def _endpointslice(data: dict[str, Any], meta: ObjectMeta, ctx: Ctx) -> EndpointSlice:
    svc = meta.labels.get(SERVICE_NAME_LABEL)
    if not svc:
        raise ctx.error(f"metadata.labels.{SERVICE_NAME_LABEL}",
                        "required: the Service this slice belongs to")
    at = data.get("addressType")
    if at != "IPv4":
        raise ctx.error("addressType", f"only IPv4 is supported, got {excerpt(at)}")
    es = EndpointSlice(meta, svc)
    for i, ev in enumerate(seq(data.get("endpoints"), ctx, "endpoints")):
        f = f"endpoints[{i}]"
        m = mapping(ev, ctx, f, _SLICE_ENDPOINT)
        addrs = [ipv4(a, ctx, f"{f}.addresses[{j}]") for j, a in enumerate(seq(m.get("addresses"), ctx,
                                                                                 f"{f}.addresses"))]
        if not addrs:
            raise ctx.error(f"{f}.addresses", "needs at least one address")
        c = mapping(m.get("conditions"), ctx, f"{f}.conditions", {"ready", "serving", "terminating"})
        cond = EndpointConditions(boolean(c.get("ready"), ctx, f"{f}.conditions.ready"),
                                  boolean(c.get("serving"), ctx, f"{f}.conditions.serving"),
                                  boolean(c.get("terminating"), ctx, f"{f}.conditions.terminating"))
        node = string(m["nodeName"], ctx, f"{f}.nodeName") if m.get("nodeName") is not None else None
        pod = _target_pod(m.get("targetRef"), ctx, f"{f}.targetRef")
        es.endpoints.append(Endpoint(addrs, cond, node, pod))
    es.ports = [_endpoint_port(p, ctx, f"ports[{i}]")
                for i, p in enumerate(seq(data.get("ports"), ctx, "ports"))]
    return es


def _endpoints(data: dict[str, Any], meta: ObjectMeta, ctx: Ctx) -> Endpoints:
    ep = Endpoints(meta)
    for i, sv in enumerate(seq(data.get("subsets"), ctx, "subsets")):
        f = f"subsets[{i}]"
        m = mapping(sv, ctx, f, {"addresses", "notReadyAddresses", "ports"})
        sub = EndpointSubset()
        for key, out in (("addresses", sub.addresses), ("notReadyAddresses", sub.not_ready_addresses)):
            for j, av in enumerate(seq(m.get(key), ctx, f"{f}.{key}")):
                am = mapping(av, ctx, f"{f}.{key}[{j}]", {"ip", "nodeName", "targetRef", "hostname"})
                if am.get("ip") is None:
                    raise ctx.error(f"{f}.{key}[{j}].ip", "required")
                node = am.get("nodeName")
                at = f"{f}.{key}[{j}]"
                out.append(EndpointAddress(ipv4(am["ip"], ctx, f"{at}.ip"),
                                           None if node is None else string(node, ctx, f"{at}.nodeName"),
                                           _target_pod(am.get("targetRef"), ctx, f"{at}.targetRef")))
        sub.ports = [_endpoint_port(p, ctx, f"{f}.ports[{j}]") for j, p in enumerate(seq(m.get("ports"), ctx,
                                                                                           f"{f}.ports"))]
        ep.subsets.append(sub)
    return ep


# ---------------------------------------------------------------------------- Pod
def _pod(data: dict[str, Any], meta: ObjectMeta, ctx: Ctx) -> Pod:
    spec = mapping(data.get("spec"), ctx, "spec")
    status = mapping(data.get("status"), ctx, "status")
    pod = Pod(meta)
    if spec.get("nodeName") is not None:
        pod.node_name = string(spec["nodeName"], ctx, "spec.nodeName")
    if spec.get("terminationGracePeriodSeconds") is not None:
        pod.termination_grace_seconds = integer(spec["terminationGracePeriodSeconds"], ctx,
                                             "spec.terminationGracePeriodSeconds", 0, 2**31 - 1)
    for i, cv in enumerate(seq(spec.get("containers"), ctx, "spec.containers")):
        cm = mapping(cv, ctx, f"spec.containers[{i}]")
        for j, pv in enumerate(seq(cm.get("ports"), ctx, f"spec.containers[{i}].ports")):
            f = f"spec.containers[{i}].ports[{j}]"
            pm = mapping(pv, ctx, f, {"containerPort", "protocol", "name", "hostPort", "hostIP"})
            if pm.get("containerPort") is None:
                raise ctx.error(f"{f}.containerPort", "required")
            pod.ports.append(ContainerPort(port(pm["containerPort"], ctx, f"{f}.containerPort"),
                                           protocol(pm.get("protocol"), ctx, f"{f}.protocol"),
                                           string(pm.get("name") or "", ctx, f"{f}.name")))
    if status.get("podIP") is not None:
        pod.pod_ip = ipv4(status["podIP"], ctx, "status.podIP")
    for i, cv in enumerate(seq(status.get("conditions"), ctx, "status.conditions")):
        cm = mapping(cv, ctx, f"status.conditions[{i}]")
        if cm.get("type") == "Ready":
            st = cm.get("status")
            if st not in ("True", "False", "Unknown"):
                raise ctx.error(f"status.conditions[{i}].status",
                                f"expected \"True\" or \"False\", got {excerpt(st)}")
            pod.ready = st == "True"
    pod.terminating = mapping(data.get("metadata"), ctx, "metadata").get("deletionTimestamp") is not None
    pod.netns = meta.annotations.get(NETNS_ANNOTATION)
    return pod
