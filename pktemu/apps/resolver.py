"""glibc's stub resolver (libresolv's res_search over res_send), on the virtual clock.

The configuration is the pod's resolv.conf (`resolv` in the topology: nameservers, search,
ndots) with glibc's defaults for what it leaves out: nameserver 127.0.0.1, no search list,
ndots 1, timeout 5 s, attempts 2. Kubernetes writes `ndots:5` into a ClusterFirst pod's
resolv.conf, so a pod's `resolv` should say so.

The search walk is __res_context_search: a name with at least ndots dots (or a trailing dot) is
tried as is first; then each search domain in turn while the answers are NXDOMAIN or NODATA (a
SERVFAIL goes on too, a timeout stops the walk, ECONNREFUSED ends the lookup); then the name as
is, if not tried yet. Each name is sent by `ResSend` (res_send.py). A name succeeds when an
answer is NOERROR with at least one record; A and AAAA asked together succeed when either does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generator

from pktemu.apps import dnswire
from pktemu.apps.res_send import ECONNREFUSED, ResolvConf, ResSend, Sent
from pktemu.errors import PktemuError, excerpt
from pktemu.sim import SECOND
from pktemu.units import parse_duration

if TYPE_CHECKING:
    from pktemu.net.node import Node

HOST_NOT_FOUND, NO_DATA, TRY_AGAIN, NO_RECOVERY = "HOST_NOT_FOUND", "NO_DATA", "TRY_AGAIN", "NO_RECOVERY"
_RCODE_HERRNO = {dnswire.RCODE_NXDOMAIN: HOST_NOT_FOUND, dnswire.RCODE_SERVFAIL: TRY_AGAIN,
                 dnswire.RCODE_NOERROR: NO_DATA}

__all__ = ["HOST_NOT_FOUND", "NO_DATA", "NO_RECOVERY", "TRY_AGAIN", "Lookup", "ResolvConf", "Resolver",
           "conf_for", "options_from_params", "OPTION_DEFAULTS"]

#: http-client parameters that tune the resolver (resolv.conf `options`, getaddrinfo's family)
OPTION_DEFAULTS: dict[str, Any] = {"resolv_timeout": "5s", "resolv_attempts": 2, "resolv_aaaa": False,
                                   "resolv_single_request": False}


@dataclass
class Lookup:
    """What getaddrinfo's caller learns, plus every query on the wire for the curious."""
    name: str
    error: str | None = None                  # h_errno: HOST_NOT_FOUND, NO_DATA, TRY_AGAIN, NO_RECOVERY
    qname: str | None = None                  # the name whose answer was used
    rcode: int | None = None
    answers: list[dnswire.RR] = field(default_factory=list)
    queries: list[dict[str, Any]] = field(default_factory=list)
    started_ns: int = 0
    finished_ns: int = 0

    @property
    def addresses(self) -> list[str]:
        return [rr.a for rr in self.answers if rr.a is not None]

    def summary(self) -> dict[str, Any]:
        """The result dict the http-client writes (client-result.json's "dns")."""
        out: dict[str, Any] = {"name": self.name, "qname": self.qname, "rcode": self.rcode,
                               "answers": [{"name": rr.name, "ttl": rr.ttl, "a": rr.a}
                                           for rr in self.answers if rr.a is not None],
                               "queries": self.queries,
                               "rtt_ms": round((self.finished_ns - self.started_ns) / 1e6, 3)}
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class _Outcome:
    """One __res_context_querydomain: success, or h_errno plus what the search loop looks at."""
    qname: str
    ok: bool
    herrno: str | None = None
    rcode: int = dnswire.RCODE_NOERROR        # hp->rcode: the last answer's, NOERROR if none came
    errno: str | None = None
    replies: list[dnswire.Message] = field(default_factory=list)


class Resolver:
    """The resolver state of one process in one namespace (glibc's _res)."""

    def __init__(self, node: "Node", conf: ResolvConf) -> None:
        self.node = node
        self.conf = conf
        self.rng = node.sim.rng(f"resolver:{node.name}")
        #: RES_SNGLKUP / RES_SNGLKUPREOP: glibc turns these on for good after a lost second answer
        self.single_request = conf.single_request
        self.single_request_reopen = False

    def lookup(self, name: str, on_done: Callable[[Lookup], None], aaaa: bool = False) -> None:
        """Resolve `name` (A, or A and AAAA in one exchange as getaddrinfo with AF_UNSPEC)."""
        _Search(self, name, aaaa, on_done).start()


class _Search:
    def __init__(self, res: Resolver, name: str, aaaa: bool, on_done: Callable[[Lookup], None]) -> None:
        self.res = res
        self.qtypes = [dnswire.TYPE_A, dnswire.TYPE_AAAA] if aaaa else [dnswire.TYPE_A]
        self.on_done = on_done
        self.result = Lookup(name, started_ns=res.node.sim.now)
        self.steps = self._walk(name)

    def start(self) -> None:
        self._advance(None)

    def _advance(self, outcome: _Outcome | None) -> None:
        try:
            qname = self.steps.send(outcome) if outcome is not None else next(self.steps)
        except StopIteration as stop:
            self._finish(stop.value)
            return
        try:
            queries = [dnswire.build_query(self.res.rng.getrandbits(16), qname, t) for t in self.qtypes]
        except dnswire.DnsFormatError:       # res_mkquery fails: the name is too long
            self._advance(_Outcome(qname, False, NO_RECOVERY))
            return
        ResSend(self.res, queries, self.result.queries,
                lambda sent: self._advance(self._judge(qname, sent))).start()

    def _walk(self, name: str) -> Generator[str, _Outcome, _Outcome]:
        """__res_context_search: yields the names to query, returns the final outcome."""
        conf = self.res.conf
        dots = name.count(".")
        trailing = name.endswith(".")
        saved: str | None = None
        tried_as_is = root_on_list = got_nodata = got_servfail = False
        last = _Outcome(name, False, HOST_NOT_FOUND)
        if dots >= conf.ndots or trailing:
            last = yield name
            if last.ok or trailing:
                return last
            saved, tried_as_is = last.herrno, True
        if not trailing:
            for domain in conf.search:
                domain = domain[1:] if domain.startswith(".") else domain
                root_on_list = root_on_list or not domain
                last = yield f"{name}.{domain}" if domain else f"{name}."
                if last.ok:
                    return last
                if last.errno == ECONNREFUSED:
                    last.herrno = TRY_AGAIN
                    return last
                if last.herrno == NO_DATA:
                    got_nodata = True
                elif last.herrno == TRY_AGAIN and last.rcode == dnswire.RCODE_SERVFAIL:
                    got_servfail = True
                elif last.herrno != HOST_NOT_FOUND:
                    break
        if not (tried_as_is or root_on_list):       # RES_NOTLDQUERY is never set
            last = yield name
            if last.ok:
                return last
        if saved is not None:
            last.herrno = saved
        elif got_nodata:
            last.herrno = NO_DATA
        elif got_servfail:
            last.herrno = TRY_AGAIN
        return last

    def _judge(self, qname: str, sent: Sent) -> _Outcome:
        """__res_context_query's verdict on the one or two answers res_send brought back."""
        if not sent.replies:
            return _Outcome(qname, False, TRY_AGAIN, sent.rcode, sent.errno)
        hp = sent.replies[0]
        hp2 = sent.replies[1] if len(sent.replies) > 1 else hp
        if any(m.rcode == dnswire.RCODE_NOERROR and m.answers for m in (hp, hp2)):
            return _Outcome(qname, True, None, hp.rcode, replies=sent.replies)
        code = hp2.rcode if hp.rcode == dnswire.RCODE_NOERROR else hp.rcode
        return _Outcome(qname, False, _RCODE_HERRNO.get(code, NO_RECOVERY), hp.rcode, replies=sent.replies)

    def _finish(self, outcome: _Outcome) -> None:
        r = self.result
        r.finished_ns = self.res.node.sim.now
        if outcome.ok:
            r.qname = outcome.qname
            good = [m for m in outcome.replies if m.rcode == dnswire.RCODE_NOERROR and m.answers]
            r.rcode = good[0].rcode
            r.answers = [rr for m in good for rr in m.answers]
            r.answers.sort(key=lambda rr: rr.rtype != dnswire.TYPE_A)   # A first, answer order kept
        else:
            r.error = outcome.herrno or TRY_AGAIN
            r.rcode = outcome.replies[0].rcode if outcome.replies else None
        self.on_done(r)


# ---------------------------------------------------------------------------- configuration
def conf_for(node: Any, options: dict[str, Any] | None = None) -> ResolvConf:
    """The node's resolv.conf (`node.resolv`, as the topology gives it) with `options` on top."""
    resolv: dict[str, Any] = dict(getattr(node, "resolv", None) or {})
    conf = ResolvConf()
    if resolv.get("nameservers"):
        conf.nameservers = list(resolv["nameservers"])
    if resolv.get("search") is not None:
        conf.search = [str(d) for d in resolv["search"]]
    if resolv.get("ndots") is not None:
        conf.ndots = int(resolv["ndots"])
    for key, value in (options or {}).items():
        setattr(conf, key, value)
    return conf


def options_from_params(p: dict[str, Any], where: str) -> tuple[dict[str, Any], bool]:
    """Check the `resolv_*` parameters of an app: (ResolvConf fields, whether to ask AAAA too)."""
    timeout = parse_duration(p["resolv_timeout"], f"{where}.resolv_timeout")
    if not 0 < timeout <= 30 * SECOND:
        raise PktemuError(f"{where}.resolv_timeout: expected more than 0 and at most 30s (RES_MAXRETRANS)")
    attempts = p["resolv_attempts"]
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 5:
        raise PktemuError(f"{where}.resolv_attempts: expected 1-5 (RES_MAXRETRY), got {excerpt(attempts)}")
    for key in ("resolv_aaaa", "resolv_single_request"):
        if not isinstance(p[key], bool):
            raise PktemuError(f"{where}.{key}: expected true or false, got {excerpt(p[key])}")
    return ({"timeout": timeout, "attempts": attempts, "single_request": p["resolv_single_request"]},
            p["resolv_aaaa"])
