"""Every failure of the cloud or the network is one sentence, with the AWS code where there is one, in
every front end: the core, the magics (a plain UsageError, also under ``%xmode Verbose``) and the
panel; the REST routes are in tests/server/test_handlers.py. No sentence and no traceback carries a
credential.

Faults are injected at botocore's ``before-send`` on clients made for each test alone
(``fresh_faults``), so that the retries some of them cause do not spend the retry quota of the
session's shared clients.
"""

from __future__ import annotations

import html
import re

import dask.config
import pytest
from botocore.exceptions import EndpointConnectionError, HTTPClientError, ReadTimeoutError
from IPython.core.error import UsageError

from coiled_jupyter import session
from coiled_jupyter.errors import AccountStoreUnreadable, CloudError
from coiled_jupyter.provision import aws
from coiled_jupyter.provision.target import target
from coiled_jupyter.rules import IngressError

KEY_ID = "AKIAEXAMPLEKEYID7777"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLETOKEN" + "x" * 120
# A captive portal's or a proxy's page, answered with 200 where AWS's XML was expected.
PORTAL = (
    b"<!DOCTYPE html><html><head><title>Sign in</title></head><body><p>Accept<br></body></html>"
)


def _portal(faults):
    faults.answer("CreateSecurityGroup", PORTAL, content_type="text/html")


def _empty_body(faults):
    faults.answer("DescribeSecurityGroups", b"")


def _no_connection(faults):
    faults.throw(
        "CreateSecurityGroup", lambda r: EndpointConnectionError(endpoint_url=r.url), times=None
    )


def _read_timeout(faults):
    faults.throw("CreateSecurityGroup", lambda r: ReadTimeoutError(endpoint_url=r.url), times=None)


def _no_parameter(faults):
    faults.answer("GetParameter", b"{}", content_type="application/x-amz-json-1.1")


# name -> (inject, the code of the sentence)
FAILURES = {
    "an HTML page at CreateSecurityGroup": (_portal, "ResponseParserError"),
    "an empty body at DescribeSecurityGroups": (_empty_body, "ResponseParserError"),
    "no connection at CreateSecurityGroup": (_no_connection, "EndpointConnectionError"),
    "a read time-out at CreateSecurityGroup": (_read_timeout, "ReadTimeoutError"),
    "an SSM answer without its parameter": (_no_parameter, "InvalidResponse"),
}


def _botocore_in_chain(error: BaseException) -> list[BaseException]:
    """The exceptions of botocore (or of its HTTP client) that ``error`` was raised from."""
    found, seen = [], error
    while seen is not None:
        if not type(seen).__module__.startswith("coiled_jupyter"):
            found.append(seen)
        seen = seen.__cause__ or seen.__context__
    return found


def _everything_said(error: BaseException) -> str:
    import traceback

    return str(error) + repr(error) + "".join(traceback.format_exception(error))


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failure_is_one_cloud_error_sentence_from_the_core(fresh_faults, failure):
    inject, code = FAILURES[failure]
    inject(fresh_faults)
    with pytest.raises(CloudError) as raised:
        session.apply("failing")
    assert raised.value.code == code
    assert str(raised.value).startswith(f"{code}: ")
    assert "Traceback" not in str(raised.value) and "<html" not in str(raised.value)
    assert not _botocore_in_chain(raised.value)  # so no request object hangs on it


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failure_is_a_plain_usage_error_in_the_magics_even_verbose(
    fresh_faults, ip, capsys, failure
):
    inject, code = FAILURES[failure]
    inject(fresh_faults)
    ip.run_line_magic("xmode", "Verbose")
    try:
        result = ip.run_cell("%coiled_ingress apply --cluster failing")
    finally:
        ip.run_line_magic("xmode", "Context")
    assert type(result.error_in_exec) is UsageError
    out, err = capsys.readouterr()
    said = out + err
    assert err.startswith(f"UsageError: {code}: ")
    assert "Traceback" not in said and "botocore" not in said


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failure_is_one_sentence_in_the_panel(fresh_faults, failure):
    from coiled_jupyter.widgets import FirewallPanel

    inject, code = FAILURES[failure]
    inject(fresh_faults)
    panel = FirewallPanel(cluster="failing", background=False)
    try:
        panel.apply()
        text = html.unescape(re.sub(r"<[^>]*>", "", panel.status.value))
    finally:
        panel.wait(30)
        panel.close()
    assert f"{code}: " in text and "\n" not in text
    assert "unexpected" not in text  # the panel's word for a bug


def test_an_unreadable_store_answer_refuses_what_needs_the_account_layer(fresh_faults):
    _no_parameter(fresh_faults)
    with pytest.raises(AccountStoreUnreadable) as raised:
        session.plan("needs-the-account")
    assert raised.value.code == "InvalidResponse"
    assert "account defaults are needed" in str(raised.value)


# --------------------------------------------------------------------------------------------------
# Secrets: the aws backend (pointed at the sandbox) signing with a key id that looks real


@pytest.fixture
def signed(aws_backend_on_sandbox, monkeypatch, make_faults):
    """The aws backend with keys and a session token in the environment, and a fault injector on
    the EC2 client it signs with."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    ec2 = aws.client("ec2", target().connection())
    assert ec2.meta.endpoint_url == aws_backend_on_sandbox.url
    return make_faults(ec2)


def _bad_header(request):
    """What the HTTP client raises for a header it cannot send (a region read with its newline):
    the header, signed, in its text; botocore wraps it as HTTPClientError."""
    return HTTPClientError(
        error=ValueError(f"Invalid header value {request.headers['Authorization']!r}")
    )


def _echoed_request(request):
    """AWS's IncompleteSignature answer, which quotes the request's Authorization header."""
    return (
        "Authorization header requires 'Signature' parameter. Authorization="
        f"{request.headers['Authorization'].decode()} "
        f"X-Amz-Security-Token={request.headers['X-Amz-Security-Token'].decode()}"
    )


def _assert_no_secret(text: str) -> None:
    for secret in (KEY_ID, SECRET, TOKEN[:40], "Credential=AKIA", "Signature=0", "Signature=1"):
        assert secret not in text, secret
    assert not re.search(r"Signature=[0-9a-f]{16}", text)
    assert not re.search(r"(AKIA|ASIA)[A-Z0-9]{12}", text)


def test_a_signed_header_in_an_http_client_error_is_scrubbed(signed):
    signed.throw("DescribeSecurityGroups", _bad_header, times=None)
    with pytest.raises(CloudError) as raised:
        session.plan("scrubbed")
    assert raised.value.code == "HTTPClientError"
    _assert_no_secret(_everything_said(raised.value))


def test_an_aws_message_quoting_the_request_is_scrubbed(signed):
    signed.fail("DescribeSecurityGroups", "IncompleteSignature", message=_echoed_request)
    with pytest.raises(CloudError) as raised:
        session.plan("scrubbed")
    assert raised.value.code == "IncompleteSignature"
    _assert_no_secret(_everything_said(raised.value))


@pytest.mark.parametrize("inject", ["portal", "bad header"])
def test_a_verbose_traceback_of_the_python_api_shows_no_request_and_no_key(
    signed, ip, capsys, inject
):
    if inject == "portal":
        signed.answer("DescribeSecurityGroups", PORTAL, content_type="text/html")
    else:
        signed.throw("DescribeSecurityGroups", _bad_header, times=None)
    ip.run_line_magic("xmode", "Verbose")
    try:
        result = ip.run_cell("from coiled_jupyter import session\nsession.plan('verbose')")
    finally:
        ip.run_line_magic("xmode", "Context")
    assert isinstance(result.error_in_exec, CloudError)
    out, err = capsys.readouterr()
    said = out + err
    assert "CloudError" in said  # the traceback was shown
    _assert_no_secret(said)
    assert "AWSPreparedRequest" not in said and "AWSRequest" not in said


# --------------------------------------------------------------------------------------------------
# Regions and patterns are matched whole, before any call


def test_a_region_with_a_newline_is_refused_before_any_call(sandbox, api_calls):
    region = "us-east-1\n"  # as read from a file
    with dask.config.set({"coiled-jupyter.region": region}), pytest.raises(IngressError) as raised:
        session.plan("newline")
    assert "is not valid" in str(raised.value)
    assert sum(api_calls.values()) == 0


def test_a_region_with_a_newline_from_the_environment_is_refused_before_any_call(
    aws_backend_on_sandbox, monkeypatch
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1\n")
    clients = dict(aws._clients)
    with dask.config.set({"coiled-jupyter.region": None}), pytest.raises(IngressError) as raised:
        session.plan("newline")
    assert "AWS_DEFAULT_REGION" in str(raised.value)
    assert aws._clients == clients  # no client made, so no request sent


def test_a_vpc_id_with_a_newline_is_refused_before_any_call(sandbox, api_calls):
    with dask.config.set({"coiled-jupyter.vpc-id": "vpc-0123456789abcdef0\n"}):
        with pytest.raises(IngressError, match="VPC id"):
            session.plan("newline")
    assert sum(api_calls.values()) == 0


@pytest.mark.parametrize("which", ["key id", "secret"])
def test_keys_with_a_newline_are_refused_before_any_call(aws_backend_on_sandbox, which):
    from coiled_jupyter import set_backend_options

    keys = {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}
    name = "aws_access_key_id" if which == "key id" else "aws_secret_access_key"
    keys[name] += "\n"
    clients = dict(aws._clients)
    with pytest.raises(IngressError, match=name):
        set_backend_options(ingress=[{"ports": [8786], "cidr": "10.1.0.0/16"}], **keys)
    assert aws._clients == clients  # no client made, so no request sent


def test_scrub_hides_every_kind_of_credential():
    from coiled_jupyter.errors import scrub

    text = (
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEKEYID7777/20261207/us-east-1/ec2/"
        "aws4_request, SignedHeaders=host, Signature=0123456789abcdef0123456789abcdef; "
        f"x-amz-security-token: {TOKEN}; key ASIAEXAMPLE123456789 secret {SECRET} "
        "proxy http://bob:hunter2@proxy.example:3128 in group sg-0123456789abcdef0"
    )
    said = scrub(text)
    _assert_no_secret(said)
    assert "hunter2" not in said and TOKEN[:20] not in said
    assert "sg-0123456789abcdef0" in said and "proxy.example:3128" in said


# --------------------------------------------------------------------------------------------------
# A mistyped AWS_PROFILE, and other sessions botocore cannot make


@pytest.mark.parametrize("region_configured", [True, False])
def test_a_mistyped_profile_is_one_sentence(aws_backend_on_sandbox, monkeypatch, region_configured):
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    region = "us-east-1" if region_configured else None
    with dask.config.set({"coiled-jupyter.region": region}), pytest.raises(CloudError) as raised:
        session.plan("profiled")
    assert raised.value.code == "ProfileNotFound"
    assert "'no-such-profile'" in str(raised.value) and "AWS_PROFILE" in str(raised.value)
    assert not _botocore_in_chain(raised.value)


def test_a_mistyped_profile_is_a_usage_error_in_the_magics(aws_backend_on_sandbox, ip, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(UsageError) as raised:
        ip.run_line_magic("coiled_ingress", "plan --cluster profiled")
    assert type(raised.value) is UsageError
    assert str(raised.value).startswith("ProfileNotFound: ")


def test_a_config_file_botocore_cannot_parse_is_one_sentence(aws_backend_on_sandbox, tmp_path):
    (tmp_path / "aws-config").write_text("[default\nregion = us-east-1\n")
    with pytest.raises(CloudError) as raised:
        session.plan("unparsed")
    assert raised.value.code == "ConfigParseError"


def test_an_endpoint_that_is_not_a_url_is_one_sentence(aws_backend_on_sandbox, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "not a url")
    with pytest.raises(CloudError) as raised:
        session.plan("endpoint")
    assert raised.value.code == "InvalidEndpoint"
