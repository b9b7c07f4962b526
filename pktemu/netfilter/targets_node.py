"""Targets that real nodes' dumps use: NFLOG, CHECKSUM, TCPMSS (none of them decides).

NFLOG keeps a copy of each frame per group in `ruleset.ext["nflog"]` (what `ulogd` or
`tcpdump -i nflog:N` would get); CHECKSUM is a no-op, the emulator's checksums always being
right; TCPMSS rewrites the MSS option of SYNs, fixing the TCP checksum.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from pktemu.errors import excerpt
from pktemu.net.frame import checksum
from pktemu.netfilter.core import FORWARD, OUTPUT, POSTROUTING
from pktemu.netfilter.xt_base import (
    XT_CONTINUE, Opt, ParseCtx, Pkt, Target, parse_uint, register_target, save_string,
)

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState


@register_target("NFLOG")
class NflogTarget(Target):
    """Records (time ns, frame bytes, prefix) per group; `--nflog-size` cuts the copy. The
    deprecated `--nflog-range` is accepted and ignored, as iptables 1.8 does (it warns)."""

    name = "NFLOG"
    options = {"--nflog-group": Opt("group"), "--nflog-prefix": Opt("prefix"),
               "--nflog-range": Opt("range"), "--nflog-size": Opt("size"),
               "--nflog-threshold": Opt("threshold")}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.group, self.prefix, self.threshold = 0, "", 0
        self.size: int | None = None
        self.sink: dict[int, list[tuple[int, bytes, str]]] = {}

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt == "group":
            self.group = parse_uint(args[0], ctx, "--nflog-group", 0, 0xFFFF)
        elif opt == "prefix":
            if len(args[0].encode("utf-8", "surrogatepass")) > 63:
                raise ctx.error(f"NFLOG: --nflog-prefix {excerpt(args[0])} longer than 63 characters")
            self.prefix = args[0]
        elif opt == "range":
            parse_uint(args[0], ctx, "--nflog-range")
        elif opt == "size":
            self.size = parse_uint(args[0], ctx, "--nflog-size")
        else:
            self.threshold = parse_uint(args[0], ctx, "--nflog-threshold", 0, 0xFFFF)

    def bind(self, ruleset: Any) -> None:
        self.sink = ruleset.ext.setdefault("nflog", {})

    def target(self, p: Pkt, state: "HookState") -> int:
        data = bytes(p.frame.data)
        if self.size is not None:
            data = data[:14 + self.size]
        self.sink.setdefault(self.group, []).append((state.node.now(), data, self.prefix))
        return XT_CONTINUE

    def save(self) -> str:
        s = f" --nflog-prefix{save_string(self.prefix)}" if self.prefix else ""
        if self.group:
            s += f" --nflog-group {self.group}"
        if self.size is not None:
            s += f" --nflog-size {self.size}"
        if self.threshold:
            s += f" --nflog-threshold {self.threshold}"
        return s


@register_target("CHECKSUM")
class ChecksumTarget(Target):
    """mangle only; `--checksum-fill` fills a checksum left to offload, which ours never are."""

    name = "CHECKSUM"
    table = "mangle"
    options = {"--checksum-fill": Opt("fill", nargs=0)}

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        pass

    def final_check(self, ctx: ParseCtx) -> None:
        if "fill" not in self.seen:
            raise ctx.error("CHECKSUM target: parameter --checksum-fill is required")

    def target(self, p: Pkt, state: "HookState") -> int:
        return XT_CONTINUE

    def save(self) -> str:
        return " --checksum-fill"


_MSS = struct.Struct("!BBH")


@register_target("TCPMSS")
class TcpmssTarget(Target):
    """xt_TCPMSS: lowers (never raises) the MSS option of a SYN to `--set-mss N` or to the path
    MTU - 40 (`--clamp-mss-to-pmtu`: the smaller MTU of the output and input devices). A SYN
    without an MSS option is left alone (the kernel would add one)."""

    name = "TCPMSS"
    notable = True
    options = {"--set-mss": Opt("set-mss"), "--clamp-mss-to-pmtu": Opt("clamp", nargs=0)}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.mss: int | None = None

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if self.seen - {opt}:
            raise ctx.error("TCPMSS target: only one of --set-mss and --clamp-mss-to-pmtu")
        if opt == "set-mss":
            self.mss = parse_uint(args[0], ctx, "--set-mss", 0, 0xFFFF)

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.seen:
            raise ctx.error("TCPMSS target: --set-mss or --clamp-mss-to-pmtu is required")
        if ctx.proto != 6 or ctx.proto_inv:
            raise ctx.error("TCPMSS target: only works on TCP ('-p tcp')")

    def check_hooks(self, hooks: frozenset[str]) -> str | None:
        if self.mss is None and hooks - {FORWARD, OUTPUT, POSTROUTING}:
            return ("target TCPMSS --clamp-mss-to-pmtu is reachable from "
                    f"{', '.join(sorted(hooks - {FORWARD, OUTPUT, POSTROUTING}))}; only valid from "
                    "FORWARD, OUTPUT, POSTROUTING")
        return None

    def _new_mss(self, state: "HookState") -> int:
        if self.mss is not None:
            return self.mss
        devs = getattr(state.node, "devices", {})
        mtus = [devs[d].mtu for d in (state.out_dev, state.in_dev) if d in devs]
        return min(mtus or [1500]) - 40

    def target(self, p: Pkt, state: "HookState") -> int:
        d = p.frame.data
        t = p.l4off
        end = 14 + p.ip_len
        if p.proto != 6 or p.fragoff or end > len(d) or t + 20 > end or not d[t + 13] & 0x02:
            return XT_CONTINUE
        i, opt_end = t + 20, min(t + (d[t + 12] >> 4) * 4, end)
        while i < opt_end:
            kind = d[i]
            if kind == 0:
                break
            if kind == 1:
                i += 1
                continue
            if i + 1 >= opt_end or d[i + 1] < 2:
                break
            if kind == 2 and d[i + 1] == 4 and i + 4 <= opt_end:
                old = _MSS.unpack_from(d, i)[2]
                new = self._new_mss(state)
                if new < old:
                    struct.pack_into("!H", d, i + 2, new)
                    _fix_tcp_checksum(d, p, t, end)
                    p.frame.note(f"TCPMSS: MSS {old} -> {new}")
                break
            i += d[i + 1]
        return XT_CONTINUE

    def save(self) -> str:
        return f" --set-mss {self.mss}" if self.mss is not None else " --clamp-mss-to-pmtu"


def _fix_tcp_checksum(d: bytearray, p: Pkt, t: int, end: int) -> None:
    """The TCP checksum over the pseudo-header and the segment, written in place."""
    d[t + 16:t + 18] = b"\0\0"
    pseudo = struct.pack("!IIBBH", p.saddr, p.daddr, 0, 6, end - t)
    struct.pack_into("!H", d, t + 16, checksum(pseudo + bytes(d[t:end])))
