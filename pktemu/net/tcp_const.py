"""TCP states and the Linux defaults the stack runs with (sysctls and kernel constants)."""
from __future__ import annotations

from pktemu.sim import MS, SECOND

CLOSED = "CLOSED"
SYN_SENT = "SYN_SENT"
SYN_RECV = "SYN_RECV"
ESTABLISHED = "ESTABLISHED"
FIN_WAIT1 = "FIN_WAIT1"
FIN_WAIT2 = "FIN_WAIT2"
CLOSE_WAIT = "CLOSE_WAIT"
CLOSING = "CLOSING"
LAST_ACK = "LAST_ACK"
TIME_WAIT = "TIME_WAIT"

ADVMSS = 1460                  # MTU 1500 - 40: a route whose device is unknown
MSS_DEFAULT = 536              # TCP_MSS_DEFAULT: peer sent no MSS option
WSCALE = 10                    # what the kernel reference advertised (tcp_rmem max 6 MB)
RTO_INIT = 1 * SECOND          # TCP_TIMEOUT_INIT
RTO_MIN = 200 * MS
RTO_MAX = 120 * SECOND
ATO_MIN = 40 * MS              # TCP_ATO_MIN = TCP_DELACK_MIN
DELACK_MAX = 200 * MS
TICK = 4 * MS                  # one jiffy at HZ=250: a delayed ACK "now" fires on the next tick
MAX_QUICKACKS = 16
TIMEWAIT_LEN = 60 * SECOND
FIN_TIMEOUT = 60 * SECOND      # tcp_fin_timeout
SYN_RETRIES = 6
SYNACK_RETRIES = 5
RETRIES2 = 15
ORPHAN_RETRIES = 8
EARLY_RETRANS = 3              # net.ipv4.tcp_early_retrans: 3 and 4 send tail loss probes
OOW_RATELIMIT = 500 * MS       # tcp_invalid_ratelimit


def syn_window(mss: int) -> int:
    """tcp_select_initial_window(): 65535 rounded down to a multiple of the MSS."""
    return (65535 // mss) * mss


def advmss(mtu: int) -> int:
    """ipv4_default_advmss(): the route's MTU less the IP and TCP headers, at most 65535 - 40."""
    return max(min(mtu, 65535) - 40, 256)


def raw_window(mss: int) -> int:
    """The window field after the handshake: the initial window (syn_window of the MSS it was
    cut to), which __tcp_select_window never shrinks, rounded up to the window scale's unit
    (63 for an MSS of 1460, 64 for 1448, as the kernel showed)."""
    return -(-syn_window(mss) >> WSCALE)
