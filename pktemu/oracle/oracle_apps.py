#!/usr/bin/env python3
"""Tiny, deterministic pod programs for the kernel oracle (stdlib only).

  dns-server   UDP DNS responder (A records from --record NAME=IP), bounded in queries and time
  http-server  one-shot-per-connection HTTP/1.1 server with a fixed body, bounded in conns and time
  client       optional DNS lookup (fixed source port + query id), then one HTTP GET from a
               fixed source port; writes a JSON result

Every loop is bounded in count and in wall time; nothing here retries on its own.
"""
import argparse
import json
import socket
import struct
import sys
import time
from typing import Any


# ----------------------------------------------------------------------------- DNS wire format
def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\x00"


def decode_name(buf: bytes, off: int):
    labels, jumped, end = [], False, off
    for _ in range(64):  # bounded: at most 64 labels / pointers
        ln = buf[off]
        if ln == 0:
            off += 1
            break
        if ln & 0xC0 == 0xC0:
            ptr = struct.unpack("!H", buf[off:off + 2])[0] & 0x3FFF
            if not jumped:
                end = off + 2
            jumped, off = True, ptr
            continue
        labels.append(buf[off + 1:off + 1 + ln].decode("ascii", "replace"))
        off += 1 + ln
    return ".".join(labels), (end if jumped else off)


def build_query(qid: int, name: str, qtype: int = 1) -> bytes:
    hdr = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD=1, one question
    return hdr + encode_name(name) + struct.pack("!HH", qtype, 1)


def parse_response(buf: bytes):
    qid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", buf[:12])
    off = 12
    for _ in range(qd):
        _n, off = decode_name(buf, off)
        off += 4
    answers = []
    for _ in range(an):
        name, off = decode_name(buf, off)
        rtype, _rclass, ttl, rdlen = struct.unpack("!HHIH", buf[off:off + 10])
        off += 10
        rdata = buf[off:off + rdlen]
        off += rdlen
        if rtype == 1 and rdlen == 4:
            answers.append({"name": name, "ttl": ttl, "a": socket.inet_ntoa(rdata)})
    return {"id": qid, "rcode": flags & 0xF, "answers": answers}


def cmd_dns_server(a) -> int:
    records = {}
    for r in a.record:
        name, ip = r.split("=", 1)
        records[name.rstrip(".").lower()] = ip
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.bind, a.port))
    deadline = time.monotonic() + a.timeout
    print(f"READY dns {a.bind}:{a.port}", flush=True)
    served = 0
    while served < a.max_queries:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            data, peer = s.recvfrom(4096)
        except socket.timeout:
            break
        if len(data) < 12:
            continue
        qid, flags, qd = struct.unpack("!HHH", data[:6])
        if qd != 1 or flags & 0x8000:
            continue
        qname, off = decode_name(data, 12)
        qtype, qclass = struct.unpack("!HH", data[off:off + 4])
        question = data[12:off + 4]
        ip = records.get(qname.lower())
        rd = flags & 0x0100
        rflags = 0x8000 | 0x0400 | rd | 0x0080  # QR, AA, RD (copied), RA
        answers = b""
        if ip is None:
            rflags |= 3  # NXDOMAIN
        elif qtype == 1 and qclass == 1:
            answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, a.ttl, 4) + socket.inet_aton(ip)
        hdr = struct.pack("!HHHHHH", qid, rflags, 1, 1 if answers else 0, 0, 0)
        s.sendto(hdr + question + answers, peer)
        served += 1
        print(f"answered id=0x{qid:04x} {qname} type={qtype} -> {ip} for {peer[0]}:{peer[1]}", flush=True)
    s.close()
    return 0


# ----------------------------------------------------------------------------- HTTP server
def cmd_http_server(a) -> int:
    body = (a.body.replace("\\n", "\n")).encode()
    resp = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.bind, a.port))
    ls.listen(8)
    deadline = time.monotonic() + a.timeout
    print(f"READY http {a.bind}:{a.port}", flush=True)
    for _ in range(a.max_conns):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ls.settimeout(left)
        try:
            c, peer = ls.accept()
        except socket.timeout:
            break
        c.settimeout(5)
        req = b""
        try:
            for _ in range(64):  # bounded reads; request has no body
                chunk = c.recv(4096)
                if not chunk:
                    break
                req += chunk
                if b"\r\n\r\n" in req:
                    break
            line = req.split(b"\r\n", 1)[0].decode("latin-1")
            c.sendall(resp)  # headers + body in one write -> one segment
            print(f"served {peer[0]}:{peer[1]} {line!r}", flush=True)
        except OSError as e:
            print(f"error with {peer}: {e}", flush=True)
        finally:
            c.close()  # server closes first (Connection: close)
    ls.close()
    return 0


# ----------------------------------------------------------------------------- client
def cmd_client(a) -> int:
    result: dict[str, Any] = {"dns": None, "http": None}
    target = a.target
    if a.name:
        q = build_query(a.dns_id, a.name)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a.bind, a.dns_sport))
        s.settimeout(a.dns_timeout)
        t0 = time.monotonic()
        s.sendto(q, (a.dns_server, a.dns_port))
        try:
            data, peer = s.recvfrom(4096)
            r = parse_response(data)
            r.update(peer=f"{peer[0]}:{peer[1]}", rtt_ms=round((time.monotonic() - t0) * 1000, 3))
            result["dns"] = r
            if r["answers"]:
                target = r["answers"][0]["a"]
        except socket.timeout:
            result["dns"] = {"error": "timeout"}
        s.close()
    if not target:
        result["error"] = "no target (DNS failed)"
    else:
        h: dict[str, Any] = {"target": f"{target}:{a.port}", "source": f"{a.bind or '*'}:{a.sport}"}
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        c.bind((a.bind, a.sport))
        c.settimeout(a.connect_timeout)
        t0 = time.monotonic()
        try:
            c.connect((target, a.port))
            c.settimeout(a.read_timeout)
            host = a.host or (a.name.split(".")[0] if a.name else target)
            c.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: oracle-client/1\r\n"
                      f"Accept: */*\r\nConnection: close\r\n\r\n".encode())
            resp = b""
            for _ in range(256):  # bounded reads
                chunk = c.recv(4096)
                if not chunk:
                    break
                resp += chunk
            head, _, body = resp.partition(b"\r\n\r\n")
            h.update(status_line=head.split(b"\r\n", 1)[0].decode("latin-1"),
                     body=body.decode("latin-1"), bytes=len(resp))
        except ConnectionRefusedError as e:
            h["error"] = f"ECONNREFUSED ({e.strerror})"
        except (socket.timeout, TimeoutError):
            h["error"] = "timeout"
        except OSError as e:
            h["error"] = f"{type(e).__name__}: {e}"
        h["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 3)
        c.close()
        result["http"] = h
    text = json.dumps(result, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dns-server")
    d.add_argument("--bind", default="0.0.0.0")
    d.add_argument("--port", type=int, default=53)
    d.add_argument("--record", action="append", default=[], metavar="NAME=IP")
    d.add_argument("--ttl", type=int, default=30)
    d.add_argument("--max-queries", type=int, default=20)
    d.add_argument("--timeout", type=float, default=60.0, help="exit after this many seconds")
    h = sub.add_parser("http-server")
    h.add_argument("--bind", default="0.0.0.0")
    h.add_argument("--port", type=int, default=8080)
    h.add_argument("--body", default="hello\\n")
    h.add_argument("--max-conns", type=int, default=5)
    h.add_argument("--timeout", type=float, default=60.0, help="exit after this many seconds")
    c = sub.add_parser("client")
    c.add_argument("--bind", default="", help="source address (default: any)")
    c.add_argument("--name", help="DNS name to resolve first (A query)")
    c.add_argument("--dns-server", default="10.3.240.10")
    c.add_argument("--dns-port", type=int, default=53)
    c.add_argument("--dns-sport", type=int, default=40053)
    c.add_argument("--dns-id", type=lambda x: int(x, 0), default=0x1234)
    c.add_argument("--dns-timeout", type=float, default=3.0)
    c.add_argument("--target", help="IP to connect to when --name is not given")
    c.add_argument("--host", help="HTTP Host header (default: first label of --name)")
    c.add_argument("--port", type=int, default=80)
    c.add_argument("--sport", type=int, default=40000)
    c.add_argument("--connect-timeout", type=float, default=3.0)
    c.add_argument("--read-timeout", type=float, default=3.0)
    c.add_argument("--out")
    a = ap.parse_args(argv)
    return {"dns-server": cmd_dns_server, "http-server": cmd_http_server, "client": cmd_client}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
