"""Account-wide defaults: ``set_backend_options`` (Coiled's signature) into SSM Parameter Store in the
sandbox, read back as the account layer of the settings, with its origin, below the Dask config, the
session and the cluster options. Bad input and credentials are refused before any call.
"""

from __future__ import annotations

import contextlib
import json
import traceback

import dask.config
import pytest

from coiled_jupyter import session
from coiled_jupyter.errors import AccountStoreUnreadable, CloudError
from coiled_jupyter.provision import account, aws
from coiled_jupyter.rules import IngressError, Rule, parse_ingress
from coiled_jupyter.session import effective_settings
from coiled_jupyter.settings import SESSION, Layer

PARAMETER = "/coiled-jupyter/backend-options"
ACCOUNT_ORIGIN = f"account default (SSM {PARAMETER})"
TEAM = [{"ports": [8786, 8787], "cidr": "10.1.0.0/16", "description": "VPN"}]
KEY_ID = "AKIAEXAMPLEKEYID9999"
SECRET = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"


def stored(ssm, name: str = PARAMETER):
    try:
        return json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    except ssm.exceptions.ParameterNotFound:
        return None


def _everything_said(error: BaseException) -> str:
    return "\n".join(
        [
            str(error),
            repr(error),
            "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        ]
    )


# --------------------------------------------------------------------------------------------------
# Storing and reading back


def test_defaults_are_stored_in_ssm_and_become_the_account_layer(cloud):
    account.set_backend_options(ingress=TEAM, use_scheduler_public_ip=False)

    assert stored(cloud.ssm) == {
        "ingress": [{"ports": [8786, 8787], "cidr": "10.1.0.0/16", "description": "VPN"}],
        "use_scheduler_public_ip": False,
    }
    settings = effective_settings()
    assert settings.ingress.origin == ACCOUNT_ORIGIN
    assert settings.rules == parse_ingress(TEAM)
    assert settings.use_scheduler_public_ip.value is False
    assert settings.use_scheduler_public_ip.origin == ACCOUNT_ORIGIN


def test_a_second_call_keeps_what_it_does_not_set(cloud):
    account.set_backend_options(ingress=TEAM)
    account.set_backend_options(use_scheduler_public_ip=False)
    assert set(stored(cloud.ssm)) == {"ingress", "use_scheduler_public_ip"}
    account.set_backend_options(ingress=[])
    assert stored(cloud.ssm) == {"ingress": [], "use_scheduler_public_ip": False}
    assert effective_settings().rules == []
    assert effective_settings().ingress.origin == ACCOUNT_ORIGIN


def test_the_account_layer_is_what_apply_uses(cloud):
    account.set_backend_options(ingress=TEAM)
    result = session.apply("team")
    assert result.plan.origin == ACCOUNT_ORIGIN
    group = cloud.ec2.describe_security_groups(
        Filters=[{"Name": "tag:coiled-jupyter:cluster", "Values": ["team"]}]
    )["SecurityGroups"][0]
    ranges = {
        (p["FromPort"], p["ToPort"], r["CidrIp"])
        for p in group["IpPermissions"]
        for r in p.get("IpRanges", [])
    }
    assert ranges == {(8786, 8787, "10.1.0.0/16")}
    assert ACCOUNT_ORIGIN in result.table.origins


def test_a_workspace_has_its_own_parameter(cloud):
    account.set_backend_options(workspace="team-a", ingress=TEAM)
    assert stored(cloud.ssm) is None
    assert stored(cloud.ssm, f"{PARAMETER}/team-a")["ingress"][0]["cidr"] == "10.1.0.0/16"
    assert effective_settings().ingress.layer.label == "built-in default"
    with dask.config.set({"coiled.workspace": "team-a"}):
        assert effective_settings().ingress.origin == (f"account default (SSM {PARAMETER}/team-a)")


# --------------------------------------------------------------------------------------------------
# Stronger layers win


def test_config_session_and_cluster_options_beat_the_account(cloud, tmp_path, monkeypatch):
    account.set_backend_options(ingress=TEAM, use_scheduler_public_ip=False)
    folder = tmp_path / "dask"
    folder.mkdir()
    (folder / "coiled.yaml").write_text(
        "coiled:\n  backend-options:\n    ingress:\n      - ports: [8786]\n"
        "        cidr: 10.2.0.0/16\n"
    )
    monkeypatch.setenv("DASK_CONFIG", str(folder))

    config = effective_settings()
    assert config.ingress.layer.label == "dask config"
    assert str(folder / "coiled.yaml") in config.ingress.origin
    assert config.rules == [Rule("tcp", 8786, 8786, "10.2.0.0/16")]
    # scalars win on their own: the config file does not set the toggle, the account does
    assert config.use_scheduler_public_ip.value is False
    assert config.use_scheduler_public_ip.origin == ACCOUNT_ORIGIN

    session.set_settings({"ingress": [{"ports": [8786], "cidr": "10.3.0.0/16"}]})
    in_session = effective_settings()
    assert in_session.ingress.origin == "notebook session (this kernel)"
    assert in_session.rules == [Rule("tcp", 8786, 8786, "10.3.0.0/16")]

    cluster = effective_settings(
        {"ingress": [{"ports": [8786], "cidr": "10.4.0.0/16"}], "use_scheduler_public_ip": True}
    )
    assert cluster.ingress.origin == "cluster options (backend_options)"
    assert cluster.use_scheduler_public_ip.origin == "cluster options (backend_options)"


# --------------------------------------------------------------------------------------------------
# Coiled's signature


def test_the_deprecated_firewall_dict_works_with_a_future_warning(cloud):
    with pytest.warns(FutureWarning, match="firewall") as caught:
        account.set_backend_options(firewall={"ports": [8786], "cidr": "10.5.0.0/16"})
    assert caught[0].filename == __file__  # points at the caller
    assert stored(cloud.ssm) == {"ingress": [{"ports": [8786], "cidr": "10.5.0.0/16"}]}
    assert effective_settings().rules == [Rule("tcp", 8786, 8786, "10.5.0.0/16")]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"ingress": [{"ports": [0], "cidr": "10.1.0.2/16"}]}, ["outside 1-65535", "10.1.0.0/16"]),
        ({"ingress": [{"port": [8786], "cidr": "10.1.0.0/16"}]}, ["did you mean 'ports'"]),
        ({"ingress": "ports: [8786\ncidr: x"}, ["could not be read"]),
        ({"firewall": {"ports": [8786], "cidr": "everyone!"}}, ["'everyone!'"]),
        ({"use_scheduler_public_ip": "maybe"}, ["'maybe'", "true", "false"]),
        ({"ingress": TEAM, "zone": "us-east-1a"}, ["zone", "coiled.set_backend_options"]),
        ({"ingress": TEAM, "backend": "gcp"}, ["'gcp'", "backend='aws'"]),
    ],
)
def test_bad_input_is_refused_before_any_call(cloud, api_calls, kwargs, words):
    account.set_backend_options(ingress=[{"ports": [8786], "cidr": "10.9.0.0/16"}])
    before = stored(cloud.ssm)
    api_calls.clear()

    with pytest.warns(FutureWarning) if "firewall" in kwargs else contextlib.nullcontext():
        with pytest.raises(IngressError) as info:
            account.set_backend_options(**kwargs)

    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
    assert sum(api_calls.values()) == 0
    assert stored(cloud.ssm) == before


def test_unknown_coiled_keywords_get_one_clear_sentence(sandbox):
    with pytest.raises(IngressError) as info:
        account.set_backend_options(ingress=TEAM, zone="us-east-1a", instance_types=["t3.large"])
    assert info.value.problems == [
        "set_backend_options here stores only firewall settings; instance_types, zone belong to "
        "Coiled's own coiled.set_backend_options."
    ]


# --------------------------------------------------------------------------------------------------
# Credentials


def test_real_keys_are_never_sent_to_the_sandbox(cloud, api_calls):
    api_calls.clear()
    with pytest.raises(IngressError) as info:
        account.set_backend_options(
            ingress=TEAM, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
        )
    assert "never sent to the sandbox" in str(info.value)
    said = _everything_said(info.value)
    assert KEY_ID not in said and SECRET not in said
    assert sum(api_calls.values()) == 0
    assert stored(cloud.ssm) is None


@pytest.fixture
def aws_backend_for_keys(sandbox, monkeypatch, tmp_path):
    """The ``aws`` backend with its endpoint redirected to the sandbox (``AWS_ENDPOINT_URL``); the
    client for the explicit keys is made first and checked to point at loopback."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", sandbox.url)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    with dask.config.set({"coiled-jupyter.backend": "aws", "coiled-jupyter.region": "us-east-1"}):
        connection = aws.Connection(
            region="us-east-1", access_key_id=KEY_ID, secret_access_key=SECRET
        )
        ssm = aws.client("ssm", connection)
        assert ssm.meta.endpoint_url == sandbox.url
        try:
            yield ssm
        finally:
            with aws._clients_lock:
                for key in [k for k in aws._clients if k[2] is None]:
                    del aws._clients[key]


def test_keys_given_are_used_but_never_stored_or_shown(cloud, aws_backend_for_keys, make_faults):
    account.set_backend_options(
        ingress=TEAM, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
    )

    parameter = cloud.ssm.get_parameter(Name=PARAMETER)["Parameter"]
    described = cloud.ssm.describe_parameters()["Parameters"]
    everything = json.dumps([parameter, described], default=str)
    assert stored(cloud.ssm)["ingress"][0]["cidr"] == "10.1.0.0/16"
    assert KEY_ID not in everything and SECRET not in everything
    assert all(KEY_ID not in repr(key) and SECRET not in repr(key) for key in aws._clients)

    faults = make_faults(aws_backend_for_keys)
    faults.fail(
        "PutParameter",
        "AccessDeniedException",
        message="User is not authorized to perform: ssm:PutParameter",
    )
    with pytest.raises(CloudError) as info:
        account.set_backend_options(
            ingress=TEAM, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
        )
    assert faults.sent["PutParameter"] == 1
    assert info.value.code == "AccessDeniedException"
    assert "SSM parameters" in str(info.value)
    said = _everything_said(info.value)
    assert KEY_ID not in said and SECRET not in said


# --------------------------------------------------------------------------------------------------
# A parameter broken by hand


def test_a_parameter_that_is_not_json_is_reported(cloud):
    cloud.ssm.put_parameter(Name=PARAMETER, Value="ingress: oops", Type="String")
    with pytest.raises(AccountStoreUnreadable) as info:
        effective_settings()
    message = str(info.value)
    assert message.startswith("InvalidAccountDefaults: ")
    assert PARAMETER in message and "set_backend_options" in message and ".;" not in message


def test_an_unreadable_account_store_only_matters_when_it_would_decide(cloud):
    cloud.ssm.put_parameter(Name=PARAMETER, Value="ingress: oops", Type="String")
    session.set_settings({"ingress": TEAM, "use_scheduler_public_ip": False})

    settings = effective_settings()

    assert settings.ingress.layer is Layer.SESSION
    assert settings.use_scheduler_public_ip.layer is Layer.SESSION
    before = SESSION.values
    # Without the session, the account layer would decide both values: reset is refused.
    with pytest.raises(AccountStoreUnreadable):
        session.reset()
    assert SESSION.values == before


def test_bad_rules_in_the_parameter_name_where_they_are(cloud):
    cloud.ssm.put_parameter(
        Name=PARAMETER,
        Type="String",
        Value=json.dumps({"ingress": [{"ports": [8786], "cidr": "10.1.0.2/16"}]}),
    )
    with pytest.raises(IngressError) as info:
        effective_settings()
    assert "account default" in str(info.value) and PARAMETER in str(info.value)
    assert "10.1.0.0/16" in str(info.value)
