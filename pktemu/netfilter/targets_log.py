"""Targets that record or untrack without deciding: LOG and CT --notrack / NOTRACK.

LOG keeps a kernel-log-like line in the ruleset (one list per namespace) instead of printing;
CT --notrack gives the packet the untracked conntrack so conntrack-in leaves it alone.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pktemu.netfilter.core import UNTRACKED
from pktemu.netfilter.xt_base import (
    XT_CONTINUE, Opt, ParseCtx, Pkt, Target, ip_str, parse_uint, register_target, save_string,
)

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState

# ---------------------------------------------------------------------- LOG / CT / NOTRACK
LOG_LEVELS = {"emerg": 0, "panic": 0, "alert": 1, "crit": 2, "error": 3, "err": 3, "warning": 4,
              "warn": 4, "notice": 5, "info": 6, "debug": 7}
_LOG_FLAGS = ("log-tcp-sequence", "log-tcp-options", "log-ip-options", "log-uid", "log-macdecode")


@register_target("LOG")
class LogTarget(Target):
    """Records a kernel-log-like line in the ruleset's `log` list; the packet goes on."""

    name = "LOG"
    options = {"--log-level": Opt("log-level"), "--log-prefix": Opt("log-prefix"),
               **{f"--{o}": Opt(o, nargs=0) for o in _LOG_FLAGS}}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.level = 4
        self.prefix = ""
        self.sink: list[tuple[int, str]] = []

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt == "log-level":
            a = args[0].lower()
            self.level = LOG_LEVELS[a] if a in LOG_LEVELS else parse_uint(a, ctx, "log level", 0, 7)
        elif opt == "log-prefix":
            if len(args[0].encode("utf-8", "surrogatepass")) > 29:
                raise ctx.error("LOG: --log-prefix longer than 29 characters")
            self.prefix = args[0]

    def bind(self, ruleset: Any) -> None:
        self.sink = ruleset.log

    def target(self, p: Pkt, state: "HookState") -> int:
        line = (f"{self.prefix}IN={state.in_dev or ''} OUT={state.out_dev or ''} SRC={ip_str(p.saddr)} "
                f"DST={ip_str(p.daddr)} LEN={p.ip_len} TTL={p.ttl} PROTO={p.proto}")
        if p.sport >= 0:
            line += f" SPT={p.sport} DPT={p.dport}"
        self.sink.append((state.node.now(), line))
        return XT_CONTINUE

    def save(self) -> str:
        s = f" --log-prefix{save_string(self.prefix)}" if self.prefix else ""
        if self.level != 4:
            s += f" --log-level {self.level}"
        return s + "".join(f" --{o}" for o in _LOG_FLAGS if o in self.seen)


@register_target("CT", "NOTRACK")
class CtTarget(Target):
    """raw-table conntrack templates; only --notrack is modelled (`-j NOTRACK` is its alias)."""

    name = "CT"
    table = "raw"
    notable = True
    options = {"--notrack": Opt("notrack", nargs=0)}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        if name == "NOTRACK":
            self.options = {}             # type: ignore[misc]
            self.seen.add("notrack")

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        pass

    def target(self, p: Pkt, state: "HookState") -> int:
        f = p.frame
        if "notrack" in self.seen and f.ct is None:
            f.ct, f.ctinfo = UNTRACKED, None
        return XT_CONTINUE

    def save(self) -> str:
        return " --notrack" if self.ext_name == "CT" and "notrack" in self.seen else ""

    def summary(self, p: Pkt, state: "HookState") -> str:
        return "NOTRACK" if "notrack" in self.seen else "CT"
