"""Every magic in a fresh IPython shell where ``import coiled`` ran first, as in our users' kernels.

Importing Coiled's client registers its config defaults, among them ``coiled.backend-options: null``
and ``coiled.account: null``; nothing of ours may expect a mapping or a string there. The shell runs
in a process of its own, so that Coiled's defaults are registered before coiled_jupyter is loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json
import coiled
import dask.config
from IPython.core.interactiveshell import InteractiveShell

assert dask.config.get("coiled.backend-options") is None  # Coiled's default, before us
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "coiled_jupyter")
steps = [
    ("line", "coiled_ingress", ""),
    ("line", "coiled_ingress", "add 8786 10.1.0.0/16"),
    ("line", "coiled_ingress", "add 8787 10.32.0.0/16 --description dashboard"),
    ("line", "coiled_ingress", "remove 8787 10.32.0.0/16"),
    ("line", "coiled_ingress", "set [{ports: [8786], cidr: 10.1.0.0/16}, "
                               "{ports: [8787], cidr: 10.32.0.0/16}]"),
    ("line", "coiled_ingress", "plan"),
    ("line", "coiled_ingress", "apply"),
    ("line", "coiled_ingress", "describe"),
    ("line", "coiled_scheduler_ip", ""),
    ("line", "coiled_scheduler_ip", "private"),
    ("line", "coiled_ingress", "save"),
    ("line", "coiled_ingress", "save --scope account"),
    ("cell", "coiled_ingress", "coiled:\n  backend-options:\n    ingress:\n"
                               "      - ports: [8786]\n        cidr: 10.1.0.0/16\n"),
    ("cell", "coiled_ingress", "- ports: [8786]\n  cidr: 10.2.0.0/16\n", "--apply"),
    ("line", "coiled_ingress", "clear"),
    ("line", "coiled_ingress", "reset"),
    ("line", "coiled_scheduler_ip", "public"),
    ("line", "coiled_ingress", "destroy"),
    ("line", "coiled_firewall", ""),
]
done = []
for kind, name, *text in steps:
    if kind == "line":
        result = ip.run_line_magic(name, text[0])
    else:
        result = ip.run_cell_magic(name, text[1] if len(text) > 1 else "", text[0])
    payload = result.to_payload() if hasattr(result, "to_payload") else None
    done.append([name, text[-1] if kind == "line" else "cell " + (text[1] if len(text) > 1 else ""),
                 payload["kind"] if payload else None,
                 dask.config.get("coiled.use_scheduler_public_ip", "absent")])
ip.run_line_magic("coiled_ingress", "reset")
done.append(["after reset", "", None, dask.config.get("coiled.use_scheduler_public_ip", "absent")])
assert dask.config.get("coiled.backend-options") is None  # we never write ingress there
print(json.dumps(done))
"""


def test_every_magic_works_after_import_coiled(sandbox, tmp_path):
    folder = tmp_path / "dask-config"
    folder.mkdir()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.upper().startswith("DASK_COILED__")},
        "DASK_CONFIG": str(folder),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    kinds = [(name, what, kind) for name, what, kind, _ in steps]
    assert kinds == [
        ("coiled_ingress", "", "settings"),
        ("coiled_ingress", "add 8786 10.1.0.0/16", "settings"),
        ("coiled_ingress", "add 8787 10.32.0.0/16 --description dashboard", "settings"),
        ("coiled_ingress", "remove 8787 10.32.0.0/16", "settings"),
        (
            "coiled_ingress",
            "set [{ports: [8786], cidr: 10.1.0.0/16}, {ports: [8787], cidr: 10.32.0.0/16}]",
            "settings",
        ),
        ("coiled_ingress", "plan", "plan"),
        ("coiled_ingress", "apply", "apply"),
        ("coiled_ingress", "describe", "rules"),
        ("coiled_scheduler_ip", "", "settings"),
        ("coiled_scheduler_ip", "private", "settings"),
        ("coiled_ingress", "save", "save"),
        ("coiled_ingress", "save --scope account", "save"),
        ("coiled_ingress", "cell ", "settings"),
        ("coiled_ingress", "cell --apply", "apply"),
        ("coiled_ingress", "clear", "settings"),
        ("coiled_ingress", "reset", "settings"),
        ("coiled_scheduler_ip", "public", "settings"),
        ("coiled_ingress", "destroy", "destroy"),
        ("coiled_firewall", "", None),
        ("after reset", "", None),
    ]
    toggles = [toggle for *_, toggle in steps]
    # Coiled reads the toggle from Dask config: set while the session sets it, absent before and after.
    assert toggles[:9] == ["absent"] * 9
    assert toggles[9:15] == [False] * 6
    assert toggles[15] == "absent"  # reset put back what was there: nothing
    assert toggles[16:19] == [True] * 3
    assert toggles[19] == "absent"
    assert (folder / "coiled.yaml").exists()
