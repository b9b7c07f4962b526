"""Shared fixtures: runs of the shipped topologies through the real CLI, summarised by the oracle tool."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datapaths  # noqa: E402

SUMMARY_TOOL = datapaths.ORACLE / "oracle_summary.py"


def pktemu(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the `pktemu` command as a user would (a subprocess of this Python)."""
    p = subprocess.run([sys.executable, "-m", "pktemu.cli", *args], capture_output=True, text=True,
                       timeout=timeout, cwd=datapaths.ROOT)
    if check and p.returncode != 0:
        raise AssertionError(f"pktemu {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and the children it has waited for. Bounds meant to
    catch a hang or a quadratic blow-up hold on this, not on the wall clock, which a loaded 2-core
    machine stretches: a rules load of 2.0 CPU seconds took 15.6 s under the suite and busy loops."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def summarize(out: Path) -> dict[str, Any]:
    """oracle_summary.py summarize OUT: the kernel oracle's own reading of our pcaps and state files."""
    subprocess.run([sys.executable, str(SUMMARY_TOOL), "summarize", str(out)], check=True,
                   capture_output=True, timeout=300)
    return json.loads((out / "summary.json").read_text())


def compare(a: Path, b: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SUMMARY_TOOL), "compare", str(a), str(b), *extra],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def service_test_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All four scenarios of topologies/service-test.yaml, run once for the session and summarised."""
    out = tmp_path_factory.mktemp("service-test")
    pktemu("run", "topologies/service-test.yaml", "--out", str(out), "-q")
    summarize(out)
    return out


@pytest.fixture(scope="session")
def pod_to_pod_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pod-to-pod")
    pktemu("run", "topologies/pod-to-pod.yaml", "--scenario", "direct", "--out", str(out), "-q")
    summarize(out)
    return out


def brnf0_topology(tmp_path: Path) -> Path:
    """service-test.yaml with net.bridge.bridge-nf-call-iptables=0 on both nodes in every scenario
    (the oracle's ORACLE_BRNF=0 variant), written as `pktemu kernel --brnf 0` writes it."""
    from pktemu.commands.kernel import brnf0_topology as derive

    return Path(derive(str(datapaths.ROOT / "topologies" / "service-test.yaml"), str(tmp_path)))


def load_error(path: Path) -> str:
    """The one-line PktemuError that loading the topology at `path` raises."""
    from pktemu.errors import PktemuError
    from pktemu.io.topofile import load_topology
    with pytest.raises(PktemuError) as e:
        load_topology(str(path))
    assert "\n" not in str(e.value)
    return str(e.value)


#: Test files that build network namespaces or change the host kernel's settings: with `-n 2
#: --dist loadgroup` (pytest-xdist) they all run one after another on one worker, so two of
#: them never build `pktemu kernel`'s fixed-name namespaces (orc-*) at the same time.
KERNEL_FILES = frozenset({
    "test_collect.py", "test_import.py", "test_import_cni.py", "test_import_live.py", "test_k8s_nftables.py",
    "test_k8s_oracle.py", "test_kernel_calico.py", "test_kernel_conntrack_zones.py", "test_kernel_ipset.py",
    "test_kernel_link_updown.py", "test_kernel_live.py", "test_kernel_policy_routing.py",
    "test_kernel_route_localnet.py", "test_kernel_vxlan.py", "test_kernel_vxlan_service.py",
    "test_kernel_xt_constructs.py", "test_kernel_sctp.py", "test_kernel_midflow.py", "test_kernel_sysctls.py",
    "test_kernel_nft_nat_hooks.py", "test_kernel_defrag.py", "test_kernel_pmtu.py",
    "test_kernel_tcp_recovery.py",
    "test_masquerade_source.py", "test_nftables_fidelity.py", "test_nftables_json.py",
    "test_nftables_kernel.py", "test_nftables_parse.py", "test_policy_routing.py", "test_xtables_rate.py",
    "test_xtables_real_nodes.py", "test_cli_conventions.py", "test_input_mistakes.py",
})


@pytest.hookimpl(tryfirst=True)       # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in KERNEL_FILES:
            item.add_marker(pytest.mark.xdist_group("kernel"))
