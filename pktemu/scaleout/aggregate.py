"""What a sweep tells: per seed, each connection's endpoint, outcome and latency; over all seeds,
counts and percentiles (docs/sweep.md defines every field).

A connection is one exchange a scenario's client made, read back from the run's result files:

- `http`: an http-client run (or each request of an http-load). Outcome: the status line, or the
  error. Latency: `elapsed_ms`. Endpoint: the pod (or node) whose http-server `served` the request
  and the address it answered on (`server 10.0.2.2:8080`), found in server-result.json by the
  request's source address (the peer the server saw), or by its source port when NAT changed the
  address; `null` when no server saw it.
- `dns`: the lookup an http-client or echo-client made. Outcome: NOERROR / NXDOMAIN / rcode N, or
  the error. Latency: `rtt_ms`. Endpoint: the addresses answered, comma-separated.
- `echo`: each attempt of an echo-client. Outcome: its outcome (answer, REFUSED, TIMEOUT, ...).
  Endpoint: the answering server's `name addr:port` (its answer up to " saw "). Latency: from the
  attempt's start to the server's receipt, from the tcp-echo/udp-echo exchange the answer names.

Other client kinds (ping, python) have no connection of these kinds and are not counted.
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from typing import Any

from pktemu import topo
from pktemu.io.topofile_scenarios import SERVER_RESULT, all_traffic, result_files
from pktemu.scaleout.jobs import Done

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
PERCENTILES = (50, 90, 99)
METRICS = {"http": "elapsed_ms", "dns": "rtt_ms", "echo": "to_server_ms"}

Connection = dict[str, Any]


def client_labels(sc: topo.Scenario) -> list[str]:
    """`#i node` for each traffic item (its index in the scenario's traffic, then its steps'), in order."""
    return [f"#{i} {tr.node}" for i, tr in enumerate(all_traffic(sc))]


def connections(sc: topo.Scenario, done: Done) -> list[Connection]:
    """The connections of one run, in traffic order (see the module doc)."""
    results: list[Any] = [None] * len(all_traffic(sc))
    for fname, items in result_files(all_traffic(sc)).items():
        data = _json(done, fname)
        picked = [data] if len(items) == 1 else (data if isinstance(data, list) else [])
        for i, r in zip(items, picked, strict=False):
            results[i] = r
    servers = _Servers(_json(done, SERVER_RESULT) or {})
    out: list[Connection] = []
    for label, r in zip(client_labels(sc), results, strict=True):
        if isinstance(r, dict):
            out += _from_client(label, r, servers)
    servers.resolve()
    return out


def _json(done: Done, fname: str) -> Any:
    data = done.files.get(fname)
    return json.loads(data) if data is not None else None


class _Servers:
    """The server-side records of one run, each used for at most one connection."""

    def __init__(self, server_result: dict[str, Any]) -> None:
        self.http: list[tuple[str, dict[str, Any]]] = []
        self.echo: list[dict[str, Any]] = []
        for pod, apps in server_result.items():
            for app in apps if isinstance(apps, list) else []:
                res = app.get("result") if isinstance(app, dict) else None
                if not isinstance(res, dict):
                    continue
                if app.get("app") == "http-server":
                    self.http += [(pod, e) for e in res.get("served") or [] if isinstance(e, dict)]
                elif app.get("app") in ("tcp-echo", "udp-echo"):
                    self.echo += [e for e in res.get("exchanges") or [] if isinstance(e, dict)]

        self.pending: list[tuple[Connection, str]] = []

    def served(self, conn: Connection, source: str | None) -> None:
        """Find `conn`'s server later (`resolve`): every exact match first, so a connection whose
        address NAT changed cannot take, by its port alone, the record of another."""
        if source:
            self.pending.append((conn, source))

    def resolve(self) -> None:
        for exact in (True, False):
            left: list[tuple[Connection, str]] = []
            for conn, source in self.pending:
                port = source.rsplit(":", 1)[-1]
                hits = [k for k, (_pod, e) in enumerate(self.http) if (
                    e.get("peer") == source if exact else str(e.get("peer", "")).endswith(f":{port}"))]
                if hits:
                    pod, e = self.http.pop(hits[0])
                    conn["endpoint"] = f"{pod} {e.get('local')}"
                else:
                    left.append((conn, source))
            self.pending = left

    def exchange(self, local: str, peer: str) -> dict[str, Any] | None:
        for k, e in enumerate(self.echo):
            if e.get("local") == local and e.get("peer") == peer:
                return self.echo.pop(k)
        return None


def _conn(label: str, kind: str, endpoint: str | None, outcome: str, latency: Any) -> Connection:
    lat = latency if isinstance(latency, (int, float)) and not isinstance(latency, bool) else None
    return {"client": label, "kind": kind, "endpoint": endpoint, "outcome": outcome, METRICS[kind]: lat}


def _from_client(label: str, r: dict[str, Any], servers: _Servers) -> list[Connection]:
    out: list[Connection] = []
    if isinstance(r.get("requests"), list):                          # http-load
        for req in r["requests"]:
            if isinstance(req, dict):
                out += _from_client(label, req, servers)
        return out
    if isinstance(r.get("dns"), dict):
        out.append(_dns(label, r["dns"]))
    if isinstance(r.get("attempts"), list):                          # echo-client
        for a in r["attempts"]:
            if isinstance(a, dict):
                out.append(_echo(label, a, servers))
    elif "http" in r or "error" in r or "dns" in r:                 # http-client
        http = r.get("http")
        h: dict[str, Any] = http if isinstance(http, dict) else {}
        outcome = h.get("status_line") or h.get("error") or r.get("error") or "no answer"
        conn = _conn(label, "http", None, str(outcome), h.get("elapsed_ms"))
        servers.served(conn, h.get("source"))
        out.append(conn)
    return out


def _dns(label: str, d: dict[str, Any]) -> Connection:
    if d.get("error"):
        outcome = str(d["error"])
    else:
        rcode = d.get("rcode")
        outcome = RCODES.get(rcode, f"rcode {rcode}") if isinstance(rcode, int) else "no answer"
    addrs = [str(a["a"]) for a in d.get("answers") or [] if isinstance(a, dict) and a.get("a")]
    return _conn(label, "dns", ",".join(addrs) or None, outcome, d.get("rtt_ms"))


def _echo(label: str, a: dict[str, Any], servers: _Servers) -> Connection:
    answer = a.get("answer")
    endpoint = latency = None
    if isinstance(answer, str) and " saw " in answer:
        endpoint, saw = answer.strip().split(" saw ", 1)
        name_local = endpoint.rsplit(" ", 1)
        ex = servers.exchange(name_local[-1], saw.strip())
        if ex is not None and isinstance(ex.get("t_ns"), int) and isinstance(a.get("t_ns"), int):
            latency = round((ex["t_ns"] - a["t_ns"]) / 1e6, 3)
    return _conn(label, "echo", endpoint, str(a.get("outcome")), latency)


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile of sorted `values`: the smallest value at or above p% of them."""
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)]


def _order(key: tuple[str, ...]) -> tuple[Any, ...]:
    """Traffic items in their order (#2 before #10), then the rest of the key."""
    index = key[0].split(" ", 1)[0].removeprefix("#")
    return (int(index) if index.isdigit() else 0, *key)


def summarize(per_seed: list[tuple[int, list[Connection]]]) -> dict[str, Any]:
    """Endpoint and outcome counts and latency percentiles per client and kind, over all seeds."""
    endpoints: Counter[tuple[str, str, str]] = Counter()
    outcomes: Counter[tuple[str, str, str]] = Counter()
    totals: Counter[tuple[str, str]] = Counter()
    latencies: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _seed, conns in per_seed:
        for c in conns:
            key = (c["client"], c["kind"])
            totals[key] += 1
            endpoints[(*key, c["endpoint"] or "-")] += 1
            outcomes[(*key, c["outcome"])] += 1
            v = c[METRICS[c["kind"]]]
            if v is not None:
                latencies[key].append(float(v))
    lat_rows = []
    for (client, kind), vals in sorted(latencies.items(), key=lambda kv: _order(kv[0])):
        vals.sort()
        row: dict[str, Any] = {"client": client, "kind": kind, "metric": METRICS[kind], "count": len(vals),
                               "min": vals[0]}
        row.update({f"p{p}": percentile(vals, p) for p in PERCENTILES})
        row["max"] = vals[-1]
        lat_rows.append(row)
    def order(c: Counter[tuple[str, str, str]]) -> list[tuple[tuple[str, str, str], int]]:
        return sorted(c.items(), key=lambda kv: _order(kv[0]))

    return {
        "connections": sum(totals.values()),
        "endpoints": [{"client": c, "kind": k, "endpoint": e, "count": n,
                       "share": round(n / totals[(c, k)], 4)} for (c, k, e), n in order(endpoints)],
        "outcomes": [{"client": c, "kind": k, "outcome": o, "count": n,
                      "share": round(n / totals[(c, k)], 4)} for (c, k, o), n in order(outcomes)],
        "latency_ms": lat_rows,
    }
