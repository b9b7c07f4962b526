"""Node actions: the commands a scenario's timeline (and `Network.cmd`) runs inside one namespace.

Each module registers its actions with pktemu.timeline on import: `iptables` and
`iptables-restore` (rules), `ipset` (sets), `nft` (nftables), `conntrack` (-D, -F, -L),
`ip` (link, route, addr), `bridge` (hairpin), `sysctl`, `app` (start and stop an application).
"""
import pktemu.actions.apps  # noqa: F401
import pktemu.actions.conntrack  # noqa: F401
import pktemu.actions.ipcmd  # noqa: F401
import pktemu.actions.iptables  # noqa: F401
import pktemu.actions.ipset  # noqa: F401
import pktemu.actions.nft  # noqa: F401
