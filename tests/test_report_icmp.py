"""The report of pings: an ICMP echo session is one flow, titled by its addresses and id; the frame
the kernel freed is a red ✕ in that flow's ladder; the ICMP error about an echo and the fragments of
a big echo join the flow they are about, as a TCP connection's port-unreachable does; their long
labels stay inside the ladder."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import pktemu

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(shutil.which("dot") is None and os.geteuid() != 0,
                                reason="graphviz (dot) not installed and not root (CI installs it)")

TOPOLOGY = """\
extends: {root}/topologies/service-test.yaml
name: pings
scenarios:
  noroute:
    description: "the client pings 192.0.2.1, to which gw has no route"
    traffic:
      - {{at: 0ms, pod: client, app: {{kind: ping, target: 192.0.2.1, count: 3}}}}
  big:
    description: "the client pings the server with 3000 bytes: fragments"
    traffic:
      - {{at: 0ms, pod: client, app: {{kind: ping, target: 10.0.2.2, count: 2, size: 3000, df: false}}}}
"""


@pytest.fixture(scope="module")
def pings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import datapaths

    d = tmp_path_factory.mktemp("pings")
    (d / "pings.yaml").write_text(TOPOLOGY.format(root=datapaths.ROOT))
    pktemu("run", str(d / "pings.yaml"), "--out", str(d / "out"), "-q", "--report")
    return d / "out"


def _flows(html: str) -> dict[str, str]:
    """Each flow's title and its section (heading, summary and ladder) of the page."""
    parts = re.split(r'(?=<(?:section|details) class="flow">)', html)
    out = {}
    for part in parts[1:]:
        m = re.search(r'<h3 id="flow\d+">flow \d+: ([^<]*)</h3>', part)
        assert m, part[:200]
        out[m.group(1)] = part
    return out


def test_a_dropped_ping_is_one_flow_with_its_drops_and_the_icmp_error(pings: Path) -> None:
    flows = _flows((pings / "noroute" / "report.html").read_text())
    icmp = [t for t in flows if "ARP" not in t]
    assert icmp == ["ICMP 10.0.1.2 → 192.0.2.1 id=20549"], icmp
    section = flows[icmp[0]]
    assert "6 packets" in section, "3 echo requests and the 3 errors gw answers them with"
    assert section.count('class="hop drop"') == 3, "each echo request freed at gw is drawn in the ladder"
    assert "dropped at gw ip_route_input: no route to 192.0.2.1" in section
    assert "ICMP type 3 code 0 (about 10.0.1.2 → 192.0.2.1 icmp id=20549)" in section
    # the drop and the error it made share an instant: the ✕ comes first, then gw's answer
    rows = re.findall(r'class="(?:addr|droptext)">([^<]*)<', section)
    causes = [r for r in rows if r.startswith("✕ ") or "ICMP type 3" in r]
    assert causes[0] == "✕ dropped at gw ip_route_input: no route to 192.0.2.1"
    assert causes[1].startswith("10.100.0.1 → 10.0.1.2 ICMP type 3 code 0"), causes[:2]


def test_the_fragments_of_a_big_ping_are_in_its_flow(pings: Path) -> None:
    flows = _flows((pings / "big" / "report.html").read_text())
    icmp = [t for t in flows if "ARP" not in t]
    assert icmp == ["ICMP 10.0.1.2 → 10.0.2.2 id=20549"], icmp
    section = flows[icmp[0]]
    assert re.search(r"10\.0\.1\.2 → 10\.0\.2\.2 ICMP fragment offset \d+", section)
    assert re.search(r"10\.0\.2\.2 → 10\.0\.1\.2 ICMP fragment offset \d+", section)


def test_no_label_runs_into_the_time_column_or_off_the_picture(pings: Path) -> None:
    # the ICMP errors' labels are long: at a hop right of the middle, written leftward, they ran
    # over the frame numbers and times and past the picture's left edge
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (CI installs it: apt-get install chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        page = browser.new_page()
        page.goto((pings / "noroute" / "report.html").as_uri())
        bad = page.evaluate("""() => {
          const bad = [];
          for (const g of document.querySelectorAll('svg.ladder g.hop')) {
            const tm = g.querySelector('text.tm'), ad = g.querySelector('text.addr, text.droptext');
            const a = ad.getBBox(), width = g.ownerSVGElement.width.baseVal.value;
            if (tm && a.x < tm.getBBox().x + tm.getBBox().width) bad.push('over the time: ' + ad.textContent);
            if (a.x < 0 || a.x + a.width > width) bad.push('off the picture: ' + ad.textContent);
          }
          return bad;
        }""")
        labels = page.locator("svg.ladder text.addr").count()
        browser.close()
    assert labels > 20 and bad == [], bad
