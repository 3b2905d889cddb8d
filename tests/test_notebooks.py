"""The example notebooks, executed in fresh kernels against the sandbox, twice each.

Each notebook runs in a real ipykernel (the venv's ``python3`` kernel) started by nbclient, with this
process's environment (conftest's sandbox state folder and no public-IP services) and a Dask config
folder of its own. The second run of a notebook must plan no change. The parameterised notebook also
runs under papermill with injected parameters.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from coiled_jupyter.rehearsal.namespaces import unavailable

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RAISES = "raises-exception"

REHEARSAL_UNAVAILABLE = unavailable()
# The two-CIDR example's rows: 8786 only from inside 10.1.0.0/16, 8787 only from inside 10.32.0.0/16.
REHEARSED = [
    "all as predicted",
    *(
        f"<td>{address}</td><td>{port}</td><td>{verdict}</td><td>{verdict}</td>"
        for address, port, verdict in [
            ("10.1.0.5", "8786 (scheduler)", "yes"),
            ("10.1.0.5", "8787 (dashboard)", "no"),
            ("10.32.0.5", "8786 (scheduler)", "no"),
            ("10.32.0.5", "8787 (dashboard)", "yes"),
            ("198.51.100.7", "8786 (scheduler)", "no"),
            ("198.51.100.7", "8787 (dashboard)", "no"),
        ]
    ),
]

# Per notebook: its cluster, the sentence of its deliberate mistake, and what its cells must show.
EXPECTED = {
    "quickstart.ipynb": {
        "cluster": "quickstart",
        "mistake": "UsageError: rule has cidr '10.1.0.2/16' with host bits set, which would admit all "
        "of 10.1.0.0/16; did you mean '10.1.0.0/16'?",
        "apply": ["<td>8786-8787</td>", "<td>10.1.0.0/16</td>", "<td>office VPN</td>"],
        "first": {"show": ["rules from: built-in default"]},
        "second": {"show": ["rules from: dask config ("]},
        "both": {
            "dask-config": ["False"],
            "private": ["use_scheduler_public_ip: false"],
            "save": ["coiled.yaml: ingress (2 rules) and use_scheduler_public_ip: false"],
        },
    },
    "vpn-and-vpc.ipynb": {
        "cluster": "vpn-and-vpc",
        "mistake": "UsageError: ingress rule has cidr '10.2.0.1/16' with host bits set",
        "apply": [
            "<td>8786-8787</td>",
            "<td>10.1.0.0/16</td>",
            "<td>VPN</td>",
            "<td>8786</td>",
            "<td>10.2.0.0/16</td>",
            "<td>peered VPC</td>",
        ],
        "both": {
            "declare": ["use_scheduler_public_ip: false", "rules from: notebook session"],
            "describe": ["('8786-8787', '10.1.0.0/16')", "('8786', '10.2.0.0/16')"],
        },
    },
    "team-defaults.ipynb": {
        "cluster": "team-defaults",
        "mistake": "UsageError: rule has port 87860, outside 1-65535; use a port from 1 to 65535.",
        "apply": [
            "<td>8786-8787</td>",
            "<td>10.1.0.0/16</td>",
            "<td>company VPN</td>",
            "<td>10.3.0.0/16</td>",
            "<td>data team VPN</td>",
        ],
        "both": {
            "show": [
                "rules from: account default (SSM /coiled-jupyter/backend-options)",
                "use_scheduler_public_ip: false",
            ],
            "override": ["rules from: notebook session", "10.3.0.0/16"],
            "reset": ["rules from: account default"],
        },
    },
    "rehearsal.ipynb": {
        "cluster": "rehearsal",
        "mistake": "UsageError: %coiled_ingress rehearse does not take --scope; it is for save.",
        "apply": [
            "<td>8786</td>",
            "<td>10.1.0.0/16</td>",
            "<td>8787</td>",
            "<td>10.32.0.0/16</td>",
        ],
        "both": {
            # Rehearsed with packets where this machine can (Linux, root, nft); elsewhere the one
            # sentence saying why.
            "rehearse": REHEARSED if REHEARSAL_UNAVAILABLE is None else [REHEARSAL_UNAVAILABLE],
            "stop": ["rehearsal stopped"] if REHEARSAL_UNAVAILABLE is None else [],
        },
    },
    "coiled-keywords.ipynb": {
        "cluster": "coiled-keywords",
        "kind": "coiled",
        "port": 443,
        "mistake": "UsageError: the rules of %coiled_ingress set has unknown key 'allow_ingres_from'; "
        "did you mean 'allow_ingress_from'?",
        "apply": [
            "<td>22</td>",
            "<td>10.1.0.0/16</td>",
            "<td>443</td>",
            "<td>15003</td>",
            "<td>203.0.113.7/32</td>",
        ],
        "both": {
            "keywords": [
                "ports assumed: kind coiled (dask config): scheduler 443 (TLS), dashboard 443 (HTTPS)",
                "can this notebook reach the scheduler (port 443)? yes",
            ],
            "trap": [
                "this Coiled cluster listens on 443 (scheduler and HTTPS dashboard); these rules "
                "open 8786-8787 only, so no client will connect"
            ],
            "ports": ["client to scheduler (TLS) and the HTTPS dashboard"],
            "kwargs": ["'allow_ingress_from': 'me',", "'allow_ssh_from': '10.1.0.0/16',"],
            "verdict": ["can this notebook reach the scheduler (port 443)? yes"],
        },
    },
    "parameterised.ipynb": {
        "cluster": "papermill-demo",
        "mistake": "UsageError: variable 'office_cidr' in the magic's line is not defined in this "
        "notebook",
        "apply": ["<td>8786-8787</td>", "<td>10.1.0.0/16</td>", "<td>set by papermill</td>"],
    },
}

# What would betray a secret in an output: AWS key ids, secret keys, session tokens, Coiled tokens.
SECRETS = re.compile(
    r"(AKIA|ASIA)[0-9A-Z]{16}|aws_secret_access_key|secret_access_key"
    r"|aws_session_token|[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])",
    re.IGNORECASE,
)


@pytest.fixture
def kernel_env(sandbox, monkeypatch, tmp_path):
    """A clean sandbox and a Dask config folder of the test's own, inherited by the kernels (it
    stands for the reader's own config), and a temporary directory of the test's own."""
    monkeypatch.setenv("DASK_CONFIG", str(tmp_path / "dask-config"))
    # Each notebook states the kind of cluster it assumes; the tests' own pin is not inherited.
    monkeypatch.delenv("DASK_COILED_JUPYTER__CLUSTER_KIND")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *([path] if path else [])]))
    return tmp_path


# Our users' kernels often ran `import coiled` first, which registers Coiled's config defaults
# (coiled.backend-options: null among them, unless a saved coiled.yaml sets it); every notebook also
# runs in such a kernel.
IMPORT_COILED = (
    "import coiled\nimport dask.config\nassert 'backend-options' in dask.config.get('coiled')"
)
KERNELS = {"plain": None, "after-import-coiled": IMPORT_COILED}


def execute(path: Path, cwd: Path, first: str | None = None) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    if first is not None:
        notebook.cells.insert(0, nbformat.v4.new_code_cell(first))
    NotebookClient(
        notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return notebook


def cell(notebook, cell_id: str):
    found = [c for c in notebook.cells if c.get("id") == cell_id]
    assert found, f"no cell {cell_id!r}"
    return found[0]


def shown(code_cell) -> str:
    """Everything a cell showed: text, HTML and streams."""
    parts = []
    for output in code_cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        for mimetype in ("text/plain", "text/html"):
            if mimetype in output.get("data", {}):
                parts.append(output.data[mimetype])
    return "\n".join(parts)


def html(code_cell) -> str:
    return "\n".join(
        o.data["text/html"]
        for o in code_cell.get("outputs", [])
        if "text/html" in o.get("data", {})
    )


def check_run(name: str, notebook, run: str) -> None:
    expected = EXPECTED[name]
    for code_cell in notebook.cells:
        if code_cell.cell_type != "code":
            continue
        tags = code_cell.metadata.get("tags", [])
        outputs = code_cell.get("outputs", [])
        assert not [o for o in outputs if o.output_type == "error"], (name, code_cell.source)
        if RAISES in tags:
            # One line on stderr, the sentence, and no traceback.
            assert [o.output_type for o in outputs] == ["stream"], (name, outputs)
            assert outputs[0].name == "stderr"
            error = outputs[0].text
            assert error.startswith(expected["mistake"]), (name, error)
            assert "Traceback" not in error and 'File "' not in error
        else:
            streams = [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
            assert not [s for s in streams if "UsageError" in s.text], (name, code_cell.source)
    plan = shown(cell(notebook, "plan"))
    if run == "first":
        assert "create group" in plan, (name, plan)
    else:
        assert "\nno change\n" in plan, (name, plan)
    assert f"cluster '{expected['cluster']}'" in plan
    applied = html(cell(notebook, "apply"))
    for fragment in expected["apply"]:
        assert fragment in applied, (name, fragment)
    assert "Firewall applied" in applied and "sandbox" in applied
    for cell_id, fragments in {**expected.get("both", {}), **expected.get(run, {})}.items():
        text = shown(cell(notebook, cell_id))
        for fragment in fragments:
            assert fragment in text, (name, run, cell_id, fragment, text)
    verdict = shown(cell(notebook, "verdict"))
    port, kind = expected.get("port", 8786), expected.get("kind", "dask")
    assert f"can this notebook reach the scheduler (port {port})? " in verdict, (name, verdict)
    assert f"ports assumed: kind {kind} (dask config)" in verdict, (name, verdict)
    outputs = json.dumps([c.get("outputs", []) for c in notebook.cells])
    assert not SECRETS.search(outputs), SECRETS.search(outputs).group()


def test_every_notebook_is_expected():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_is_saved_clean(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    assert notebook.cells[0].cell_type == "markdown"
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert len([c for c in code if RAISES in c.metadata.get("tags", [])]) == 1
    ids = [c.id for c in notebook.cells]
    assert ids.index("plan") < ids.index("apply")
    assert notebook.metadata.kernelspec.name == "python3"
    # The sandbox is pinned before the first magic, and the reader's own config is left alone.
    first_magic = next(
        i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and "%coiled" in c.source
    )
    assert ids.index("setup") < first_magic
    assert '"coiled-jupyter.backend": "sandbox"' in cell(notebook, "setup").source
    # It states the kind of cluster it assumes, in words and in its setup cell (issue 18).
    kind = EXPECTED[name].get("kind", "dask")
    assert f'"coiled-jupyter.cluster-kind": "{kind}"' in cell(notebook, "setup").source
    assert f"**Kind of cluster: `{kind}`.**" in cell(notebook, "setup-md").source
    # It ends on the reachability verdict and a markdown cell saying why it is what it is.
    assert ids[-2:] == ["verdict", "verdict-md"]
    assert notebook.cells[-1].cell_type == "markdown"
    assert notebook.cells[-1].source.startswith("**Why the verdict is what it is.**")
    for verdict in ("**no**", "**yes**", "**unknown**"):
        assert verdict in notebook.cells[-1].source


def test_the_quickstart_saves_into_a_folder_of_its_own_not_the_readers_config(kernel_env):
    execute(NOTEBOOKS / "quickstart.ipynb", kernel_env)
    readers = kernel_env / "dask-config"  # the DASK_CONFIG the kernel inherited
    assert not (readers / "coiled.yaml").exists()
    own = kernel_env / "coiled-jupyter-quickstart" / "dask-config" / "coiled.yaml"
    assert own.exists() and "10.1.0.0/16" in own.read_text()


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_twice_to_the_same_state(name, kernel, kernel_env):
    first = execute(NOTEBOOKS / name, kernel_env, KERNELS[kernel])
    check_run(name, first, "first")
    second = execute(NOTEBOOKS / name, kernel_env, KERNELS[kernel])
    check_run(name, second, "second")
    # Both runs end with the same rules in the cloud.
    assert html(cell(first, "apply")).split("<table>")[1].split("</table>")[0].replace(
        _group_id(first), ""
    ) == html(cell(second, "apply")).split("<table>")[1].split("</table>")[0].replace(
        _group_id(second), ""
    )
    assert _group_id(first) == _group_id(second)


def _group_id(notebook) -> str:
    found = re.search(r"group (sg-[0-9a-f]+)", shown(cell(notebook, "apply")))
    assert found
    return found.group(1)


def test_parameterised_notebook_with_papermill(kernel_env):
    import papermill

    output = kernel_env / "parameterised-out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / "parameterised.ipynb"),
        str(output),
        parameters={"cidr": "10.7.0.0/16", "cluster": "pm-test"},
        kernel_name="python3",
        cwd=str(kernel_env),
        progress_bar=False,
        log_output=False,
    )
    notebook = nbformat.read(output, as_version=4)
    injected = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'cidr = "10.7.0.0/16"' in injected[0].source
    applied = cell(notebook, "apply")
    assert "<td>10.7.0.0/16</td>" in html(applied)
    assert "<td>10.1.0.0/16</td>" not in html(applied)
    assert "cluster 'pm-test'" in shown(applied)
    assert "create group" in shown(cell(notebook, "plan"))
    mistake = shown(cell(notebook, "mistake"))
    assert mistake.startswith("UsageError: variable 'office_cidr'") and "Traceback" not in mistake
    assert not SECRETS.search(json.dumps([c.get("outputs", []) for c in notebook.cells]))


# A reader's saved Dask config that would change every notebook if it were read: open rules of its
# own, another backend, cluster, region, ports and account parameter.
HOSTILE_CONFIG = """\
coiled:
  use_scheduler_public_ip: true
  backend-options:
    ingress:
      - {ports: [22], cidr: 0.0.0.0/0, description: readers own}
coiled-jupyter:
  backend: aws
  cluster: readers-prod
  region: eu-west-3
  scheduler-port: 9786
  dashboard-port: 9787
  account-parameter: /readers/own-parameter
"""


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_is_independent_of_the_readers_saved_config(name, kernel, kernel_env):
    """Each notebook shows the same as on a clean machine, with a hostile coiled.yaml in the
    kernel's Dask config folder (standing for ~/.config/dask), which it never writes to."""
    readers = kernel_env / "dask-config"
    readers.mkdir()
    (readers / "coiled.yaml").write_text(HOSTILE_CONFIG)
    notebook = execute(NOTEBOOKS / name, kernel_env, KERNELS[kernel])
    check_run(name, notebook, "first")
    shown_everywhere = "\n".join(shown(c) for c in notebook.cells if c.cell_type == "code")
    for leak in ("readers own", "readers-prod", "eu-west-3", "9786", "/readers/own-parameter"):
        assert leak not in shown_everywhere, (name, leak)
    assert (readers / "coiled.yaml").read_text() == HOSTILE_CONFIG
