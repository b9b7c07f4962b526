"""The report page: one self-contained HTML file (inline CSS, script and SVG; nothing fetched), the
same bytes for the same run."""
from __future__ import annotations

import re
from html import escape

from pktemu.report.flows import Flow, flow_nat_summary, unmatched_drops
from pktemu.report.ladder import ladder_svg
from pktemu.report.runread import Run
from pktemu.version import version

LADDER_CSS = """
svg.ladder text{font:11px ui-monospace,Menlo,Consolas,monospace;paint-order:stroke;stroke:#fff;
 stroke-width:3px}
svg.ladder .ln-node{font-weight:bold;text-anchor:middle;font-family:system-ui,Helvetica,sans-serif;
 font-size:12px}
svg.ladder .ln-dev{text-anchor:middle;fill:#555}
svg.ladder .lifeline line{stroke:#bbb;stroke-dasharray:4 3}
svg.ladder line{pointer-events:none}
svg.ladder .arrow{stroke:#555;stroke-width:1.3}
svg.ladder .same{stroke:#555;stroke-width:1.3;stroke-dasharray:2 2}
svg.ladder .hop{cursor:pointer}
svg.ladder .row{fill:none;pointer-events:all}
svg.ladder .hop:hover .row{fill:#f2f7fc}
svg.ladder .hop circle{stroke:#333;stroke-width:1}
svg.ladder .hop.out circle{fill:#27ae60}
svg.ladder .hop.in circle{fill:#2e86c1}
svg.ladder .hop.seen circle{fill:#999}
svg.ladder .hop.nat circle{fill:#e67e22;r:7}
svg.ladder .natbadge{fill:#a04000;font-weight:bold}
svg.ladder .tm{fill:#777}
svg.ladder .x{stroke:#c0392b;stroke-width:3}
svg.ladder .droptext{fill:#c0392b;font-weight:bold}
svg.ladder .hop.sel circle{stroke:#000;stroke-width:3}
svg.ladder .hop.sel .addr{font-weight:bold}
svg.ladder .hop:focus{outline:none}
"""

CSS = LADDER_CSS + """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#222;
 background:#fafafa}
header,main{max-width:1500px;margin:0 auto;padding:0 20px}
header{padding-top:16px}
h1{font-size:22px;margin:8px 0}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 4px;font-family:ui-monospace,Menlo,Consolas,monospace}
.meta{color:#555;white-space:pre-wrap}
nav a{margin-right:14px}
.scroll{overflow-x:auto;background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:6px}
.nat-summary{color:#a04000;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.explain{white-space:pre-wrap;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;background:#fffbe6;
 border:1px solid #e8dca0;border-radius:6px;padding:8px;margin:6px 0 14px;min-height:1.4em}
pre{font:12px/1.35 ui-monospace,Menlo,Consolas,monospace;background:#fff;border:1px solid #e3e3e3;
 border-radius:6px;padding:8px;overflow-x:auto}
pre .hit{background:#fdebd0;font-weight:bold}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
.legend span{margin-right:16px}.dot{display:inline-block;width:10px;height:10px;border-radius:50%;
 border:1px solid #333;vertical-align:middle;margin-right:4px}
details summary{cursor:pointer;font-weight:bold;margin:10px 0}
"""

SCRIPT = """
(function(){
  function show(g){
    var box=document.getElementById(g.getAttribute('data-box'));
    var prev=document.querySelectorAll('.hop.sel');
    for(var i=0;i<prev.length;i++){prev[i].classList.remove('sel');}
    g.classList.add('sel');
    var c=g.getAttribute('data-comment')||'(no comment)';
    box.textContent=g.getAttribute('data-head')+'\\n'+g.getAttribute('data-label')+'\\n\\n'+c;
  }
  var hops=document.querySelectorAll('.hop');
  for(var i=0;i<hops.length;i++){
    hops[i].addEventListener('click',function(){show(this);});
    hops[i].addEventListener('keydown',function(e){
      if(e.key==='Enter'||e.key===' '){e.preventDefault();show(this);}
    });
  }
})();
"""

_COUNTED = re.compile(r"^\[([0-9]+):[0-9]+\] ")
_NFT_COUNTED = re.compile(r"\bcounter packets ([0-9]+) bytes [0-9]+")


def _rules_pre(text: str, counted: re.Pattern[str] = _COUNTED) -> str:
    """iptables-save -c (or nft list ruleset) with the rules that counted packets highlighted."""
    lines = []
    for line in text.splitlines():
        m = counted.search(line)
        cls = ' class="hit"' if m and m.group(1) != "0" else ""
        lines.append(f"<span{cls}>{escape(line)}</span>")
    return "<pre>" + "\n".join(lines) + "</pre>"


def _flow_section(i: int, flow: Flow, run: Run, open_: bool) -> str:
    box = f"ex{i}"
    nat = flow_nat_summary(flow)
    drops = f", {len(flow.drops)} dropped" if flow.drops else ""
    n = len({h.packet for h in flow.hops})
    head = (f'<h3 id="flow{i}">flow {i + 1}: {escape(flow.title)}</h3>'
            f'<div class="meta">{n} packet{"s" if n != 1 else ""}, '
            f'{len(flow.hops)} frame{"s" if len(flow.hops) != 1 else ""} at {len(flow.points)} capture point'
            f'{"s" if len(flow.points) != 1 else ""}{drops}</div>')
    if nat:
        head += f'<div class="nat-summary">{escape(nat)}</div>'
    body = (f'<div class="scroll">{ladder_svg(flow, run.points, run.base_ns, box)}</div>'
            f'<div class="explain" id="{box}" aria-live="polite">Click a hop to see why the frame looks '
            f'as it does there (its comment in all.pcapng).</div>')
    if open_:
        return f'<section class="flow">{head}{body}</section>'
    summary = f"flow {i + 1}: {escape(flow.title)}"
    return f'<details class="flow"><summary>{summary}</summary>{head}{body}</details>'


def standalone_ladder(run: Run, flow: Flow, packets: int | None = None) -> str:
    """One flow's ladder as an SVG file of its own (its first `packets` packets), styled inline."""
    if packets is not None:
        flow = Flow(flow.key, flow.title, [h for h in flow.hops if h.packet < packets],
                    [d for d in flow.drops if not flow.hops or d.t_ns <= max(
                        (h.frame.ts_ns for h in flow.hops if h.packet < packets), default=0)])
    svg = ladder_svg(flow, run.points, run.base_ns, "f", f"{run.scenario}: {flow.title}")
    style = LADDER_CSS.replace("svg.ladder ", "").replace("\n", "")
    head, _, rest = svg.partition(">")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n{head}><style>text{{font-family:monospace}}{style}'
            f'.hop{{cursor:default}}.caption{{font-weight:bold;font-size:13px}}</style>'
            f'<rect width="100%" height="100%" fill="#fff"/>{rest}\n')


def render_page(run: Run, flows: list[Flow], topology_svg: str, topology_note: str) -> str:
    ip_flows = [f for f in flows if f.key[0] not in ("arp", "other")]
    rest = [f for f in flows if f.key[0] in ("arp", "other")]
    title = f"pktemu report: {run.scenario}"
    parts = [f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
             f'<meta name="generator" content="pktemu {escape(version())}">'
             f'<meta name="viewport" content="width=device-width, initial-scale=1">'
             f'<title>{escape(title)}</title><style>{CSS}</style></head><body>',
             f'<header><h1>{escape(title)}</h1>',
             f'<div class="meta">{escape(run.description)}</div>' if run.description else "",
             f'<div class="meta">{escape(run.section)}</div>',
             '<nav><a href="#topology">Topology</a><a href="#flows">Flows</a><a href="#drops">Drops</a>'
             '<a href="#conntrack">Conntrack</a><a href="#counters">Rule counters</a></nav></header><main>',
             f'<h2 id="topology">Topology</h2><div class="meta">{escape(topology_note)}</div>',
             f'<div class="scroll topology">{topology_svg}</div>',
             '<h2 id="flows">Flows</h2>',
             '<div class="legend"><span><i class="dot" style="background:#27ae60"></i>sent (out)</span>'
             '<span><i class="dot" style="background:#2e86c1"></i>received (in)</span>'
             '<span><i class="dot" style="background:#e67e22"></i>address translated here (NAT)</span>'
             '<span style="color:#c0392b">✕ dropped</span></div>',
             '<div class="meta">Columns are the capture points in path order (captures.tsv), rows the frames '
             'of all.pcapng in order; a line joins one packet\'s hops. Each row shows the addresses as '
             'seen at that point. Click a hop for its explanation.</div>']
    if not ip_flows:
        parts.append("<p>No IP traffic was captured.</p>")
    for i, f in enumerate(ip_flows):
        parts.append(_flow_section(i, f, run, True))
    if rest:
        parts.append("<h3>ARP and other frames</h3>")
        for i, f in enumerate(rest, len(ip_flows)):
            parts.append(_flow_section(i, f, run, False))
    parts.append('<h2 id="drops">Drops</h2>')
    if not run.drops:
        parts.append("<p>No frame was dropped (drops.txt is empty).</p>")
    else:
        other = unmatched_drops(run, flows)
        drawn = "; those of a flow are drawn in its ladder" if len(other) < len(run.drops) else ""
        parts.append(f"<p>{len(run.drops)} frame{'s' if len(run.drops) != 1 else ''} dropped "
                     f"(drops.txt){drawn}.</p>")
        parts.append("<table><tr><th>time</th><th>node</th><th>where</th><th>reason</th></tr>")
        for d in run.drops:
            parts.append(f"<tr><td>+{(d.t_ns - run.base_ns) / 1e9:.6f}s</td><td>{escape(d.node)}</td>"
                         f"<td>{escape(d.where)}</td><td>{escape(d.reason)}</td></tr>")
        parts.append("</table>")
    parts.append('<h2 id="conntrack">Conntrack tables at the end of the run</h2>')
    for node, text in run.conntrack.items():
        parts.append(f"<h3>{escape(node)}</h3><pre>{escape(text) or '(empty)'}</pre>")
    parts.append('<h2 id="counters">Rule counters at the end of the run (iptables-save -c, nft list ruleset)'
                 '</h2><div class="meta">Rules that counted packets are highlighted.</div>')
    for node, text in run.iptables.items():
        parts.append(f"<h3>{escape(node)}</h3>{_rules_pre(text)}")
    for node, text in run.nft.items():      # a node's nftables rules (nft-ruleset-<node>.txt)
        parts.append(f"<h3>{escape(node)} (nft list ruleset)</h3>{_rules_pre(text, _NFT_COUNTED)}")
    if not run.iptables and not run.nft:
        parts.append("<p>No node has netfilter rules.</p>")
    parts.append(f"</main><script>{SCRIPT}</script></body></html>\n")
    return "".join(parts)
