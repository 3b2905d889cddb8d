"""Beside the real Coiled client (the ``coiled`` package from PyPI, never a stand-in).

What we hand to ``coiled.Cluster`` is checked with Coiled's own types and validator; what the README
says Coiled reads from Dask's config is checked against Coiled's source as installed; Coiled's
``set_backend_options`` calls from its documentation are pasted verbatim. Nothing here creates a
Coiled cluster or reaches the network: Coiled's client needs a token and its server for that.
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import coiled  # registers Coiled's config defaults (coiled.backend-options: null) for this process
import dask.config
import pytest

import coiled_jupyter
from coiled_jupyter import session
from coiled_jupyter.provision import account
from coiled_jupyter.rules import MAX_LISTED_PORTS, IngressError

COILED_SOURCE = Path(coiled.__file__).parent
TEAM = [{"ports": [8786, 8787], "cidr": "10.1.0.0/16"}]

# Coiled's "Configuring firewalls" page, the account-level example, in its two published versions.
# The current one (docs source, user_guide/tutorials/configuring_firewalls.rst):
PAGE_CALL = """\
import coiled

coiled.set_backend_options(
    backend="aws",
    aws_access_key_id="<your-access-key-id-here>",
    aws_secret_access_key="<your-access-key-secret-here>",
    ingress=[{"ports": [8786, 8787], "cidr": "10.1.0.0/16"}],
    account="my-team-account-name",  # if you are using a Coiled team account
)
"""
# The earlier one (docs.coiled.io/user_guide/tutorials/configuring_firewalls.html), with
# customer_hosted=True and a CIDR with host bits set:
EARLIER_PAGE_CALL = """\
import coiled

coiled.set_backend_options(
    backend="aws",
    aws_access_key_id="<your-access-key-id-here>",
    aws_secret_access_key="<your-access-key-secret-here>",
    customer_hosted=True,
    ingress=[{"ports": [8786, 8787], "cidr": "10.1.0.2/16"}],
    account="my-team-account-name",  # if you are using a Coiled team account
)
"""
# "which will result in the following ingress rules ...": Protocol | Port | Source
PAGE_TABLE = {("tcp", "8787", "10.1.0.0/16"), ("tcp", "8786", "10.1.0.0/16")}


def run_page(code: str):
    """Run a code block from Coiled's page as written, with ``coiled`` meaning coiled_jupyter."""
    body = code.removeprefix("import coiled\n")
    assert body != code
    exec(compile(body, "<coiled's page>", "exec"), {"coiled": coiled_jupyter})


# --------------------------------------------------------------------------------------------------
# cluster_kwargs() in Coiled's schema


class CoiledWarnings(logging.Handler):
    """What Coiled's client logs at WARNING and above (it warns through logging, not warnings)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def coiled_warnings():
    handler = CoiledWarnings()
    logger = logging.getLogger("coiled")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def test_cluster_kwargs_pass_coileds_types_and_validator(sandbox, dask_config, coiled_warnings):
    from coiled.types import FirewallOptions
    from coiled.utils import validate_backend_options

    session.set_settings(
        [
            {"ports": [8786, 8787], "cidr": "10.1.0.0/16", "description": "VPN"},
            {"ports": ["8000-8003"], "cidr": "10.32.0.0/16"},
            {"ports": [8786], "cidr": "2001:db8::/32"},
        ],
        cluster="coiled-shape",
    )
    session.apply("coiled-shape")
    kwargs = session.cluster_kwargs("coiled-shape", backend_options={"region_name": "us-east-1"})

    ingress = kwargs["backend_options"]["ingress"]
    assert ingress == [
        {"ports": [8000, 8001, 8002, 8003], "cidr": "10.32.0.0/16"},
        {"ports": [8786], "cidr": "2001:db8::/32"},
        {"ports": [8786, 8787], "cidr": "10.1.0.0/16"},
    ]
    hints = typing.get_type_hints(FirewallOptions)
    assert hints == {"ports": typing.List[int], "cidr": str}  # noqa: UP006 - Coiled's own spelling
    for rule in ingress:
        assert set(rule) == set(hints)
        assert isinstance(rule["cidr"], str)
        assert all(type(port) is int for port in rule["ports"])
    assert set(kwargs) <= set(inspect.signature(coiled.Cluster).parameters)

    validate_backend_options(kwargs["backend_options"])  # raises ValueError for what it refuses
    # Coiled's own false warnings: validate_backend_options checks every key of a rule against
    # FirewallOptions.__optional_keys__, which is empty because ports and cidr are required keys
    # (a total TypedDict), so it warns about ports and cidr of every valid rule. Nothing else.
    false_warning = re.compile(
        r"^(ports|cidr) \(.*\) in backend_options firewall config is not a recognized key$"
    )
    assert FirewallOptions.__optional_keys__ == frozenset()
    assert len(coiled_warnings) == 2 * len(ingress)
    assert all(false_warning.match(message) for message in coiled_warnings), coiled_warnings


def test_what_coileds_ingress_cannot_carry_is_refused_in_one_error(sandbox, dask_config):
    session.set_settings(
        [
            {"ports": [53], "cidr": "10.1.0.0/16", "protocol": "udp"},
            {"ports": [8786], "cidr": "sg-0123456789abcdef0"},
            {"ports": [f"1024-{1024 + MAX_LISTED_PORTS}"], "cidr": "10.2.0.0/16"},
            {"ports": [8786], "cidr": "10.3.0.0/16"},
        ],
        cluster="refused",
    )
    with pytest.raises(IngressError) as info:
        session.cluster_kwargs("refused")
    problems = info.value.problems
    assert len(problems) == 3
    wide, group, udp = problems  # in the rules' order: tcp before udp, by port
    assert wide.startswith(f"tcp 1024-{1024 + MAX_LISTED_PORTS} from 10.2.0.0/16 spans")
    assert f"spans {MAX_LISTED_PORTS + 1:,} ports" in wide
    assert (
        group.startswith("tcp 8786 from sg-0123456789abcdef0") and "not a security group" in group
    )
    assert udp.startswith("udp 53 from 10.1.0.0/16") and "TCP ports only" in udp
    assert all("cluster_kwargs().security_group_id" in p for p in problems)

    session.set_settings(
        [{"ports": [f"1024-{1023 + MAX_LISTED_PORTS}"], "cidr": "10.2.0.0/16"}], cluster="refused"
    )
    [rule] = session.cluster_kwargs("refused")["backend_options"]["ingress"]
    assert rule["ports"] == list(range(1024, 1024 + MAX_LISTED_PORTS))


# --------------------------------------------------------------------------------------------------
# What Coiled's client reads from Dask's config (the README's claims)


def _coileds_toggle_expression() -> str:
    """Coiled's own expression for ``self.use_scheduler_public_ip`` in ``Cluster.__init__``, taken
    from its installed source; ``use_scheduler_public_ip`` in it is the argument of that name."""
    path = COILED_SOURCE / "v2" / "cluster.py"
    tree = ast.parse(path.read_text())
    cluster = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Cluster")
    init = next(n for n in cluster.body if getattr(n, "name", None) == "__init__")
    found = [
        node.value
        for node in ast.walk(init)
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        and ast.unparse(getattr(node, "target", None) or node.targets[0])
        == "self.use_scheduler_public_ip"
    ]
    assert len(found) == 1, "Coiled's Cluster no longer sets use_scheduler_public_ip in one place"
    expression = ast.unparse(found[0])
    assert "dask.config.get('coiled.use_scheduler_public_ip'" in expression
    return expression


def _coileds_own_toggle_read():
    """Coiled's expression as a function of the ``use_scheduler_public_ip=`` argument."""
    code = compile(_coileds_toggle_expression(), "coiled/v2/cluster.py", "eval")
    return lambda argument=None: eval(code, {"dask": dask}, {"use_scheduler_public_ip": argument})


def test_coiled_cluster_reads_the_toggle_we_set_and_gets_back_what_was_there(sandbox, dask_config):
    seen_by_coiled = _coileds_own_toggle_read()
    assert seen_by_coiled() is True  # Coiled's default: the public IP

    dask.config.set({"coiled.use_scheduler_public_ip": False})  # the person's own setting
    assert seen_by_coiled() is False
    session.set_scheduler_ip("public")
    assert seen_by_coiled() is True
    session.add(8786, "10.1.0.0/16")  # an ingress edit leaves the toggle alone
    assert seen_by_coiled() is True
    assert dask.config.get("coiled.backend-options") is None  # and never writes ingress there
    session.reset()
    assert seen_by_coiled() is False  # what was there before
    # an explicit argument, as cluster_kwargs() hands it over, wins over the config
    assert seen_by_coiled(True) is True


def test_coiled_cluster_never_applies_ingress_from_dask_config():
    reads = []
    for path in sorted(COILED_SOURCE.rglob("*.py")):
        for text in path.read_text().splitlines():
            if re.search(r"""["']coiled\.backend[-_]options|_default_backend_options""", text):
                reads.append((path.relative_to(COILED_SOURCE).as_posix(), text.strip()))
    # One read, into an attribute that nothing reads back: coiled.Cluster() does not see it.
    assert reads == [
        (
            "core.py",
            'self._default_backend_options = dask.config.get("coiled.backend-options", None) or {}',
        )
    ]


# --------------------------------------------------------------------------------------------------
# set_backend_options: Coiled's documented call as written


def test_our_signature_has_every_named_parameter_of_coileds():
    ours = inspect.signature(account.set_backend_options).parameters
    theirs = inspect.signature(coiled.set_backend_options).parameters
    assert [name for name in theirs if name not in ours] == []
    assert ours["kwargs"].kind is inspect.Parameter.VAR_KEYWORD


_VALUES = {
    "account": "my-team",
    "workspace": "my-team",
    "backend": "aws",
    "ingress": TEAM,
    "firewall": {"ports": [8786], "cidr": "10.1.0.0/16"},
    "aws_region": "us-east-1",
    "aws_access_key_id": "<your-access-key-id-here>",
    "aws_secret_access_key": "<your-access-key-secret-here>",
    "gcp_service_creds_dict": {"private_key": "-----BEGIN PRIVATE KEY-----"},
    "registry_access_token": "dckr_pat_secret",
}
_KEPT = {"account", "workspace", "backend", "ingress", "firewall", "aws_region"}
_KEYS = {"aws_access_key_id", "aws_secret_access_key"}
# Keywords Coiled's function takes through **kwargs, from its documentation.
_DOCUMENTED_EXTRAS = ["customer_hosted", "disable_public_ingress", "use_coiled_defaults"]


@pytest.mark.parametrize(
    "keyword",
    [
        *[
            name
            for name, p in inspect.signature(coiled.set_backend_options).parameters.items()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ],
        *_DOCUMENTED_EXTRAS,
    ],
)
def test_every_keyword_of_coileds_call_is_accepted(cloud, keyword, recwarn):
    value = _VALUES.get(keyword, "x" if keyword != "customer_hosted" else True)
    firewall = {} if keyword in ("ingress", "firewall") else {"ingress": TEAM}
    if keyword == "firewall":
        with pytest.warns(FutureWarning):
            where = account.set_backend_options(**{keyword: value}, **firewall)
    else:
        where = account.set_backend_options(**{keyword: value}, **firewall)

    said = [str(w.message) for w in recwarn if w.category is UserWarning]
    assert len(said) <= 1
    if keyword not in _KEPT | _KEYS:
        assert said and re.search(rf"\b{keyword}\b is Coiled's own", said[0]), said
    if keyword in _KEYS:
        assert said and "not used: the sandbox takes no AWS keys" in said[0]
    name = where.removeprefix("SSM ")
    assert name.endswith("/my-team") == (keyword in ("account", "workspace"))
    stored = json.loads(cloud.ssm.get_parameter(Name=name)["Parameter"]["Value"])
    assert set(stored) == {"ingress"}
    everything = json.dumps(
        [cloud.ssm.describe_parameters()["Parameters"], stored, said], default=str
    )
    for secret in ("<your-access", "PRIVATE KEY", "dckr_pat"):
        assert secret not in everything


def test_both_versions_of_coileds_page_pasted_verbatim(cloud, dask_config):
    with pytest.warns(UserWarning) as caught:
        run_page(PAGE_CALL)
    [warning] = caught
    assert "not used: the sandbox takes no AWS keys" in str(warning.message)
    assert "coiled.workspace (or coiled.account) is 'my-team-account-name'" in str(warning.message)

    # The earlier page writes 10.1.0.2/16 and shows 10.1.0.0/16 in its table, as AWS masks it. The
    # call works as written, and the one warning says how much more the CIDR admits than it names.
    with pytest.warns(UserWarning) as caught:
        run_page(EARLIER_PAGE_CALL)
    [warning] = caught
    said = str(warning.message)
    assert "cidr '10.1.0.2/16' has host bits set; as AWS would, it is kept as 10.1.0.0/16" in said
    assert "65,536 addresses" in said and "'10.1.0.2/32' for the one address" in said
    assert "customer_hosted is Coiled's own" in said

    with dask.config.set({"coiled.workspace": "my-team-account-name"}):
        view = session.show("page", reach=False).to_payload()
        assert view["ingress_origin"] == (
            "account default (SSM /coiled-jupyter/backend-options/my-team-account-name)"
        )
        assert {(r["protocol"], r["ports"], r["source"]) for r in view["rows"]} == PAGE_TABLE
        applied = session.apply("page")
    group = cloud.ec2.describe_security_groups(GroupIds=[applied.table.group_id])["SecurityGroups"]
    admitted = {
        ("tcp", str(port), r["CidrIp"])
        for p in group[0]["IpPermissions"]
        if p["IpProtocol"] == "tcp"
        for r in p.get("IpRanges", [])
        for port in range(p["FromPort"], p["ToPort"] + 1)
    }
    assert admitted == PAGE_TABLE


# --------------------------------------------------------------------------------------------------
# One account store, read the same way by every kernel of that workspace


def _kernel(code: str, config: str | None, tmp_path: Path, name: str, **env) -> str:
    """Run ``code`` in a fresh Python process (a kernel of its own) with its own Dask config."""
    folder = tmp_path / name
    folder.mkdir()
    if config is not None:
        (folder / "coiled.yaml").write_text(config)
    environment = {
        **{k: v for k, v in os.environ.items() if not k.upper().startswith("DASK_COILED__")},
        "DASK_CONFIG": str(folder),
        **env,
    }
    prelude = "import warnings, json, coiled, coiled_jupyter\nfrom coiled_jupyter import session\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


READ = """
settings = session.effective_settings()
print(json.dumps([settings.ingress.origin, [str(r) for r in settings.rules]]))
"""


def test_what_account_writes_is_what_every_kernel_of_that_workspace_reads(cloud, tmp_path):
    written = _kernel(
        """
        with warnings.catch_warnings(record=True):
            print(coiled_jupyter.set_backend_options(
                account="My-Team", ingress=[{"ports": [8786], "cidr": "10.1.0.0/16"}]
            ))
        """,
        "coiled:\n  workspace: someone-else\n",
        tmp_path,
        "writer",
    )
    assert written == "SSM /coiled-jupyter/backend-options/my-team"
    team = [
        "account default (SSM /coiled-jupyter/backend-options/my-team)",
        ["tcp 8786 from 10.1.0.0/16"],
    ]
    assert json.loads(_kernel(READ, "coiled:\n  workspace: my-team\n", tmp_path, "a")) == team
    assert json.loads(_kernel(READ, "coiled:\n  account: my-team\n", tmp_path, "b")) == team
    assert json.loads(_kernel(READ, None, tmp_path, "c", DASK_COILED__WORKSPACE="my-team")) == team
    # The writer's own workspace is another one: it does not read them, and was told so.
    elsewhere = json.loads(_kernel(READ, "coiled:\n  workspace: someone-else\n", tmp_path, "d"))
    assert elsewhere[0] == "built-in default"


def test_the_settings_table_says_what_coiled_cluster_reads_by_itself(cloud, dask_config):
    seen_by_coiled = _coileds_own_toggle_read()
    account.set_backend_options(ingress=TEAM, use_scheduler_public_ip=False)

    view = session.show("told", reach=False)
    assert view.settings.use_scheduler_public_ip.value is False  # our account default...
    assert view.coiled_toggle is seen_by_coiled() is True  # ...which Coiled's client never reads
    toggle_note, rules_note = view.to_payload()["client_notes"]
    assert "by itself: true, not the false above (from account default" in toggle_note
    # "told" is not the default cluster: the call to paste names it.
    assert "coiled.Cluster(**coiled_jupyter.cluster_kwargs('told'))" in toggle_note
    assert "only as coiled.Cluster(**coiled_jupyter.cluster_kwargs('told'))" in rules_note

    view = session.set_scheduler_ip("private")
    assert view.coiled_toggle is seen_by_coiled() is False
    assert view.to_payload()["client_notes"][0].endswith("by itself: false.")
    assert "note: coiled.Cluster() created in this kernel" in repr(view.expanded())


def test_the_save_table_says_what_coiled_cluster_reads_from_the_file(sandbox, dask_config):
    session.add(8786, "10.1.0.0/16")
    session.set_scheduler_ip("private")
    summary = session.save("user").to_payload()["summary"]
    assert "coiled.Cluster() reads use_scheduler_public_ip from this file" in summary
    assert "coiled.Cluster() takes the rules only as coiled.Cluster(**cluster_kwargs())" in summary
    summary = session.save("account").to_payload()["summary"]
    assert "coiled.Cluster() does not read use_scheduler_public_ip from here" in summary


def test_a_new_kernel_after_save_gives_coiled_cluster_the_saved_toggle(sandbox, dask_config):
    session.add(8786, "10.1.0.0/16")
    session.set_scheduler_ip("private")
    session.save("user")
    code = (
        "import coiled, dask\n"
        f"print(eval({_coileds_toggle_expression()!r}, {{'dask': dask}}, "
        "{'use_scheduler_public_ip': None}))\n"
    )
    environment = {**os.environ, "DASK_CONFIG": str(dask_config)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
