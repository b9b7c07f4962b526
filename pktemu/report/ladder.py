"""A flow as a ladder (sequence) diagram in SVG: one vertical line per capture point the flow
crossed, in path order, one row per frame, a packet's successive hops joined by arrows. Each row
writes the addresses as seen at that point, so a translation shows as the change between two rows,
and the hop whose comment made it carries the `DNAT a -> b` badge. Drops sit at the node where the
kernel freed the frame. Every hop is a focusable group holding its explanation (the frame's
comment) in data attributes, which the page's script shows on click.
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape

from pktemu.report.flows import Flow
from pktemu.report.runread import Drop, Frame

COL_W = 128
LEFT = 150
TOP = 58
ROW = 22
NAT_ROW = 16
TEXT_PX = 6.6                       # average width of a character of the 11 px label font


@dataclass
class _Row:
    y: int
    col: int
    hop: int | None                  # index into flow.hops, None for a drop
    drop: Drop | None = None


def _attr(s: str) -> str:
    return escape(s, quote=True).replace("\n", "&#10;")


def columns(flow: Flow, order: list[str]) -> list[str]:
    rank = {p: i for i, p in enumerate(order)}
    return sorted(flow.points, key=lambda p: (rank.get(p, len(rank)), p))


def _rows(flow: Flow, cols: list[str]) -> tuple[list[_Row], int]:
    col_of = {p: i for i, p in enumerate(cols)}
    events: list[tuple[int, int, int | None, Drop | None]] = []
    first_at: dict[int, int] = {}          # the packet of the first hop at each instant
    for n, hop in enumerate(flow.hops):
        # a drop at the instant of the packet's last hop comes before what it caused (a REJECT's
        # ICMP error, the router's unreachable), which are later packets of the flow
        later = hop.packet != first_at.setdefault(hop.frame.ts_ns, hop.packet)
        events.append((hop.frame.ts_ns, 2 if later else 0, n, None))
    for drop in flow.drops:
        events.append((drop.t_ns, 1, None, drop))
    events.sort(key=lambda e: (e[0], e[1], e[2] if e[2] is not None else 0))
    rows: list[_Row] = []
    y, last_at_node = TOP + 14, {}
    for _t, _k, i, d in events:
        if i is not None:
            h = flow.hops[i]
            c = col_of[h.frame.point]
            last_at_node[h.frame.point.split("/", 1)[0]] = c
            rows.append(_Row(y, c, i))
            y += ROW + NAT_ROW * len(h.nat)
        elif d is not None:
            first = next((j for j, p in enumerate(cols) if p.startswith(d.node + "/")), 0)
            c = last_at_node.get(d.node, first)
            rows.append(_Row(y, c, None, d))
            y += ROW + NAT_ROW
    return rows, y + 10


def _x(col: int) -> int:
    return LEFT + col * COL_W + COL_W // 2


def _drop_text(r: _Row) -> str:
    """A drop row's text: where and why, cut at 110 characters (the page's box has it all)."""
    assert r.drop is not None
    text = f"dropped at {r.drop.node} {r.drop.where}: {r.drop.reason}"
    return text if len(text) <= 110 else text[:107] + "..."


def hop_text(f: Frame, base_ns: int) -> str:
    return f"#{f.number} {f.direction} +{(f.ts_ns - base_ns) / 1e9:.6f}s"


def ladder_svg(flow: Flow, order: list[str], base_ns: int, box_id: str, caption: str = "") -> str:
    """The ladder; a `caption` is written above it (the standalone SVG's title)."""
    cols = columns(flow, order)
    rows, height = _rows(flow, cols)
    shift = 24 if caption else 0
    half = len(cols) / 2 if len(cols) > 3 else len(cols)
    reach = LEFT + max(len(cols), 1) * COL_W
    leftward: set[int] = set()          # rows written leftward of their hop (right half, if it fits)
    for row_no, r in enumerate(rows):
        hop = flow.hops[r.hop] if r.hop is not None else None
        texts = [hop.label, *hop.nat] if hop is not None else ["✕ " + _drop_text(r)]
        extent = int(max(len(t) for t in texts) * TEXT_PX)
        if r.col >= half and _x(r.col) - 10 - extent >= LEFT:
            leftward.add(row_no)
        else:
            reach = max(reach, _x(r.col) + 10 + extent)
    width = reach + 20
    total = height + shift
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="{width}" height="{total}" '
           f'viewBox="0 0 {width} {total}" role="img" aria-label="{_attr(flow.title)}">',
           '<defs><marker id="ah-' + box_id + '" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/>'
           '</marker></defs>']
    if caption:
        out.append(f'<text x="8" y="16" class="caption">{escape(caption)}</text>'
                   f'<g transform="translate(0,{shift})">')
    for c, p in enumerate(cols):
        node, _, dev = p.partition("/")
        x = _x(c)
        out.append(f'<g class="lifeline"><text x="{x}" y="20" class="ln-node">{escape(node)}</text>'
                   f'<text x="{x}" y="36" class="ln-dev">{escape(dev)}</text>'
                   f'<line x1="{x}" y1="{TOP - 12}" x2="{x}" y2="{height - 4}"/></g>')
    prev: tuple[int, int, int] | None = None        # (packet, x, y) of the previous hop row
    for row_no, r in enumerate(rows):
        x = _x(r.col)
        anchor, tx = ("end", x - 10) if row_no in leftward else ("start", x + 10)
        if r.drop is not None:
            d = r.drop
            text = f"dropped at {d.node} {d.where}: {d.reason}"
            short = _drop_text(r)
            out.append(f'<g class="hop drop" tabindex="0" data-box="{box_id}" data-point="{_attr(d.node)}" '
                       f'data-head="{_attr(f"drop at +{(d.t_ns - base_ns) / 1e9:.6f}s")}" '
                       f'data-label="{_attr(text)}" data-comment="{_attr(d.reason)}">'
                       f'<rect class="row" x="0" y="{r.y - ROW // 2}" width="{width}" height="{ROW}"/>'
                       f'<path d="M{x - 6},{r.y - 6} L{x + 6},{r.y + 6} '
                       f'M{x - 6},{r.y + 6} L{x + 6},{r.y - 6}" '
                       f'class="x"/><text x="{tx}" y="{r.y + 4}" text-anchor="{anchor}" class="droptext">'
                       f'✕ {escape(short)}</text></g>')
            continue
        assert r.hop is not None
        h = flow.hops[r.hop]
        f = h.frame
        if prev is not None and prev[0] == h.packet and (prev[1], prev[2]) != (x, r.y):
            if prev[1] == x:
                out.append(f'<line x1="{x}" y1="{prev[2] + 5}" x2="{x}" y2="{r.y - 5}" class="same"/>')
            else:
                out.append(f'<line x1="{prev[1]}" y1="{prev[2]}" x2="{x + (-6 if x > prev[1] else 6)}" '
                           f'y2="{r.y}" class="arrow" marker-end="url(#ah-{box_id})"/>')
        prev = (h.packet, x, r.y)
        cls = "hop nat" if h.nat else f"hop {f.direction or 'seen'}"
        out.append(f'<g class="{cls}" tabindex="0" data-box="{box_id}" data-frame="{f.number}" '
                   f'data-point="{_attr(f.point)}" '
                   f'data-head="{_attr(hop_text(f, base_ns) + " at " + f.point)}" '
                   f'data-label="{_attr(h.label)}" data-comment="{_attr(f.comment)}">'
                   f'<rect class="row" x="0" y="{r.y - ROW // 2}" width="{width}" height="{ROW}"/>'
                   f'<title>{escape(f.point)} {escape(f.direction)}: {escape(h.label)}</title>'
                   f'<text x="{LEFT - 8}" y="{r.y + 4}" text-anchor="end" class="tm">'
                   f'{escape(hop_text(f, base_ns))}</text><circle cx="{x}" cy="{r.y}" r="5"/>'
                   f'<text x="{tx}" y="{r.y + 4}" text-anchor="{anchor}" class="addr">'
                   f'{escape(h.label)}</text>')
        for j, n in enumerate(h.nat):
            out.append(f'<text x="{tx}" y="{r.y + 4 + NAT_ROW * (j + 1)}" text-anchor="{anchor}" '
                       f'class="natbadge">{escape(n)}</text>')
        out.append('</g>')
    out.append("</g></svg>" if caption else "</svg>")
    return "\n".join(out)
