"""Explanations: why a packet went where it went.

`comment` turns the notes the kernel path leaves on a frame into its pcapng comment; `ctinfo`
names conntrack state the way `nft` does; `collect` records one traced packet and its reply
hop by hop through a live Network, `model` holds what it records, `render` prints it as a tree
or JSON; `kube` answers kube-proxy's own packet-tracer question (which endpoints, masqueraded
or not) by running the real rules engine over every `statistic` branch.
"""
