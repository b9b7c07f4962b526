"""One iptables command line -> command + rules, parsed the way iptables' do_parse does it.

Options bind like getopt does in iptables: an option belongs to the target if one is loaded and
knows it, else to the first loaded match that knows it (a repeated `-m X` closes the earlier X),
else the protocol named by `-p` is loaded as an implicit match (`-p tcp --dport 80` becomes
`-p tcp -m tcp --dport 80`). An option nobody knows is an error, never skipped.

Parsing is linear in the line's length. What iptables-restore bounds is bounded the same way: a
line has at most MAX_ARGS arguments, each at most MAX_ARG_CHARS characters (its argv and parameter
buffer). `-s`/`-d` address lists, which expand a line into one rule per source x destination, may
add at most `ParseCtx.expansion` rule parts (a rule counts 1 + its matches) to one input
(xt_base.MAX_EXPANSION); past these limits the line is refused.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from pktemu.errors import PktemuError, excerpt
import pktemu.netfilter.matches  # noqa: F401  (registers the matches)
import pktemu.netfilter.targets  # noqa: F401  (registers the targets)
from pktemu.netfilter.xt_base import (
    MATCHES, TARGETS, Extension, Match, ParseCtx, ifname_check, parse_cidr, parse_proto, parse_uint,
    proto_name,
)
from pktemu.netfilter.xt_fast import fast_rule
from pktemu.netfilter.xt_rule import K_EXT, K_GOTO, K_JUMP, STANDARD, Rule, shared_ext as _shared

COMMANDS = {
    "-A": "A", "--append": "A", "-I": "I", "--insert": "I", "-D": "D", "--delete": "D",
    "-R": "R", "--replace": "R", "-N": "N", "--new-chain": "N", "--new": "N",
    "-X": "X", "--delete-chain": "X", "-F": "F", "--flush": "F", "-P": "P", "--policy": "P",
    "-Z": "Z", "--zero": "Z",
}
_BASE = {
    **dict.fromkeys(("-s", "--source", "--src"), "s"), **dict.fromkeys(("-d", "--destination", "--dst"), "d"),
    **dict.fromkeys(("-p", "--protocol"), "p"), **dict.fromkeys(("-i", "--in-interface"), "i"),
    **dict.fromkeys(("-o", "--out-interface"), "o"), **dict.fromkeys(("-f", "--fragment"), "f"),
    **dict.fromkeys(("-m", "--match"), "m"), **dict.fromkeys(("-j", "--jump"), "j"),
    **dict.fromkeys(("-g", "--goto"), "g"), **dict.fromkeys(("-c", "--set-counters"), "c"),
    **dict.fromkeys(("-t", "--table"), "t"), **dict.fromkeys(("-4", "--ipv4"), "4"),
    **dict.fromkeys(("-6", "--ipv6"), "6"), **{k: "cmd" for k in COMMANDS},
}


MAX_ARGS = 251            # iptables-restore: 255 argv entries, 3 taken by the program name, -t, table
MAX_ARG_CHARS = 1023      # iptables-restore's parameter buffer (1024 with the NUL)

_BARE_RE = re.compile(r"[^ \t]+")
_TOKEN_RE = re.compile(r"""((?:"(?:[^"\\]|\\.)*"|'[^']*'|[^ \t"'])+)|(["'])""", re.S)
_PIECE_RE = re.compile(r""""((?:[^"\\]|\\.)*)"|'([^']*)'|([^"']+)""", re.S)
_UNESCAPE_RE = re.compile(r"\\(.)", re.S)
_BLANKS_RE = re.compile(r"[ \t]+")
def _unquote(tok: str) -> str:
    out = []
    for dq, sq, bare in _PIECE_RE.findall(tok):
        out.append(_UNESCAPE_RE.sub(r"\1", dq) if dq else sq or bare)
    return "".join(out)


def tokenize(line: str, where: str) -> list[str]:
    """Split like iptables-restore: spaces and tabs separate (no other blank does), "..." groups (with
    \\ escapes), '...' too; its limits on the number and length of arguments hold."""
    if '"' not in line and "'" not in line:
        toks = _BARE_RE.findall(line)
    elif "'" not in line and "\\" not in line and line.count('"') % 2 == 0:
        toks = _split_double_quoted(line)
    else:
        toks = []
        for tok, stray in _TOKEN_RE.findall(line):
            if stray:
                raise PktemuError(f"{where}: unterminated {stray} quote")
            toks.append(_unquote(tok) if '"' in tok or "'" in tok else tok)
    if len(toks) > MAX_ARGS:
        raise PktemuError(f"{where}: too many arguments ({len(toks)}; iptables-restore takes at most "
                          f"{MAX_ARGS} on a line)")
    longest = max(toks, key=len, default="") if len(line) > MAX_ARG_CHARS else ""
    if len(longest) > MAX_ARG_CHARS:
        raise PktemuError(f"{where}: argument {excerpt(longest)} too long ({len(longest)} characters; "
                          f"iptables-restore takes at most {MAX_ARG_CHARS})")
    return toks


def _split_double_quoted(line: str) -> list[str]:
    """`tokenize` of a line whose only quoting is balanced "..." without escapes (kube-proxy's
    comments): the text between quotes joins the word it is written in, blanks included."""
    toks: list[str] = []
    cur: str | None = None                  # the word being built, if any
    for k, part in enumerate(line.split('"')):
        if k % 2:
            cur = (cur or "") + part
            continue
        pieces = _BLANKS_RE.split(part)
        if len(pieces) == 1:
            if part:
                cur = (cur or "") + part
            continue
        if cur is not None or pieces[0]:
            toks.append((cur or "") + pieces[0])
        toks.extend(pieces[1:-1])
        cur = pieces[-1] or None
    if cur is not None:
        toks.append(cur)
    return toks


@dataclass
class Command:
    """A parsed line: the command letter, its chain / number / policy, and its rules (if any)."""
    cmd: str
    chain: str = ""
    num: int | None = None
    policy: str = ""
    rules: list[Rule] = field(default_factory=list)
    has_spec: bool = False
    counters: tuple[int, int] | None = None
    ignore: bool = False        # `-6` lines: iptables-restore skips them


class _Spec:
    """Accumulates the rule while tokens are read."""

    def __init__(self, ctx: ParseCtx) -> None:
        self.ctx = ctx
        self.rule = Rule(ctx.where)
        self.srcs: list[tuple[int, int]] = []
        self.dsts: list[tuple[int, int]] = []
        self.addr_args: dict[str, tuple[str, str, bool]] = {}   # "s"/"d" -> (option, text, inverted)
        self.open: dict[str, Match] = {}      # by name: the matches no later -m of that name closed, in order
        self.classes: set[str] = set()        # class names of the rule's matches
        self.seen: set[str] = set()
        self.matches: list[Match] = []        # the rule's, in order (a tuple once parsed)

    def once(self, what: str) -> None:
        if what in self.seen:
            raise self.ctx.error(f"multiple {what} flags not allowed")
        self.seen.add(what)

    def add_match(self, m: Match) -> None:
        """Append a match; an earlier one of the same name no longer takes options."""
        self.open.pop(m.ext_name, None)
        self.open[m.ext_name] = m
        self.classes.add(m.name)
        self.matches.append(m)

    def find_owner(self, tok: str) -> Extension | None:
        """The target, else the first open match that knows `tok` (at most one per match name, so
        this does not grow with the rule), else the implicit match of `-p`."""
        r = self.rule
        if r.target is not None and tok in r.target.options:
            return r.target
        for m in self.open.values():
            if tok in m.options:
                return m
        if r.proto and "-p" in self.seen and proto_name(r.proto) not in self.classes:
            cls = MATCHES.get(proto_name(r.proto))
            if cls is not None and tok in cls.options:
                m = cls(cls.name)
                self.add_match(m)
                return m
        return None


def parse_line(tokens: list[str], ctx: ParseCtx) -> Command:
    """Parse one command's tokens (counters prefix already removed)."""
    sp = _Spec(ctx)
    r = sp.rule
    cmd: Command | None = None
    invert = False
    i, n = 0, len(tokens)

    def need(k: int = 1) -> list[str]:
        nonlocal i
        if i + k > n:
            raise ctx.error(f"option {excerpt(tokens[i - 1])} needs {k} argument{'s' if k > 1 else ''}")
        args = tokens[i:i + k]
        i += k
        return args

    while i < n:
        tok = tokens[i]
        i += 1
        if tok == "!":
            if invert:
                raise ctx.error("multiple consecutive '!' not allowed")
            invert = True
            continue
        inv, invert = invert, False
        code = _BASE.get(tok)
        if code is None:
            if not tok.startswith("-") or len(tok) < 2:
                raise ctx.error(f"bad argument {excerpt(tok)}")
            owner = sp.find_owner(tok)
            if owner is None:
                if r.kind == K_JUMP:       # `-j NAME` was no target we know: say so, not "--opt"
                    raise ctx.error(f"unknown target {excerpt(r.jump)} (a jump to a chain takes no "
                                    f"option {excerpt(tok)})")
                raise ctx.error(f"unknown option {excerpt(tok)}")
            opt = owner.options[tok]
            args = need(opt.nargs) if opt.nargs else []
            if tok == "--tcp-flags" and args[1][:1] in ("-", "!"):
                raise ctx.error("--tcp-flags requires two arguments")
            owner.option(tok, args, inv, ctx)
            continue
        if code == "cmd":
            if inv:
                raise ctx.error(f"unexpected '!' before {tok}")
            if cmd is not None:
                raise ctx.error(f"cannot use {tok} with -{cmd.cmd}")
            cmd = Command(COMMANDS[tok])
            if cmd.cmd in "AIDRNP" or (i < n and not tokens[i].startswith("-") and tokens[i] != "!"):
                cmd.chain = need()[0]
            if cmd.cmd in "IDR" and i < n and tokens[i][:1] not in ("-", "!"):     # as do_parse
                cmd.num = parse_uint(need()[0], ctx, "rule number", 1, 2**31 - 1)
            elif cmd.cmd == "R":
                raise ctx.error("-R needs a rule number")
            if cmd.cmd == "P":
                cmd.policy = need()[0]
            ctx.chain = cmd.chain
            continue
        if code == "t":
            raise ctx.error("the -t option cannot be used in iptables-restore input")
        if code == "4":
            continue
        if code == "6":
            return Command(cmd.cmd if cmd else "A", ignore=True)
        if code == "s" or code == "d":
            sp.once("-" + code)
            sp.addr_args[code] = (tok, need()[0], inv)      # read after the loop, as iptables does
        elif code == "p":
            sp.once("-p")
            r.proto, r.inv_proto = parse_proto(need()[0], ctx), inv
            if r.proto == 0 and inv:
                raise ctx.error("rule would never match protocol")
        elif code == "i" or code == "o":
            sp.once("-" + code)
            name = need()[0]
            ifname_check(name, ctx)
            if code == "i":
                r.iniface, r.inv_in = name, inv
            else:
                r.outiface, r.inv_out = name, inv
        elif code == "f":
            sp.once("-f")
            r.frag, r.inv_frag = True, inv
        elif code == "m":
            if inv:
                raise ctx.error("unexpected '!' before -m")
            name = need()[0]
            cls = MATCHES.get(name)
            if cls is None:
                raise ctx.error(f"unknown match {excerpt(name)}")
            sp.add_match(cls(name))
        elif code == "j" or code == "g":
            if inv:
                raise ctx.error(f"unexpected '!' before {tok}")
            sp.once("-j/-g")
            name = need()[0]
            r.jump = sys.intern(name)         # a chain's name: one string for its many jumps
            if code == "g":
                if name in STANDARD or name in TARGETS:
                    raise ctx.error(f"-g needs a user chain, not {excerpt(name)}")
                r.kind = K_GOTO
            elif name in STANDARD:
                r.kind = STANDARD[name]
            elif name in TARGETS:
                r.kind, r.target = K_EXT, TARGETS[name](name)
            else:
                r.kind = K_JUMP
        else:
            a, b = need(2)
            r.pkts = parse_uint(a, ctx, "packet counter", 0, 2**64 - 1)
            r.bytes = parse_uint(b, ctx, "byte counter", 0, 2**64 - 1)
        sp.seen.add("spec")
    if invert:
        raise ctx.error("'!' at the end of the line")
    _addresses(sp, ctx)
    if cmd is None:
        raise ctx.error("no command (-A, -I, -D, -R, -N, -X, -F, -P, -Z) on this line")
    cmd.has_spec = "spec" in sp.seen
    if cmd.cmd in "AIDR" and not (cmd.cmd == "D" and cmd.num is not None):
        cmd.rules = _finish(sp, ctx)
    elif cmd.has_spec:
        raise ctx.error(f"rule options are not allowed with -{cmd.cmd}")
    return cmd


def _addresses(sp: _Spec, ctx: ParseCtx) -> None:
    """`-s`/`-d` lists, parsed once the line is read (a `-6` anywhere skips the line first)."""
    r = sp.rule
    most = max(ctx.expansion, 1)
    for code, (tok, text, inv) in sp.addr_args.items():
        texts = text.split(",", most)
        if len(texts) > most:
            raise ctx.error(f"{tok}: more addresses than this input may still expand to rules "
                            f"({ctx.expansion})")
        addrs = [parse_cidr(a, ctx, tok) for a in texts]
        if code == "s":
            sp.srcs, r.inv_src = addrs, inv
        else:
            sp.dsts, r.inv_dst = addrs, inv
        if inv and len(addrs) > 1:
            raise ctx.error(f"'!' not allowed with multiple addresses in {tok}")


def _finish(sp: _Spec, ctx: ParseCtx) -> list[Rule]:
    """Final checks of the extensions, then one rule per source x destination address."""
    r = sp.rule
    ctx.proto, ctx.proto_inv = r.proto, r.inv_proto
    if r.iniface and ctx.chain in ("OUTPUT", "POSTROUTING"):
        raise ctx.error(f"can't use -i with {ctx.chain}")
    if r.outiface and ctx.chain in ("PREROUTING", "INPUT"):
        raise ctx.error(f"can't use -o with {ctx.chain}")
    for m in sp.matches:
        m.final_check(ctx)
    r.matches = tuple(_shared(m, ctx) for m in sp.matches)
    if r.target is not None:
        r.target.final_check(ctx)
        r.target = _shared(r.target, ctx)
    n_rules = max(len(sp.srcs), 1) * max(len(sp.dsts), 1)
    if n_rules > 1 and n_rules * (1 + len(r.matches)) > ctx.expansion:
        raise ctx.error(f"-s/-d address lists expand this line to {n_rules} rules of {len(r.matches)} "
                        f"matches each: more than the {ctx.expansion} rules and matches this input may "
                        "still add that way")
    combos = [(s, d) for s in sp.srcs or [(0, 0)] for d in sp.dsts or [(0, 0)]]
    out: list[Rule] = []
    for k, ((s, sm), (d, dm)) in enumerate(combos):
        x = r if k == len(combos) - 1 else r.copy()
        x.src, x.smsk, x.dst, x.dmsk = s, sm, d, dm
        x.finish()
        out.append(x)
    return out


def parse_text(line: str, ctx: ParseCtx) -> Command:
    """One command line of restore input: kube-proxy's rule shapes the fast way (xt_fast), any
    other line (and any error) by the general parser."""
    hit = fast_rule(line, ctx)
    if hit is not None:
        return Command("A", hit[0], rules=[hit[1]], has_spec=True)
    return parse_line(tokenize(line, ctx.where), ctx)


class LineCache:
    """Parsed lines by (table, text), for a writer that restores nearly the same text again and
    again (kube-proxy: every sync, on every node): a hit copies the rule parsed before instead of
    parsing the line. Only what parsing alone decides is reused: a line that expands to several
    rules (its parse depends on the input's expansion budget) or holds an extension with state of
    its own is parsed every time. Bounded: past `size` lines it starts afresh."""

    def __init__(self, size: int = 1 << 18) -> None:
        self.size = size
        self.parsed = 0                     # lines parsed (not found)
        self._lines: dict[tuple[str, str], tuple[str, str, int | None, str, bool, Rule | None, int, int]] = {}

    def parse(self, line: str, ctx: ParseCtx) -> Command:
        hit = self._lines.get((ctx.table, line))
        if hit is not None:
            letter, chain, num, policy, has_spec, rule, pkts, nbytes = hit
            cmd = Command(letter, chain, num, policy, has_spec=has_spec)
            if rule is not None:
                r = rule.copy()             # the first parse's rule: shared immutable parts
                r.pkts, r.bytes, r.where, r.origin = pkts, nbytes, ctx.where, ""
                cmd.rules.append(r)
            return cmd
        cmd = parse_text(line, ctx)
        self.parsed += 1
        rule = cmd.rules[0] if cmd.rules else None
        if cmd.ignore or len(cmd.rules) > 1 or (rule is not None and (
                any(m.stateful for m in rule.matches) or (rule.target is not None and rule.target.stateful))):
            return cmd
        if len(self._lines) >= self.size:
            self._lines.clear()
        self._lines[ctx.table, line] = (cmd.cmd, cmd.chain, cmd.num, cmd.policy, cmd.has_spec, rule,
                                        rule.pkts if rule else 0, rule.bytes if rule else 0)
        return cmd
