"""README's Python example runs as printed, and prints node1's conntrack entry of the DNATed flow."""
from __future__ import annotations

import re
import subprocess
import sys

import datapaths


def test_the_readme_python_example_runs() -> None:
    readme = (datapaths.ROOT / "README.md").read_text()
    section = readme.split("## From Python, with Scapy", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    p = subprocess.run([sys.executable, "-c", code.group(1)], cwd=datapaths.ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    flow = "src=10.0.1.2 dst=10.3.241.152 sport=40000 dport=80 src=10.0.2.2 dst=10.0.1.2 sport=8080"
    assert flow in p.stdout
