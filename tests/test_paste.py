"""What a person pastes works: the README's quick start as one cell, and magics with a trailing
``# comment`` (issue 22, item 8).

The quick start is taken from README.md exactly as written and run as one cell of a real kernel
(nbclient) against the sandbox, with a Dask config folder of the test's own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Quick start in a notebook") :]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "README.md has no python block under 'Quick start in a notebook'"
    return found.group(1)


def test_the_readme_quick_start_runs_pasted_as_one_cell(sandbox, cloud, monkeypatch, tmp_path):
    code = quick_start()
    assert "  # " in code  # it is written with trailing comments, as people write cells
    folder = tmp_path / "dask-config"
    monkeypatch.setenv("DASK_CONFIG", str(folder))
    # As a person runs it: the kind of cluster is the default (coiled), not the tests' own pin.
    monkeypatch.delenv("DASK_COILED_JUPYTER__CLUSTER_KIND", raising=False)
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *([path] if path else [])]))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = notebook.cells[0].outputs
    assert not [o for o in outputs if o.output_type == "error"], outputs
    assert not [o for o in outputs if o.get("name") == "stderr" and "UsageError" in o.text]
    # It did what its lines say: the group holds the rule, the file keeps the settings.
    [group] = [
        g
        for g in cloud.ec2.describe_security_groups()["SecurityGroups"]
        if any(t["Key"] == "coiled-jupyter:cluster" and t["Value"] == "notebook" for t in g["Tags"])
    ]
    assert [
        (p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]])
        for p in group["IpPermissions"]
        if p["IpProtocol"] == "tcp"
    ] == [(443, 443, ["10.1.0.0/16"])]
    saved = (folder / "coiled.yaml").read_text()
    assert "10.1.0.0/16" in saved and "use_scheduler_public_ip: false" in saved


def line(ip, text):
    return ip.run_line_magic("coiled_ingress", text)


@pytest.mark.parametrize(
    ("text", "description"),
    [
        ('add 8786 10.1.0.0/16 --description "office #1"  # the VPN', "office #1"),
        ("add 8786 10.1.0.0/16 --description 'office #1'\t# the VPN", "office #1"),
        ("add 8786 10.1.0.0/16 --description office#1 # the VPN", "office#1"),
        ("add 8786 10.1.0.0/16  # costs $5, has 'quotes\" and ${braces}", ""),
        ("set [{ports: [8786], cidr: 10.1.0.0/16, description: 'a # b'}]  # one rule", "a # b"),
        ('set [{ports: [8786], cidr: 10.1.0.0/16, description: "a # b"}] # one rule', "a # b"),
    ],
)
def test_a_trailing_comment_is_not_an_argument(ip, dask_config, text, description):
    view = line(ip, text)
    assert [(r.ports, r.source, r.description) for r in view.settings.rules] == [
        ("8786", "10.1.0.0/16", description)
    ]


def test_comments_on_every_magic(ip, dask_config):
    assert line(ip, "# nothing but a comment").settings.rules
    assert line(ip, "-v  # everything").verbose
    view = ip.run_line_magic("coiled_scheduler_ip", "private  # VPN")
    assert view.settings.use_scheduler_public_ip.value is False
    view = ip.run_cell_magic(
        "coiled_ingress",
        "--cluster pasted  # the first line",
        "- {ports: [8786], cidr: 10.1.0.0/16}",
    )
    assert view.target.cluster == "pasted"
    assert ip.run_line_magic("coiled_firewall", "-h  # help") is None
