#!/usr/bin/env python3
"""Summarise oracle (or emulator) pcaps into comparable JSON, and compare two summaries.

  oracle_summary.py summarize OUTDIR [SCENARIO ...]
      For every OUTDIR/<scenario>/pcap/<iface>.pcap (interface order from captures.tsv when
      present) extract one record per frame with tshark, plus conntrack / iptables-save
      counters / nft rulesets (kube-proxy nftables mode) when present. Writes
      OUTDIR/<scenario>/summary.json, OUTDIR/summary.json and a readable OUTDIR/summary.txt.
  oracle_summary.py pcap FILE.pcap
      Print the records of one pcap as JSON (handy for an emulator's own pcaps).
  oracle_summary.py compare A.json B.json [--level brief|extended] [--no-state]
      Compare two summary.json files (whole-run or per-scenario) on their stable fields.
      Exit 0 when equal, 1 when they differ. State (unless --no-state): conntrack entries, and
      the rule state of the kube-proxy mode (non-zero iptables-save counters, or the nft
      ruleset). Rule state of an iptables-mode run and an nftables-mode run is not comparable:
      it is skipped with a note.

Record fields (per frame): n, t, src_mac, dst_mac, proto (ARP/TCP/UDP/ICMP/...), src, dst
("ip:port" for TCP/UDP, "ip" otherwise), flags (Scapy order, e.g. "S", "SA", "PA", "FA"),
ttl, ip_len, df, ip_id, tcp_len, seq/ack (tshark relative), win, icmp_type/icmp_code and
inner (quoted packet of an ICMP error), arp, dns, http, csum_ok, and two canonical strings:
  key   brief stable fields: proto, src, dst, tcp flags / icmp type+code / arp op, ttl, MACs
  xkey  key + ip_len, df, tcp_len, relative seq/ack, dns id/qname/answers, http line
Unstable (differ between runs): t, ip_id, win (usually stable), TCP timestamps (not extracted).
"""
import hashlib
import json
import os
import re
import subprocess
import sys
from typing import Any

FIELDS = [
    "frame.number", "frame.time_relative", "eth.src", "eth.dst", "eth.type",
    "arp.opcode", "arp.src.hw_mac", "arp.src.proto_ipv4", "arp.dst.hw_mac", "arp.dst.proto_ipv4",
    "ip.src", "ip.dst", "ip.proto", "ip.ttl", "ip.id", "ip.len", "ip.flags.df", "ip.checksum.status",
    "tcp.srcport", "tcp.dstport", "tcp.flags", "tcp.seq", "tcp.ack", "tcp.len", "tcp.window_size_value",
    "tcp.checksum.status",
    "udp.srcport", "udp.dstport", "udp.length", "udp.checksum.status",
    "icmp.type", "icmp.code", "icmp.checksum.status",
    "dns.id", "dns.flags.response", "dns.qry.name", "dns.a",
    "http.request.method", "http.request.uri", "http.response.code",
]
AGG = "|"
IP_PROTOS = {1: "ICMP", 6: "TCP", 17: "UDP"}
TCP_FLAG_ORDER = [("F", 0x01), ("S", 0x02), ("R", 0x04), ("P", 0x08), ("A", 0x10),
                  ("U", 0x20), ("E", 0x40), ("C", 0x80), ("N", 0x100)]  # Scapy's "FSRPAUECN"
DEFAULT_IFACE_ORDER = ["client-eth0", "node1-veth-client", "node1-cbr0", "node1-eth0", "gw-eth1", "gw-eth2",
                       "node2-eth0", "node2-cbr0", "node2-veth-server", "server-eth0", "node2-veth-dns", "dns-eth0"]


def die(msg: str) -> None:
    sys.stderr.write(f"oracle_summary: error: {msg}\n")
    sys.exit(2)


def tcp_flags_str(v: int) -> str:
    return "".join(ch for ch, bit in TCP_FLAG_ORDER if v & bit)


def _int(s, base=10):
    try:
        return int(s, base)
    except (TypeError, ValueError):
        return None


def _ep(ip, port):
    return f"{ip}:{port}" if port not in (None, "") else ip


def run_tshark(pcap: str):
    cmd = ["tshark", "-n", "-r", pcap,
           "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
           "-T", "fields", "-E", "header=n", "-E", "separator=/t", "-E", "occurrence=a",
           "-E", f"aggregator={AGG}"]
    for f in FIELDS:
        cmd += ["-e", f]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        die("tshark not found (apt-get install tshark)")
    if p.returncode != 0:
        die(f"tshark failed on {pcap}: {p.stderr.strip()[-500:]}")
    rows = []
    for line in p.stdout.splitlines():
        vals = line.split("\t")
        vals += [""] * (len(FIELDS) - len(vals))
        rows.append({f: (v.split(AGG) if v != "" else []) for f, v in zip(FIELDS, vals, strict=False)})
    return rows


def first(row, f, conv=None):
    v = row[f]
    if not v:
        return None
    return conv(v[0]) if conv else v[0]


def record_from_row(row) -> dict:
    r = {"n": first(row, "frame.number", int), "t": round(float(first(row, "frame.time_relative") or 0), 6),
         "src_mac": first(row, "eth.src"), "dst_mac": first(row, "eth.dst")}
    etype = first(row, "eth.type")
    csum = []
    if row["arp.opcode"]:
        op = first(row, "arp.opcode", int)
        r["proto"] = "ARP"
        r["arp"] = {"op": {1: "request", 2: "reply"}.get(op, str(op)),
                    "sender_mac": first(row, "arp.src.hw_mac"), "sender_ip": first(row, "arp.src.proto_ipv4"),
                    "target_mac": first(row, "arp.dst.hw_mac"), "target_ip": first(row, "arp.dst.proto_ipv4")}
        r["src"], r["dst"] = r["arp"]["sender_ip"], r["arp"]["target_ip"]
    elif row["ip.src"]:
        proto = _int(row["ip.proto"][0])
        r["proto"] = IP_PROTOS.get(proto, f"IP/{proto}")
        r["ttl"] = _int(row["ip.ttl"][0])
        r["ip_len"] = _int(row["ip.len"][0])
        r["df"] = row["ip.flags.df"][0] in ("1", "True", "true") if row["ip.flags.df"] else None
        r["ip_id"] = _int(row["ip.id"][0], 16) if row["ip.id"] and row["ip.id"][0].startswith("0x") else _int(
            first(row, "ip.id"))
        csum.append(first(row, "ip.checksum.status"))
        sip, dip = row["ip.src"][0], row["ip.dst"][0]
        if r["proto"] == "TCP":
            r["src"], r["dst"] = _ep(sip, first(row, "tcp.srcport")), _ep(dip, first(row, "tcp.dstport"))
            fl = first(row, "tcp.flags")
            r["flags"] = tcp_flags_str(int(fl, 16)) if fl else ""
            r["seq"], r["ack"] = first(row, "tcp.seq", int), first(row, "tcp.ack", int)
            r["tcp_len"] = first(row, "tcp.len", int)
            r["win"] = first(row, "tcp.window_size_value", int)
            csum.append(first(row, "tcp.checksum.status"))
        elif r["proto"] == "UDP":
            r["src"], r["dst"] = _ep(sip, first(row, "udp.srcport")), _ep(dip, first(row, "udp.dstport"))
            r["udp_len"] = first(row, "udp.length", int)
            csum.append(first(row, "udp.checksum.status"))
        elif r["proto"] == "ICMP":
            r["src"], r["dst"] = sip, dip
            r["icmp_type"], r["icmp_code"] = first(row, "icmp.type", int), first(row, "icmp.code", int)
            csum.append(first(row, "icmp.checksum.status"))
            if len(row["ip.src"]) > 1:  # ICMP error: quoted IP header + 8 bytes
                iproto = _int(row["ip.proto"][1]) if len(row["ip.proto"]) > 1 else None
                ipn = IP_PROTOS.get(iproto, f"IP/{iproto}") if iproto is not None else "IP/None"
                isp = idp = None
                if ipn == "TCP":
                    isp, idp = first(row, "tcp.srcport"), first(row, "tcp.dstport")
                elif ipn == "UDP":
                    isp, idp = first(row, "udp.srcport"), first(row, "udp.dstport")
                r["inner"] = {"proto": ipn, "src": _ep(row["ip.src"][1], isp), "dst": _ep(row["ip.dst"][1], idp),
                              "ttl": _int(row["ip.ttl"][1]) if len(row["ip.ttl"]) > 1 else None}
        else:
            r["src"], r["dst"] = sip, dip
        if row["dns.id"]:
            r["dns"] = {"id": _int(row["dns.id"][0], 16) if row["dns.id"][0].startswith("0x") else _int(row["dns.id"][0]),
                        "response": row["dns.flags.response"][0] in ("1", "True", "true") if row["dns.flags.response"] else None,
                        "qname": first(row, "dns.qry.name"), "answers": row["dns.a"]}
        if row["http.request.method"]:
            r["http"] = f"{first(row, 'http.request.method')} {first(row, 'http.request.uri')}"
        elif row["http.response.code"]:
            r["http"] = f"HTTP {first(row, 'http.response.code')}"
    else:
        r["proto"] = f"ETH/{etype}"
        r["src"] = r["dst"] = None
    # tshark checksum status: 0 bad, 1 good, 2 unverified
    vals = [c for c in csum if c is not None]
    r["csum_ok"] = all(c == "1" for c in vals) if vals else None
    r["key"], r["xkey"] = make_keys(r)
    return r


def make_keys(r):
    p = r["proto"]
    macs = f"{r['src_mac']} > {r['dst_mac']}"
    if p == "ARP":
        a = r["arp"]
        if a["op"] == "request":
            k = f"ARP who-has {a['target_ip']} tell {a['sender_ip']} {macs}"
        else:
            k = f"ARP {a['sender_ip']} is-at {a['sender_mac']} (to {a['target_ip']}) {macs}"
        return k, k + f" target_mac={a['target_mac']}"
    if p == "TCP":
        k = f"TCP {r['src']} > {r['dst']} [{r['flags']}] ttl={r['ttl']} {macs}"
        x = f"{k} len={r['ip_len']} df={int(bool(r['df']))} payload={r['tcp_len']} seq={r['seq']} ack={r['ack']}"
    elif p == "UDP":
        k = f"UDP {r['src']} > {r['dst']} ttl={r['ttl']} {macs}"
        x = f"{k} len={r['ip_len']} df={int(bool(r['df']))}"
    elif p == "ICMP":
        inner = r.get("inner")
        ik = f" inner=[{inner['proto']} {inner['src']} > {inner['dst']}]" if inner else ""
        k = f"ICMP {r['src']} > {r['dst']} type={r['icmp_type']} code={r['icmp_code']}{ik} ttl={r['ttl']} {macs}"
        x = f"{k} len={r['ip_len']} df={int(bool(r['df']))}" + (f" inner_ttl={inner['ttl']}" if inner else "")
    else:
        k = f"{p} {r.get('src')} > {r.get('dst')} {macs}"
        x = k
    if "dns" in r:
        d = r["dns"]
        x += f" dns(id=0x{d['id']:04x} {'resp' if d['response'] else 'query'} {d['qname']} -> {','.join(d['answers']) or '-'})"
    if "http" in r:
        x += f" http({r['http']})"
    return k, x


def summarize_pcap(pcap: str):
    return [record_from_row(row) for row in run_tshark(pcap)]


# ----------------------------------------------------------------------------- state files
def parse_conntrack(text: str):
    entries = []
    for line in text.splitlines():
        toks = line.split()
        if len(toks) < 4 or "=" in toks[0]:
            continue
        proto = toks[0]
        i = 3  # proto, protonum, timeout
        state = None
        if "=" not in toks[i] and not toks[i].startswith("["):
            state, i = toks[i], i + 1
        orig: dict[str, Any] = {}
        reply: dict[str, Any] = {}
        flags: list[str] = []
        extra: dict[str, Any] = {}
        side = orig
        for t in toks[i:]:
            if t.startswith("["):
                flags.append(t.strip("[]"))
                continue
            if "=" not in t:
                continue
            k, v = t.split("=", 1)
            if k in ("src", "dst", "sport", "dport", "type", "code", "id"):
                if k in side and side is orig:  # second tuple = reply direction
                    side = reply
                side[k] = v
            elif k in ("mark", "zone", "secctx", "labels"):
                extra[k] = v
        def fmt(d):
            if "sport" in d:
                return f"{d.get('src')}:{d.get('sport')} > {d.get('dst')}:{d.get('dport')}"
            if "type" in d:
                return f"{d.get('src')} > {d.get('dst')} type={d.get('type')} code={d.get('code')} id={d.get('id')}"
            return f"{d.get('src')} > {d.get('dst')}"
        e = {"proto": proto, "state": state, "orig": fmt(orig), "reply": fmt(reply), "flags": flags, **extra}
        e["key"] = f"{proto} {state or '-'} orig=[{e['orig']}] reply=[{e['reply']}] {' '.join('[' + f + ']' for f in flags)}".strip()
        entries.append(e)
    entries.sort(key=lambda e: e["key"])
    return entries


def parse_iptables_counters(text: str):
    """Non-zero counters of iptables-save -c: {'filter': [...], 'nat': [...]}"""
    out: dict[str, Any] = {}
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            out.setdefault(table, [])
            continue
        m = re.match(r"^:(\S+) (\S+) \[(\d+):(\d+)\]", line)
        if m and table:
            if m.group(3) != "0":
                out[table].append(f"[{m.group(3)}:{m.group(4)}] policy {m.group(1)} {m.group(2)}")
            continue
        m = re.match(r"^\[(\d+):(\d+)\] (-A .*)$", line)
        if m and table and m.group(1) != "0":
            out[table].append(f"[{m.group(1)}:{m.group(2)}] {m.group(3)}")
    return {t: v for t, v in out.items() if v}


def parse_nft_ruleset(text: str):
    """`nft list ruleset` as a list of lines, indentation and blank lines dropped (kube-proxy writes
    no counters, so this is the ruleset as loaded plus whatever the datapath added to sets)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def nft_blocks(lines):
    """A parse_nft_ruleset list as its tables, each with its sets and chains sorted: what the
    ruleset is, whatever order its objects were created in."""
    tables, cur = [], None
    for line in lines:
        if line.startswith("table "):
            tables.append([line, []])
        elif line.startswith(("set ", "map ", "chain ")) and line.endswith("{") and tables:
            cur = [line]
            tables[-1][1].append(cur)
        elif cur is not None:
            cur.append(line)
            cur = None if line == "}" else cur
        elif tables:
            tables[-1][0] += "\n" + line
    return sorted((head, sorted("\n".join(b) for b in blocks)) for head, blocks in tables)


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def summarize_scenario(sdir: str) -> dict:
    name = os.path.basename(os.path.normpath(sdir))
    res: dict[str, Any] = {"scenario": name}
    meta = _read(os.path.join(sdir, "scenario.json"))
    if meta:
        res.update({k: v for k, v in json.loads(meta).items() if k != "scenario"})
    client = _read(os.path.join(sdir, "client-result.json"))
    if client:
        res["client_result"] = json.loads(client)
    caps = []
    tsv = _read(os.path.join(sdir, "captures.tsv"))
    if tsv:
        for line in tsv.splitlines():
            nm, ns, dev, rel = line.split("\t")
            caps.append((nm, ns, dev, rel))
    else:
        pdir = os.path.join(sdir, "pcap")
        names = sorted((f[:-5] for f in os.listdir(pdir) if f.endswith(".pcap")),
                       key=lambda n: (DEFAULT_IFACE_ORDER.index(n) if n in DEFAULT_IFACE_ORDER else 99, n))
        caps = [(n, None, None, f"pcap/{n}.pcap") for n in names]
    res["interfaces"] = {}
    for nm, ns, dev, rel in caps:
        path = os.path.join(sdir, rel)
        if not os.path.exists(path):
            res["interfaces"][nm] = {"ns": ns, "dev": dev, "pcap": rel, "missing": True, "packets": []}
            continue
        pk = summarize_pcap(path)
        res["interfaces"][nm] = {"ns": ns, "dev": dev, "pcap": rel, "count": len(pk), "packets": pk}
    res["conntrack"] = {}
    res["iptables_counters"] = {}
    for node in ("node1", "node2", "gw"):
        t = _read(os.path.join(sdir, f"conntrack-{node}.txt"))
        if t is not None:
            res["conntrack"][node] = parse_conntrack(t)
        t = _read(os.path.join(sdir, f"iptables-save-{node}.txt"))
        if t is not None:
            res["iptables_counters"][node] = parse_iptables_counters(t)
        t = _read(os.path.join(sdir, f"nft-ruleset-{node}.txt"))
        if t is not None:  # kube-proxy nftables mode (ORACLE_PROXY=nftables)
            res.setdefault("nft_ruleset", {})[node] = parse_nft_ruleset(t)
    return res


def write_text(summary: dict, path: str):
    lines = []
    for sc, s in summary["scenarios"].items():
        lines.append(f"=== {sc}: {s.get('description', '')}")
        cr = s.get("client_result")
        if cr:
            lines.append(f"client result: {json.dumps(cr, sort_keys=True)}")
        for ifn, d in s["interfaces"].items():
            lines.append(f"--- {ifn} ({d.get('ns')}/{d.get('dev')}): {len(d['packets'])} frames")
            for p in d["packets"]:
                bad = "" if p.get("csum_ok") in (True, None) else "  !!checksum"
                lines.append(f"  {p['n']:3d} {p['xkey']}{bad}")
        for node, ents in s.get("conntrack", {}).items():
            lines.append(f"--- conntrack {node}: {len(ents)} entries")
            lines += [f"  {e['key']} mark={e.get('mark')}" for e in ents]
        for node, tabs in s.get("iptables_counters", {}).items():
            for tab, rules in tabs.items():
                lines.append(f"--- iptables {node} {tab} (non-zero counters)")
                lines += [f"  {r}" for r in rules]
        for node, rs in s.get("nft_ruleset", {}).items():
            digest = hashlib.sha256("\n".join(rs).encode()).hexdigest()[:16]
            hits = [r for r in rs if re.search(r"\bcounter packets [1-9]", r)]
            lines.append(f"--- nft ruleset {node}: {len(rs)} lines, sha256 {digest} (nft-ruleset-{node}.txt"
                         + (f"; {len(hits)} non-zero counters)" if hits else ")"))
            lines += [f"  {r}" for r in hits]
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def cmd_summarize(outdir: str, scenarios):
    if not os.path.isdir(outdir):
        die(f"no such directory: {outdir}")
    if not scenarios:
        scenarios = sorted(d for d in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, d, "pcap")))
    summary: dict[str, Any] = {"format": "k8s-svc-oracle-summary/1",
               "stable_fields_brief": ["proto", "src", "dst", "flags|icmp_type+code|arp op", "ttl", "src_mac", "dst_mac"],
               "stable_fields_extended": ["ip_len", "df", "tcp_len", "seq (relative)", "ack (relative)",
                                          "dns id/qname/answers", "http request/status"],
               "unstable_fields": ["t", "ip_id", "win"],
               "scenarios": {}}
    info = _read(os.path.join(outdir, "run-info.json"))
    if info:
        summary["run_info"] = json.loads(info)
    for sc in scenarios:
        sdir = os.path.join(outdir, sc)
        if not os.path.isdir(sdir):
            die(f"no scenario directory {sdir}")
        s = summarize_scenario(sdir)
        with open(os.path.join(sdir, "summary.json"), "w") as f:
            json.dump(s, f, indent=1)
            f.write("\n")
        summary["scenarios"][sc] = s
    tmp = os.path.join(outdir, "summary.json.tmp")
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(outdir, "summary.json"))
    write_text(summary, os.path.join(outdir, "summary.txt"))
    for sc, s in summary["scenarios"].items():
        counts = ", ".join(f"{k}={len(v['packets'])}" for k, v in s["interfaces"].items())
        print(f"{sc}: {counts}")
    return 0


# ----------------------------------------------------------------------------- compare
def _scenarios(doc):
    if "scenarios" in doc:
        return doc["scenarios"]
    if "interfaces" in doc:
        return {doc.get("scenario", "scenario"): doc}
    die("not a summary file")


def _rules_kind(s):
    """Which kube-proxy rule state a scenario summary carries: 'nftables', 'iptables' or None."""
    if s.get("nft_ruleset"):
        return "nftables"
    if s.get("iptables_counters"):
        return "iptables"
    return None


def cmd_compare(a_path, b_path, level="brief", state=True):
    with open(a_path) as f:
        a = _scenarios(json.load(f))
    with open(b_path) as f:
        b = _scenarios(json.load(f))
    k = "key" if level == "brief" else "xkey"
    diffs = 0
    notes = []
    for sc in sorted(set(a) | set(b)):
        if sc not in a or sc not in b:
            print(f"[{sc}] only in {'A' if sc in a else 'B'}")
            diffs += 1
            continue
        ia, ib = a[sc]["interfaces"], b[sc]["interfaces"]
        for ifn in list(ia) + [x for x in ib if x not in ia]:
            la = [p[k] for p in ia.get(ifn, {}).get("packets", [])]
            lb = [p[k] for p in ib.get(ifn, {}).get("packets", [])]
            if la != lb:
                diffs += 1
                print(f"[{sc}] {ifn}: {len(la)} vs {len(lb)} frames differ")
                import difflib
                for line in difflib.unified_diff(la, lb, "A", "B", lineterm="", n=1):
                    print("    " + line)
        if state:
            for node in sorted(set(a[sc].get("conntrack", {})) | set(b[sc].get("conntrack", {}))):
                ca = [e["key"] for e in a[sc].get("conntrack", {}).get(node, [])]
                cb = [e["key"] for e in b[sc].get("conntrack", {}).get(node, [])]
                if ca != cb:
                    diffs += 1
                    print(f"[{sc}] conntrack {node} differs:\n    A: {ca}\n    B: {cb}")
            ka, kb = _rules_kind(a[sc]), _rules_kind(b[sc])
            if ka and kb and ka != kb:
                notes.append(f"[{sc}] rule state not compared: A is a kube-proxy {ka} run, B a {kb} run")
                continue
            ta, tb = a[sc].get("iptables_counters", {}), b[sc].get("iptables_counters", {})
            if ta != tb:
                diffs += 1
                print(f"[{sc}] iptables counters differ:\n    A: {json.dumps(ta)}\n    B: {json.dumps(tb)}")
            na, nb = a[sc].get("nft_ruleset", {}), b[sc].get("nft_ruleset", {})
            for node in sorted(set(na) | set(nb)):
                ra, rb = na.get(node), nb.get(node)
                if ra != rb and ra is not None and rb is not None and nft_blocks(ra) == nft_blocks(rb):
                    # the kernel lists objects in creation order, which is the writer's (the oracle's
                    # file, or kube-proxy's transactions): the same objects in another order are the same rules
                    notes.append(f"[{sc}] nft ruleset {node}: the same tables, sets and chains, created "
                                 "in another order")
                    continue
                if ra != rb:
                    diffs += 1
                    if ra is None or rb is None:
                        print(f"[{sc}] nft ruleset {node} only in {'A' if rb is None else 'B'}")
                        continue
                    print(f"[{sc}] nft ruleset {node} differs:")
                    import difflib
                    for line in difflib.unified_diff(ra, rb, "A", "B", lineterm="", n=1):
                        print("    " + line)
    for note in notes:
        print("note: " + note)
    print("IDENTICAL" if diffs == 0 else f"{diffs} difference(s)")
    return 0 if diffs == 0 else 1


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd = argv[1]
    if cmd == "summarize" and len(argv) >= 3:
        return cmd_summarize(argv[2], argv[3:])
    if cmd == "pcap" and len(argv) == 3:
        json.dump(summarize_pcap(argv[2]), sys.stdout, indent=1)
        print()
        return 0
    if cmd == "compare" and len(argv) >= 4:
        level, state = "brief", True
        rest = argv[4:]
        if "--level" in rest:
            level = rest[rest.index("--level") + 1]
        if "--no-state" in rest:
            state = False
        if level not in ("brief", "extended"):
            die("--level must be brief or extended")
        return cmd_compare(argv[2], argv[3], level, state)
    die("bad usage; see --help")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
