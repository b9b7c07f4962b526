"""The Kubernetes layer: API objects, the API server, kube-proxy, the cluster DNS.

Importing it registers the app kinds that belong to this layer (`cluster-dns`, in `coredns`).
"""
from pktemu.k8s import coredns  # noqa: F401
