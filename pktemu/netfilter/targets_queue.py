"""`-j NFQUEUE`: hand the packet to the namespace's queue handler (pktemu.netfilter.nfqueue)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.netfilter.core import NF_ACCEPT, NF_DROP
from pktemu.netfilter.xt_base import Opt, ParseCtx, Pkt, Target, parse_uint, register_target

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState

_REFUSED = ("--queue-balance", "--fail-open", "--queue-cpu-fanout")


@register_target("NFQUEUE")
class NfqueueTarget(Target):
    """xt_NFQUEUE v3 with one queue: the handler's verdict, or without one DROP (ACCEPT with
    --queue-bypass), as nf_queue does when nobody listens on the queue."""

    name = "NFQUEUE"
    notable = True
    options = {"--queue-num": Opt("queue-num"), "--queue-bypass": Opt("queue-bypass", nargs=0),
               **{o: Opt(o[2:], nargs=1 if o == "--queue-balance" else 0) for o in _REFUSED}}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.num = 0
        self.bypass = False

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt == "queue-num":
            self.num = parse_uint(args[0], ctx, "queue number", 0, 65535)
        elif opt == "queue-bypass":
            self.bypass = True
        else:
            raise ctx.error(f"NFQUEUE: --{opt} is not supported by pktemu (one queue per rule: "
                            "use --queue-num N [--queue-bypass])")

    def target(self, p: Pkt, state: "HookState") -> int:
        deliver = state.nf.queues.get(self.num) if state.nf is not None else None
        if deliver is None:
            return NF_ACCEPT if self.bypass else NF_DROP
        verdict: int = deliver(p.frame, state)
        return verdict

    def save(self) -> str:
        return f" --queue-num {self.num}" + (" --queue-bypass" if self.bypass else "")

    def summary(self, p: Pkt, state: "HookState") -> str:
        listening = state.nf is not None and self.num in state.nf.queues
        return f"NFQUEUE {self.num}" + ("" if listening else
                                        " (no handler: " + ("bypass" if self.bypass else "DROP") + ")")
