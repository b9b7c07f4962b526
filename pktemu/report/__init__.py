"""The HTML report of a run (`pktemu run --report`, `pktemu report`) and the topology diagram
(`pktemu draw`): an output layer above `pktemu.io`, imported by the commands only.

Modules: `runread` reads a scenario's output folder, `flows` groups its frames into connections
and packets, `layout` draws the topology with Graphviz (`summary` a big one, one box a node),
`ladder` draws a flow's ladder, `page` puts them in one self-contained HTML file.
"""
from __future__ import annotations

import os
import re

from pktemu.errors import PktemuError
from pktemu.io.atomic import write_text_atomic
from pktemu.report.flows import build_flows
from pktemu.report.layout import dot_path, from_pcapng, render, svg_inline, to_dot
from pktemu.report.page import render_page
from pktemu.report.runread import read_run, scenario_dirs
from pktemu.report.summary import diagram
from pktemu.topo import Topology

REPORT_NAME = "report.html"

__all__ = ["REPORT_NAME", "build_report", "check_topology", "dot_path", "scenario_dirs", "topology_svg",
           "write_report"]


#: What all.pcapng's section comment says of the topology (pktemu.io.run.section_comment).
_RECORDED = re.compile(r"pktemu [^:\n]*: topology (?P<name>\S+) \((?P<file>[^)\n]*)\), scenario ")


def check_topology(scenario_dir: str, section: str, t: Topology) -> None:
    """The run in `scenario_dir` was of topology `t`, as far as its all.pcapng says (by name): a
    report drawn from another topology's file would show nodes, routes and rules the run never had."""
    m = _RECORDED.match(section)
    if m is not None and m["name"] != t.name:
        raise PktemuError(f"report: {scenario_dir} is a run of topology {m['name']} ({m['file']}), not of "
                          f"{t.name} ({os.path.basename(t.path)}) given with -t")


def topology_svg(t: Topology, scenario: str | None = None) -> bytes:
    """The report's picture: a big topology summarised as `pktemu draw` does it."""
    return render(to_dot(diagram(t, scenario, how=f"pktemu draw {t.path} -o FILE.svg")), "svg")


def build_report(scenario_dir: str, t: Topology | None = None) -> str:
    """The report page of one scenario's output folder; the topology, if given, draws the diagram
    (routes, rules files, Services), else the merged pcapng's interface blocks do."""
    run = read_run(scenario_dir)
    if t is not None:
        check_topology(scenario_dir, run.section, t)
        svg = topology_svg(t, run.scenario)
        note = f"{t.name} ({os.path.basename(t.path)}), drawn by Graphviz from the topology file."
    else:
        svg = render(to_dot(from_pcapng(run.scenario, run.ifaces)), "svg")
        note = ("Drawn from the interface blocks of all.pcapng (give the topology with -t for routes, "
                "rules and Services).")
    return render_page(run, build_flows(run), svg_inline(svg), note)


def write_report(scenario_dir: str, t: Topology | None = None) -> str:
    path = os.path.join(scenario_dir, REPORT_NAME)
    write_text_atomic(path, build_report(scenario_dir, t))
    return path
