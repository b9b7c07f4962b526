"""`pktemu run --report` and `pktemu report`: report.html on disk, and what a person sees of it in
a real browser (headless Chromium driven by Playwright): the topology's nodes, the ClusterIP ->
pod translation at the hop where netfilter made it, a hop's explanation after a click, drops."""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import pktemu

SCENARIOS = ["s1-clusterip", "s2-noendpoints", "s3-hairpin", "s3b-hairpin-off"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
needs_dot = pytest.mark.skipif(shutil.which("dot") is None and os.geteuid() != 0,
                               reason="graphviz (dot) not installed and not root (CI installs it)")


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "out"
    pktemu("run", "topologies/service-test.yaml", "--out", str(out), "-q", "--report")
    return out


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("story") / "out"
    pktemu("run", "topologies/seed-story.yaml", "--out", str(out), "-q", "--report")
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM) and os.geteuid() != 0:
        pytest.skip("chromium is not installed and not root (CI installs it: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.geteuid() != 0:
            pytest.skip("playwright is not installed (pip install -e '.[test]')")
        raise
    with sync_playwright() as p:       # launch() gives Chromium a fresh temporary profile of its own
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser: Any, page_path: Path) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.route(re.compile(r"^(?!file:).*"), lambda route: route.abort())   # nothing may be fetched
    page.goto(page_path.as_uri())
    return page


def _flow(page: Any, title: str) -> Any:
    return page.locator("section.flow", has=page.locator("h3", has_text=title))


@needs_dot
def test_run_report_writes_one_self_contained_page_per_scenario(reported: Path) -> None:
    for sc in SCENARIOS:
        html = (reported / sc / "report.html").read_text()
        assert html.startswith("<!DOCTYPE html>")
        assert not re.search(r'(?:src|href)\s*=\s*"(?!#)', html), "the page refers to another file"
        assert "<link" not in html and "@import" not in html
        assert "<svg" in html and "conntrack" in html.lower()
    assert not [f for f in os.listdir(reported / "s1-clusterip") if f.startswith(".")], "temporary left"


@needs_dot
def test_report_command_rewrites_the_same_bytes(reported: Path, tmp_path: Path) -> None:
    first = (reported / "s1-clusterip" / "report.html").read_bytes()
    copy = tmp_path / "s1-clusterip"
    shutil.copytree(reported / "s1-clusterip", copy)
    (copy / "report.html").unlink()
    p = pktemu("report", str(copy), "-t", "topologies/service-test.yaml")
    assert p.stdout.strip() == f"wrote {copy}/report.html"
    assert (copy / "report.html").read_bytes() == first
    again = tmp_path / "again"
    pktemu("run", "topologies/service-test.yaml", "--scenario", "s1-clusterip", "--out", str(again), "-q",
           "--report")
    assert (again / "s1-clusterip" / "report.html").read_bytes() == first


@needs_dot
@pytest.mark.parametrize("other, name", [("pod-to-pod.yaml", "pod-to-pod"),
                                         ("service-test-k8s.yaml", "service-test-k8s")])
def test_report_refuses_another_topology_than_the_runs(reported: Path, tmp_path: Path, other: str,
                                                       name: str) -> None:
    """all.pcapng says which topology the run was of; a report drawn from another one would show
    nodes, routes and rules the run never had: one line, exit 2, nothing written."""
    copy = tmp_path / "out"
    shutil.copytree(reported, copy)
    for d in SCENARIOS:
        (copy / d / "report.html").unlink()
    p = pktemu("report", str(copy), "-t", f"topologies/{other}", check=False)
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr == (f"pktemu: error: report: {copy}/s1-clusterip is a run of topology service-test "
                        f"(service-test.yaml), not of {name} ({other}) given with -t\n")
    assert not list(copy.rglob("report.html")) and not list(copy.rglob(".*"))


@needs_dot
def test_report_of_a_whole_run_folder_without_the_topology(reported: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(reported, out)
    for sc in SCENARIOS:
        (out / sc / "report.html").unlink()
    p = pktemu("report", str(out))
    assert p.stdout.count("wrote ") == 4 and "4 reports written" in p.stdout
    html = (out / "s1-clusterip" / "report.html").read_text()
    assert "interface blocks of all.pcapng" in html
    for name in ("node1", "gw", "node2", "client", "server", "dns"):
        assert re.search(rf">{name} \((?:host|pod)\)<", html), name


@pytest.mark.parametrize("make, what", [
    (lambda d: d / "missing", "not a directory"),
    (lambda d: d, "not a pktemu run folder"),
    (lambda d: (d / "f.txt").write_text("x") and d / "f.txt", "not a directory"),
])
def test_report_refuses_what_is_not_a_run(tmp_path: Path, make: Any, what: str) -> None:
    target = make(tmp_path)
    p = pktemu("report", str(target), check=False)
    assert p.returncode == 2
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("pktemu: error: ") and what in p.stderr
    assert "Traceback" not in p.stderr
    assert not list(tmp_path.rglob("report.html"))


@needs_dot
def test_report_of_a_pcapng_from_another_tool(reported: Path, tmp_path: Path) -> None:
    # its interfaces are not named node/ifname: dot was given an empty bold device name and failed
    # with "graphviz: dot failed: Error: syntax error in line 1"
    import datapaths

    run = tmp_path / "s1"
    shutil.copytree(reported / "s1-clusterip", run)
    shutil.copyfile(datapaths.CAPTURES / "pcapng_two_interfaces_dns.pcapng", run / "all.pcapng")
    (run / "report.html").unlink()
    p = pktemu("report", str(run), check=False)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    html = (run / "report.html").read_text()
    assert ">eth0 (host)<" in html and "NPF_{5AE6EDB4&#45;EFF9&#45;46B3" in html
    assert "UDP 10.0.0.4:56351 → 1.1.1.1:53" in html


@needs_dot
def test_report_times_follow_each_interfaces_tsresol(reported: Path, tmp_path: Path) -> None:
    # a pcapng from another tool: interface 0 in ns (if_tsresol 9), interface 1 in µs (no option).
    # Every stamp was read as ns: frames 3-6 landed in 1970 and frames 1-2 at +1765895426 s.
    # tshark -r ... -T fields -e frame.time_epoch: 1767663089.500330493, 1767663089.514291940,
    # 1767663437.111897000, 1767663437.126460000, ...; the report counts from 1767663089 s.
    import datapaths

    run = tmp_path / "s1"
    shutil.copytree(reported / "s1-clusterip", run)
    shutil.copyfile(datapaths.CAPTURES / "pcapng_two_interfaces_dns.pcapng", run / "all.pcapng")
    pktemu("report", str(run))
    html = (run / "report.html").read_text()
    for hop in ("#1  +0.500330s", "#2  +0.514292s", "#3  +348.111897s", "#4  +348.126460s",
                "#6  +348.140942s"):
        assert hop in html, hop


@needs_dot
def test_report_shows_the_nftables_rules_of_an_nftables_run(tmp_path: Path) -> None:
    # the section showed iptables-save files only: empty for nodes whose rules are nftables
    pktemu("run", "topologies/service-test-nftables.yaml", "--scenario", "s1-clusterip",
           "--out", str(tmp_path), "-q", "--report")
    html = (tmp_path / "s1-clusterip" / "report.html").read_text()
    rules = html[html.index('<h2 id="counters">'):]
    for node in ("node1", "node2"):
        assert f"<h3>{node} (nft list ruleset)</h3><pre>" in rules
    assert "table ip kube-proxy {" in rules and "No node has netfilter rules" not in rules


@needs_dot
def test_report_of_a_damaged_run_writes_nothing(reported: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for sc in ("s1-clusterip", "s2-noendpoints"):
        shutil.copytree(reported / sc, out / sc, ignore=shutil.ignore_patterns("report.html"))
    data = (out / "s2-noendpoints" / "all.pcapng").read_bytes()
    (out / "s2-noendpoints" / "all.pcapng").write_bytes(data[:len(data) // 2 + 3])
    p = pktemu("report", str(out), check=False)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.splitlines()) == 1 and "all.pcapng" in p.stderr and "Traceback" not in p.stderr
    assert not list(out.rglob("report.html")), "a page was written although another folder was bad"
    assert not [f for f in out.rglob(".*")], "temporary left"


@needs_dot
def test_browser_shows_the_topology_nodes(reported: Path, browser: Any) -> None:
    page = _open(browser, reported / "s1-clusterip" / "report.html")
    topo = page.locator("div.topology svg")
    for name in ("node1 (host)", "gw (host)", "node2 (host)", "client (pod)", "server (pod)", "dns (pod)",
                 "cbr0", "veth-client", "10.0.1.2/24", "default via 10.100.0.1"):
        el = topo.locator("text", has_text=name).first
        el.scroll_into_view_if_needed()
        assert el.is_visible(), name
    assert topo.locator("text", has_text="iptables rules: kube-proxy-rules.iptables").count() == 2
    page.close()


@needs_dot
def test_browser_shows_the_clusterip_translated_at_node1_cbr0(reported: Path, browser: Any) -> None:
    page = _open(browser, reported / "s1-clusterip" / "report.html")
    flow = _flow(page, "TCP 10.0.1.2:40000 → 10.3.241.152:80")
    assert flow.count() == 1
    hops = flow.locator("g.hop")
    points = hops.evaluate_all("gs => gs.map(g => g.getAttribute('data-point'))")
    labels = flow.locator("g.hop text.addr").evaluate_all("ts => ts.map(t => t.textContent.trim())")
    # the SYN: the ClusterIP until node1/cbr0, where the DNAT badge sits, the pod from there on
    assert points[:4] == ["client/eth0", "node1/veth-client", "node1/cbr0", "node1/eth0"]
    assert labels[0].startswith("10.0.1.2:40000 → 10.3.241.152:80 SYN")
    assert labels[1].startswith("10.0.1.2:40000 → 10.3.241.152:80 SYN")
    assert labels[2].startswith("10.0.1.2:40000 → 10.0.2.2:8080 SYN")
    assert labels[3].startswith("10.0.1.2:40000 → 10.0.2.2:8080 SYN")
    nat = hops.nth(2)
    assert "nat" in (nat.get_attribute("class") or "")
    badge = nat.locator("text.natbadge")
    badge.scroll_into_view_if_needed()
    assert badge.is_visible() and badge.text_content() == "DNAT 10.3.241.152:80 -> 10.0.2.2:8080"
    # the SYN-ACK: the pod until node1/cbr0 undoes it, the ClusterIP again at the client
    undo = flow.locator("g.hop", has=page.locator("text.natbadge", has_text="un-DNAT 10.0.2.2:8080 -> "
                                                                          "10.3.241.152:80")).first
    assert undo.get_attribute("data-point") == "node1/cbr0"
    undone = undo.locator("text.addr").text_content() or ""
    assert undone.startswith("10.3.241.152:80 → 10.0.1.2:40000 SYN,ACK")
    synack = [lb for lb in labels if "SYN,ACK" in lb]
    assert synack[0].startswith("10.0.2.2:8080 → 10.0.1.2:40000") and \
        synack[-1].startswith("10.3.241.152:80 → 10.0.1.2:40000")
    page.close()


@needs_dot
def test_browser_click_on_a_hop_shows_its_explanation(reported: Path, browser: Any) -> None:
    page = _open(browser, reported / "s1-clusterip" / "report.html")
    flow = _flow(page, "TCP 10.0.1.2:40000 → 10.3.241.152:80")
    box = flow.locator("div.explain")
    assert "KUBE-SEP" not in box.inner_text()
    flow.locator("g.hop.nat circle").first.click()
    text = box.inner_text()
    assert box.is_visible()
    assert "at node1/cbr0" in text
    assert "DNAT 10.3.241.152:80 -> 10.0.2.2:8080 by nat:PREROUTING KUBE-SEP-" in text
    assert "-j DNAT --to-destination 10.0.2.2:8080 (verdict accept)" in text
    assert "ct state new" in text
    flow.locator("g.hop").nth(3).locator("circle").click()          # node1/eth0: the route out
    assert "route" in box.inner_text() or "fwd" in box.inner_text()
    assert "at node1/eth0" in box.inner_text()
    page.close()


@needs_dot
def test_browser_shows_the_reject_where_it_happens(reported: Path, browser: Any) -> None:
    page = _open(browser, reported / "s2-noendpoints" / "report.html")
    flow = _flow(page, "TCP 10.0.1.2:40000 → 10.3.250.77:80")
    drop = flow.locator("g.hop.drop")
    assert drop.count() == 1
    drop.scroll_into_view_if_needed()
    assert drop.is_visible() and "dropped at node1 netfilter FORWARD" in (drop.text_content() or "")
    drop.locator("path").click()
    assert "REJECT --reject-with icmp-port-unreachable" in flow.locator("div.explain").inner_text()
    counters = page.locator("#counters ~ pre span.hit", has_text="REJECT")
    assert counters.count() >= 1 and (counters.first.text_content() or "").startswith("[1:")
    page.close()


@needs_dot
def test_browser_seed_story(story: Path, browser: Any) -> None:
    page = _open(browser, story / "story" / "report.html")
    topo = page.locator("div.topology svg")
    for name in ("default/service-test", "ClusterIP 10.3.241.152", "server-b (pod)",
                 "kube-proxy (iptables) rules"):
        el = topo.locator("text", has_text=name).first
        el.scroll_into_view_if_needed()
        assert el.is_visible(), name
    badge = page.locator("text.natbadge", has_text=re.compile(r"^DNAT 10\.3\.241\.152:80 -> 10\.0\."))
    nat = page.locator("g.hop.nat", has=badge)
    assert nat.count() >= 2
    nat.first.locator("circle").click()
    box = page.locator(f"#{nat.first.get_attribute('data-box')}")
    assert "DNAT 10.3.241.152:80 -> 10.0." in box.inner_text()
    page.close()


@needs_dot
def test_one_flow_ladder_as_svg(reported: Path, tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    out = tmp_path / "path.svg"
    pktemu("report", str(reported / "s1-clusterip"), "--flow", "2", "--packets", "3", "-o", str(out))
    texts = [t.text or "" for t in ET.parse(out).getroot().iter("{http://www.w3.org/2000/svg}text")]
    assert "s1-clusterip: TCP 10.0.1.2:40000 → 10.3.241.152:80" in texts
    assert "DNAT 10.3.241.152:80 -> 10.0.2.2:8080" in texts
    assert "un-DNAT 10.0.2.2:8080 -> 10.3.241.152:80" in texts
    assert not [t for t in texts if " FIN" in t], "--packets 3 keeps the handshake only"
    for args, what in ((["--flow", "99", "-o", str(out)], "has flows 1 to"),
                       (["--flow", "2"], "go together"),
                       (["--flow", "2", "-o", str(tmp_path / "p.png")], "must end in .svg"),
                       # -t draws report.html's topology: a ladder has none, and -t was silently ignored
                       (["--flow", "2", "-o", str(tmp_path / "t.svg"), "-t", "topologies/service-test.yaml"],
                        "report: -t TOPOLOGY draws the topology of report.html; a flow's ladder (--flow) "
                        "does not use it: leave -t out")):
        p = pktemu("report", str(reported / "s1-clusterip"), *args, check=False)
        assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and what in p.stderr, p.stderr
    assert sorted(os.listdir(tmp_path)) == ["path.svg"]
