"""Socket errors as Linux reports them: errno names, their text, and the ICMP -> errno table.

Sockets report failures by errno *name* ("ECONNREFUSED"); apps that imitate a Python program
(the oracle's client) turn a name into the text Python would print with `describe`.
"""
from __future__ import annotations

from pktemu.errors import PktemuError

#: errno name -> (number, strerror, the OSError subclass Python raises for it)
ERRNO: dict[str, tuple[int, str, str]] = {
    "EBADF": (9, "Bad file descriptor", "OSError"),
    "EINVAL": (22, "Invalid argument", "OSError"),
    "EPIPE": (32, "Broken pipe", "BrokenPipeError"),
    "ENONET": (64, "Machine is not on the network", "OSError"),
    "EPROTO": (71, "Protocol error", "OSError"),
    "EDESTADDRREQ": (89, "Destination address required", "OSError"),
    "EMSGSIZE": (90, "Message too long", "OSError"),
    "ENOPROTOOPT": (92, "Protocol not available", "OSError"),
    "EOPNOTSUPP": (95, "Operation not supported", "OSError"),
    "EADDRINUSE": (98, "Address already in use", "OSError"),
    "EADDRNOTAVAIL": (99, "Cannot assign requested address", "OSError"),
    "ENETUNREACH": (101, "Network is unreachable", "OSError"),
    "ECONNABORTED": (103, "Software caused connection abort", "ConnectionAbortedError"),
    "ECONNRESET": (104, "Connection reset by peer", "ConnectionResetError"),
    "ETIMEDOUT": (110, "Connection timed out", "TimeoutError"),
    "ECONNREFUSED": (111, "Connection refused", "ConnectionRefusedError"),
    "EHOSTDOWN": (112, "Host is down", "OSError"),
    "EHOSTUNREACH": (113, "No route to host", "OSError"),
}

#: icmp_err_convert[] (net/ipv4/icmp.c): destination-unreachable code -> (errno, fatal for UDP).
UNREACH_ERRNO: tuple[tuple[str, bool], ...] = (
    ("ENETUNREACH", False),   # 0 net unreachable
    ("EHOSTUNREACH", False),  # 1 host unreachable
    ("ENOPROTOOPT", True),    # 2 protocol unreachable
    ("ECONNREFUSED", True),   # 3 port unreachable
    ("EMSGSIZE", False),      # 4 fragmentation needed
    ("EOPNOTSUPP", False),    # 5 source route failed
    ("ENETUNREACH", True),    # 6 net unknown
    ("EHOSTDOWN", True),      # 7 host unknown
    ("ENONET", True),         # 8 host isolated
    ("ENETUNREACH", True),    # 9 net prohibited
    ("EHOSTUNREACH", True),   # 10 host prohibited
    ("ENETUNREACH", False),   # 11 net unreachable for TOS
    ("EHOSTUNREACH", False),  # 12 host unreachable for TOS
    ("EHOSTUNREACH", True),   # 13 communication administratively prohibited
    ("EHOSTUNREACH", True),   # 14 host precedence violation
    ("EHOSTUNREACH", True),   # 15 precedence cutoff
)

ICMP_DEST_UNREACH = 3
ICMP_SOURCE_QUENCH = 4
ICMP_TIME_EXCEEDED = 11
ICMP_PARAMETERPROB = 12
ICMP_FRAG_NEEDED = 4


def icmp_errno(icmp_type: int, code: int) -> tuple[str, bool] | None:
    """(errno name, hard error) for an ICMP error, None when the kernel ignores it for sockets."""
    if icmp_type == ICMP_DEST_UNREACH:
        if code >= len(UNREACH_ERRNO) or code == ICMP_FRAG_NEEDED:
            return None
        return UNREACH_ERRNO[code]
    if icmp_type == ICMP_TIME_EXCEEDED:
        return "EHOSTUNREACH", False
    if icmp_type == ICMP_PARAMETERPROB:
        return "EPROTO", True
    return None


def strerror(name: str) -> str:
    return ERRNO[name][1] if name in ERRNO else name


def describe(name: str) -> str:
    """What `f"{type(e).__name__}: {e}"` prints in Python for this errno."""
    num, text, cls = ERRNO.get(name, (0, name, "OSError"))
    return f"{cls}: [Errno {num}] {text}"


class SockError(PktemuError):
    """A socket call failed synchronously (bind/connect/send), like the syscall's -errno."""

    def __init__(self, errno_name: str, what: str) -> None:
        super().__init__(f"{what}: {errno_name} ({strerror(errno_name)})")
        self.errno_name = errno_name
