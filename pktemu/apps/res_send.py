"""res_send for the stub resolver: one name's query, or its A and AAAA pair, to the nameservers.

glibc's __res_context_send and send_dg, step for step, because their quirks show in pcaps:

* `attempts` rounds over the nameservers; in each, nameserver i waits `timeout << i` (divided by
  the number of nameservers when i > 0) for its answers;
* one connected UDP socket per nameserver, from a random port, kept over the rounds (a timeout
  does not close it) and closed when an answer is taken or on an error (ICMP error, send
  failure, SERVFAIL/REFUSED/NOTIMP for a single query, a referral);
* A and AAAA go out back to back on that socket; if one answer came and the other did not,
  glibc switches to single-request mode (second query only after the first answer) for good and
  asks again, then to single-request-reopen (a new socket, so a new port, for the second);
* an answer must carry an id and a question of a pending query, else it is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from pktemu.apps import dnswire
from pktemu.net.frame import int2ip, ip2int
from pktemu.net.tcp_errno import SockError
from pktemu.sim import SECOND

if TYPE_CHECKING:
    from pktemu.apps.resolver import Resolver
    from pktemu.net.udp import UdpSocket

ECONNREFUSED, ETIMEDOUT = "ECONNREFUSED", "ETIMEDOUT"
MAXNS = 3                          # glibc reads at most three nameserver lines
DNS_PORT = 53
_RCODE_NOTIMP, _RCODE_REFUSED = 4, 5
_REJECTS = (dnswire.RCODE_SERVFAIL, _RCODE_NOTIMP, _RCODE_REFUSED)


@dataclass
class ResolvConf:
    """resolv.conf as glibc reads it, with glibc's defaults."""
    nameservers: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    search: list[str] = field(default_factory=list)
    ndots: int = 1
    timeout: int = 5 * SECOND      # `options timeout:`, RES_TIMEOUT
    attempts: int = 2              # `options attempts:`, RES_DFLRETRY
    single_request: bool = False   # `options single-request`


@dataclass
class Sent:
    """What res_send hands back: the answer buffers in order (empty on failure), hp->rcode, errno."""
    replies: list[dnswire.Message]
    rcode: int
    errno: str | None = None


class ResSend:
    """One res_send: started by `start()`, reports once through `on_done`."""

    def __init__(self, res: "Resolver", queries: list[bytes], log: list[dict[str, Any]],
                 on_done: Callable[[Sent], None]) -> None:
        self.res = res
        self.sim = res.node.sim
        self.queries = queries
        self.questions = [dnswire.parse(q) for q in queries]
        self.log = log
        self.on_done = on_done
        self.servers = [ip2int(a) for a in res.conf.nameservers[:MAXNS]]
        self.socks: dict[int, UdpSocket] = {}
        self.backlog: dict[int, list[tuple[str, Any]]] = {}    # what arrived while nobody polled
        self.gotsomewhere = False
        self.rcode = dnswire.RCODE_NOERROR
        self.try_no = 0
        self.ns = -1
        self.active: int | None = None
        self.finished = False
        self.timer: Any = None
        self.span = 0
        self.saved_gotsomewhere = False
        self.recv: list[bool] = []
        self.buffers: list[dnswire.Message] = []
        self.nwritten = 0

    def start(self) -> None:
        self._next_ns()

    # ------------------------------------------------------------------ __res_context_send
    def _next_ns(self) -> None:
        self.active = None
        self._cancel_timer()
        self.ns += 1
        if self.ns >= len(self.servers):
            self.ns = 0
            self.try_no += 1
        if self.try_no >= self.res.conf.attempts or not self.servers:
            self._fail()
            return
        self._send_dg()

    def _send_dg(self) -> None:
        i = self.ns
        timeout = self.res.conf.timeout
        unit = SECOND if timeout % SECOND == 0 else 1     # glibc counts whole seconds
        span = (timeout // unit) << i
        if i > 0:
            span //= len(self.servers)
        self.span = max(span, 1) * unit
        self.saved_gotsomewhere = self.gotsomewhere
        if self._reopen(i):
            self._retry()

    def _reopen(self, i: int) -> bool:
        if i in self.socks:
            return True
        try:
            sock = self.res.node.udp.bind(0, None)
        except SockError as e:
            self._fail(e.errno_name)
            return False
        sock.on_datagram = lambda data, saddr, sport: self._arrived(i, sock, ("data", (data, saddr, sport)))
        sock.on_error = lambda name: self._arrived(i, sock, ("error", name))
        sock.connect(self.servers[i], DNS_PORT)
        self.socks[i] = sock
        return True

    def _retry(self) -> None:
        """The `retry:` label of send_dg: (re)send from the first query with a fresh deadline."""
        self.recv = [False] * len(self.queries)
        self.buffers = []
        self.nwritten = 0
        self.active = self.ns
        self._cancel_timer()
        self.timer = self.sim.timer(self.span, self._timeout)
        self._write()
        backlog = self.backlog.pop(self.ns, [])
        while backlog and self.active == self.ns and not self.finished:
            self._handle(backlog.pop(0))

    def _write(self) -> None:
        """Send the next query, and the one after it too unless in single-request mode."""
        while self.nwritten < len(self.queries) and self.active is not None:
            q = self.queries[self.nwritten]
            sock = self.socks[self.ns]
            try:
                sock.send(q)
            except SockError:
                self._err_out()
                return
            m = self.questions[self.nwritten]
            self.log.append({"t_ns": self.sim.now, "server": f"{int2ip(self.servers[self.ns])}:{DNS_PORT}",
                             "sport": sock.port, "id": m.id, "qname": m.questions[0].name,
                             "qtype": m.questions[0].qtype})
            self.nwritten += 1
            if self.res.single_request:
                return

    # ------------------------------------------------------------------ receiving
    def _arrived(self, i: int, sock: "UdpSocket", event: tuple[str, Any]) -> None:
        if self.finished or self.socks.get(i) is not sock:
            return
        if self.active != i:
            self.backlog.setdefault(i, []).append(event)
            return
        self._handle(event)

    def _handle(self, event: tuple[str, Any]) -> None:
        kind, payload = event
        if kind == "error":                  # POLLERR on the connected socket
            self._err_out()
            return
        data, _saddr, _sport = payload
        self.gotsomewhere = True
        if len(data) < 12:
            self._err_out()
            return
        try:
            m = dnswire.parse(data)
        except dnswire.DnsFormatError:
            return                           # res_queriesmatch fails: "wrong query name"
        self.rcode = m.rcode
        idx = self._pending_index(m)
        if idx is None:
            return                           # an old answer, or a question we did not ask
        self._note_reply(idx, m)
        if m.rcode in _REJECTS:
            self._rejected(idx)
            return
        if (m.rcode == dnswire.RCODE_NOERROR and not m.answers and not m.additional
                and not m.flags & (dnswire.FLAG_AA | dnswire.FLAG_RA)):
            self._err_out()                  # a referral: next nameserver
            return
        self.recv[idx] = True
        self.buffers.append(m)
        if all(self.recv):
            self._done(self.buffers)
        elif self.res.single_request:
            if self.res.single_request_reopen:
                self._close_all()
                if not self._reopen(self.ns):
                    return
            self._write()

    def _pending_index(self, m: dnswire.Message) -> int | None:
        if len(m.questions) != 1:
            return None
        q = m.questions[0]
        for i, sent in enumerate(self.questions):
            s = sent.questions[0]
            if (not self.recv[i] and sent.id == m.id and s.qtype == q.qtype and s.qclass == q.qclass
                    and dnswire.normalize_name(s.name) == dnswire.normalize_name(q.name)):
                return i
        return None

    def _rejected(self, idx: int) -> None:
        """SERVFAIL, NOTIMP or REFUSED: keep waiting for the other answer if there is one."""
        if any(self.recv):
            if self.buffers:
                self._done(self.buffers[:1])
            else:
                self._next_ns()              # both refused: next nameserver, sockets stay open
            return
        if len(self.queries) > 1:
            self.recv[idx] = True            # no data from this one; wait for the other
            return
        self._err_out()

    def _timeout(self) -> None:
        self.timer = None
        if self.buffers:                     # one answer came, the other did not
            if not self.res.single_request:
                self.res.single_request = True
                self.gotsomewhere = self.saved_gotsomewhere
                self._retry()
                return
            if not self.res.single_request_reopen:
                self.res.single_request_reopen = True
                self.gotsomewhere = self.saved_gotsomewhere
                self._close_all()
                if self._reopen(self.ns):
                    self._retry()
                return
            self._done(self.buffers[:1])
            return
        self.gotsomewhere = True
        self._next_ns()

    # ------------------------------------------------------------------ endings
    def _err_out(self) -> None:
        self._close_all()
        self._next_ns()

    def _done(self, replies: list[dnswire.Message]) -> None:
        self._end(Sent(list(replies), replies[0].rcode))

    def _fail(self, errno: str | None = None) -> None:
        self._end(Sent([], self.rcode, errno or (ETIMEDOUT if self.gotsomewhere else ECONNREFUSED)))

    def _end(self, sent: Sent) -> None:
        if self.finished:
            return
        self.finished = True
        self.active = None
        self._cancel_timer()
        self._close_all()
        self.on_done(sent)

    def _close_all(self) -> None:
        """__res_iclose: every nameserver socket."""
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()
        self.backlog.clear()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _note_reply(self, idx: int, m: dnswire.Message) -> None:
        qid = self.questions[idx].id
        for entry in reversed(self.log):
            if entry["id"] == qid and "rcode" not in entry:
                entry.update(rcode=m.rcode, reply_t_ns=self.sim.now,
                             answers=[rr.a for rr in m.answers if rr.a is not None])
                return
