"""README's pytest example passes as printed, run by pytest with the installed plugin."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import datapaths


def test_the_readme_pytest_example_passes_and_writes_its_captures(tmp_path: Path) -> None:
    readme = (datapaths.ROOT / "README.md").read_text()
    section = readme.split("## Testing with pytest", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None and len(code.group(1).splitlines()) <= 10
    (tmp_path / "test_example.py").write_text(code.group(1))
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"--basetemp={tmp_path / 'base'}", str(tmp_path / "test_example.py")],
                       cwd=datapaths.ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 passed" in p.stdout
    [out] = (tmp_path / "base").glob("test_the_client_pod_reaches*0/pktemu/s1-clusterip")
    assert (out / "pcap" / "server-eth0.pcap").stat().st_size > 24 and (out / "all.pcapng").exists()
