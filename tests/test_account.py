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
from coiled_jupyter.settings import Layer

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
    with pytest.warns(UserWarning, match="coiled.workspace .or coiled.account. is 'team-a'"):
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
        ({"ingress": [{"ports": [0], "cidr": "10.1.0.0/16"}]}, ["outside 1-65535"]),
        ({"ingress": [{"ports": [8786], "cidr": "10.1.0.2/99"}]}, ["'/99'"]),
        ({"ingress": [{"port": [8786], "cidr": "10.1.0.0/16"}]}, ["did you mean 'ports'"]),
        ({"ingress": "ports: [8786\ncidr: x"}, ["could not be read"]),
        ({"firewall": {"ports": [8786], "cidr": "everyone!"}}, ["'everyone!'"]),
        ({"use_scheduler_public_ip": "maybe"}, ["'maybe'", "true", "false"]),
        ({"ingress": TEAM, "ingres": TEAM}, ["no keyword 'ingres'", "did you mean 'ingress'"]),
        ({"ingress": TEAM, "backend": "gcp"}, ["'gcp'", "backend='aws'"]),
        ({"ingress": TEAM, "firewall": TEAM[0]}, ["both ingress and firewall"]),
        ({"ingress": TEAM, "workspace": "my team"}, ["'my team' is not a Coiled workspace"]),
        ({"ingress": TEAM, "aws_region": "mars-1"}, ["region 'mars-1'"]),
    ],
)
def test_bad_input_is_refused_before_any_call(cloud, api_calls, kwargs, words):
    account.set_backend_options(ingress=[{"ports": [8786], "cidr": "10.9.0.0/16"}])
    before = stored(cloud.ssm)
    api_calls.clear()

    deprecated = "firewall" in kwargs and "ingress" not in kwargs
    with pytest.warns(FutureWarning) if deprecated else contextlib.nullcontext():
        with pytest.raises(IngressError) as info:
            account.set_backend_options(**kwargs)

    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
    assert sum(api_calls.values()) == 0
    assert stored(cloud.ssm) == before


def test_coiled_keywords_that_are_not_firewall_settings_are_named_in_one_warning(cloud):
    with pytest.warns(UserWarning) as caught:
        account.set_backend_options(ingress=TEAM, zone="us-east-1a", instance_types=["t3.large"])
    assert [str(w.message) for w in caught] == [
        "set_backend_options here keeps only the firewall settings (ingress, firewall, "
        "use_scheduler_public_ip) and sends nothing to Coiled; instance_types, zone are Coiled's "
        "own, set with coiled.set_backend_options."
    ]
    assert caught[0].filename == __file__  # points at the caller
    assert stored(cloud.ssm) == {"ingress": TEAM}


@pytest.mark.parametrize(
    "kwargs, extra",
    [
        ({}, ""),
        (
            {"zone": "us-east-1a"},
            " set_backend_options here keeps only the firewall settings (ingress, firewall, "
            "use_scheduler_public_ip) and sends nothing to Coiled; zone is Coiled's own, set with "
            "coiled.set_backend_options.",
        ),
    ],
)
def test_a_call_without_firewall_settings_says_nothing_was_stored(cloud, api_calls, kwargs, extra):
    api_calls.clear()
    with pytest.warns(UserWarning) as caught:
        account.set_backend_options(**kwargs)
    assert [str(w.message) for w in caught] == [
        "No firewall setting was given (ingress, firewall, use_scheduler_public_ip), so nothing "
        "was stored." + extra
    ]
    assert stored(cloud.ssm) is None
    assert dict(api_calls) == {}


def test_every_mistake_of_one_call_comes_in_one_error(cloud, api_calls):
    api_calls.clear()
    with pytest.raises(IngressError) as info:
        account.set_backend_options(
            backend="gcp",
            ingress=[{"ports": [0], "cidr": "nowhere"}],
            use_scheduler_public_ip="maybe",
            workspace="My Team",
            customer_hosted=True,
        )
    said = " ".join(info.value.problems)
    for word in ("'gcp'", "outside 1-65535", "'nowhere'", "'maybe'", "'My Team'"):
        assert word in said, word
    assert "customer_hosted" not in said
    assert len(info.value.problems) == 5
    assert sum(api_calls.values()) == 0


# --------------------------------------------------------------------------------------------------
# Credentials


def test_keys_are_never_sent_to_the_sandbox_and_a_pasted_example_still_works(cloud):
    from coiled_jupyter.provision.target import target

    sent = []

    def record(request, **_):
        sent.append(json.dumps({**dict(request.headers), "body": str(request.body)}, default=str))

    ssm = aws.client("ssm", target().connection())
    ssm.meta.events.register("before-send", record)
    try:
        with pytest.warns(UserWarning) as caught:
            account.set_backend_options(
                ingress=TEAM, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
            )
    finally:
        ssm.meta.events.unregister("before-send", record)
    assert len(sent) == 2  # read, then write the parameter: with the sandbox's own dummy key
    assert all(KEY_ID not in request and SECRET not in request for request in sent)
    [warning] = caught
    assert "not used: the sandbox takes no AWS keys" in str(warning.message)
    assert KEY_ID not in str(warning.message) and SECRET not in str(warning.message)
    assert stored(cloud.ssm) == {"ingress": TEAM}
    everything = json.dumps(cloud.ssm.describe_parameters()["Parameters"], default=str)
    assert KEY_ID not in everything and SECRET not in everything
    assert all(KEY_ID not in repr(key) and SECRET not in repr(key) for key in aws._clients)


def test_keys_are_hidden_from_repr_and_checked_without_quoting_them():
    keys = account.AwsKeys(KEY_ID, SECRET)
    assert KEY_ID not in repr(keys) + str(keys) and SECRET not in repr(keys) + str(keys)
    assert keys.problems() == []
    placeholders = account.AwsKeys("<your-access-key-id-here>", "<your-access-key-secret-here>")
    problems = placeholders.problems()
    assert len(problems) == 2 and all("placeholder" in p for p in problems)
    assert "your-access" not in " ".join(problems)
    assert "only one of" in account.AwsKeys(KEY_ID, None).problems()[0]


@pytest.fixture
def aws_backend_for_keys(aws_backend_on_sandbox):
    """The ``aws`` backend redirected to the sandbox; the client for the explicit keys is made first
    and checked to point at loopback."""
    connection = aws.Connection(region="us-east-1", access_key_id=KEY_ID, secret_access_key=SECRET)
    ssm = aws.client("ssm", connection)
    assert ssm.meta.endpoint_url == aws_backend_on_sandbox.url
    return ssm


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


def test_placeholder_keys_are_refused_with_the_aws_backend(cloud, aws_backend_for_keys):
    with pytest.raises(IngressError) as info:
        account.set_backend_options(
            ingress=TEAM,
            aws_access_key_id="<your-access-key-id-here>",
            aws_secret_access_key="<your-access-key-secret-here>",
        )
    assert len(info.value.problems) == 2
    assert "<your-access" not in _everything_said(info.value)
    assert stored(cloud.ssm) is None


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
    # Without the session the account layer decides both values. Reset is settings work: it makes
    # no cloud call, so it is made and says the account defaults were not read; a plan, which
    # needs them, is refused with the store's sentence.
    view = session.reset()
    assert not view.settings.account_read
    assert any("were not read here" in note for note in view.to_payload()["notes"])
    with pytest.raises(AccountStoreUnreadable, match="InvalidAccountDefaults"):
        session.plan()


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
