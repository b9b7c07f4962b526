"""pytest plugin (entry point `pytest11`): the `pktemu_network` fixture.

`pktemu_network(topology, scenario=None, seed=None, **options)` returns a `pktemu.Network` that
captures to disk from its first frame; when the test ends its output directory is written under
the test's `tmp_path` (`pktemu/<scenario>/`, as `pktemu run` writes it; `capture=DIR` puts it in
DIR instead, `capture=None` captures nothing) unless the test wrote or closed it, and a failed
test's report gets a "pktemu captures" section with the path, to open in Wireshark.
pktemu itself is imported only when the fixture is used: every pytest run loads this module.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pktemu.api.network import Network

NETWORKS = pytest.StashKey[list["Network"]]()


@pytest.fixture
def pktemu_network(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., "Network"]]:
    """A factory of `pktemu.Network`s (arguments of `Network.load`) whose captures land in tmp_path."""
    from pktemu.api.network import Network

    nets: list[Network] = []
    request.node.stash[NETWORKS] = nets

    def make(source: str | os.PathLike[str] | dict[str, Any], scenario: str | None = None,
             seed: int | None = None, *, capture: bool | str | os.PathLike[str] | None = True,
             **options: Any) -> Network:
        # capture=True (the default): a folder of tmp_path's; a folder of your own; None or False: none
        if capture is True:
            capture = tmp_path / ("pktemu" if not nets else f"pktemu-{len(nets) + 1}")
        net = Network.load(source, scenario, seed, capture=capture, **options)
        nets.append(net)
        return net

    yield make
    for net in nets:
        if not net.written and net.output is not None:      # None: closed by the test (`with`)
            net.write()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    nets = item.stash.get(NETWORKS, None)
    if report.failed and nets:
        paths = [net.output for net in nets if net.output is not None]
        if paths:
            report.sections.append(("pktemu captures", "\n".join(
                f"{p}  (pcap/*.pcap, all.pcapng with the reasons, drops.txt)" for p in paths)))
