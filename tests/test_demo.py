"""``make demo``: Coiled's two-CIDR example applied to a sandbox cluster, as the README shows it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _normalised(text: str) -> list[str]:
    """Lines with the run's own addresses and ids replaced as the README writes them, and runs of
    spaces made one (column widths follow the length of the ids)."""
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    text = re.sub(r"\b(vpc|sg)-[0-9a-f]+", r"\1-…", text)
    text = re.sub(r"-{2,}", "--", text)
    return [re.sub(r" +", " ", line).strip() for line in text.strip().splitlines()]


def test_demo_applies_coileds_two_cidr_example_as_the_readme_shows(cloud):
    # As a person runs it: without the tests' own pin of the kind of cluster (the demo says its own).
    env = {k: v for k, v in os.environ.items() if k != "DASK_COILED_JUPYTER__CLUSTER_KIND"}
    done = subprocess.run(
        [sys.executable, "-m", "coiled_jupyter", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr

    group = cloud.ec2.describe_security_groups(
        Filters=[{"Name": "tag:coiled-jupyter:cluster", "Values": ["demo"]}]
    )["SecurityGroups"][0]
    admitted = {
        (p["IpProtocol"], p["FromPort"], p["ToPort"], r["CidrIp"])
        for p in group["IpPermissions"]
        for r in p.get("IpRanges", [])
    }
    # Coiled's page: 8786 from 10.1.0.0/16 (client to scheduler), 8787 from 10.32.0.0/16 (dashboard)
    assert admitted == {("tcp", 8786, 8786, "10.1.0.0/16"), ("tcp", 8787, 8787, "10.32.0.0/16")}

    readme = (ROOT / "README.md").read_text()
    block = readme.split("the table the sandbox reports:\n\n```\n", 1)[1].split("```", 1)[0]
    assert _normalised(done.stdout) == _normalised(block)
