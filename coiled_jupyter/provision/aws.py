"""EC2 security groups and the SSM account store, through boto3. The only module that speaks to AWS.

Every call goes through one boto3 client per (region, endpoint, credentials), created once and reused
(creating one costs ~0.2 s), with botocore's ``standard`` retry mode so that throttling
(``RequestLimitExceeded``) is retried. Errors are matched on their codes, never on messages. Every
call (:func:`_call`) and every session or client made (:func:`_made`) turns whatever fails, AWS's
answer, botocore's own errors or an answer that is not AWS's, into one :class:`CloudError`, which says
what to do, is scrubbed of credentials and carries none of botocore's objects.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConfigNotFound,
    ConfigParseError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from botocore.parsers import ResponseParserError

from ..errors import CloudError, ForeignGroupError, scrub
from ..rules import ALL_PROTOCOLS, Rule, sort_key
from .aws_environment import environment_digest

TOOL = "coiled-jupyter"
TAG_OWNER = "coiled-jupyter:owner"
TAG_CLUSTER = "coiled-jupyter:cluster"
# Tags on the rules (sgr-...) this tool writes: the owner tag tells them from rules added by hand;
# TAG_ME lists the networks 'me' stood for when the rules of that call were written (one
# TagSpecifications covers every rule of a call, so the value names the 'me' rules among them).
TAG_ME = "coiled-jupyter:me"
# TAG_OVERRIDE says which team guardrail the rules of that call override, and why ("no-world: ...").
TAG_OVERRIDE = "coiled-jupyter:override"
SELF_DESCRIPTION = "cluster-internal traffic (this group)"
_NOT_FOUND_RETRIES = (0.2, 0.4, 0.8, 1.6, 3.2)
# Rounds of "the call conflicted with the group as read; read again and retry the rest".
_CONFLICT_ROUNDS = 3


_ADVICE = {
    "RulesPerSecurityGroupLimitExceeded": "the group holds too many rules; compact or remove rules, "
    "or ask AWS to raise the rules-per-group quota and set coiled-jupyter.rules-per-group.",
    "RequestLimitExceeded": "AWS is throttling this account; wait a minute and run it again.",
    "UnauthorizedOperation": "these credentials may not change security groups; ask for "
    "ec2:*SecurityGroup* permissions.",
    "AuthFailure": "AWS did not accept these credentials; check your AWS profile or keys.",
    "DependencyViolation": "the group is still attached to instances or network interfaces; stop the "
    "cluster first, then destroy its group.",
    "InvalidVpcID.NotFound": "check coiled-jupyter.vpc-id and the region.",
    "AccessDeniedException": "these credentials may not read or write SSM parameters.",
}


# What a failed call can raise: an AWS error answer, botocore's own failures (no connection, a read
# time-out, no credentials, an unknown profile, ...) and an answer that is not AWS's (an HTML page or
# an empty body from a proxy), which botocore's parser raises as a plain Exception.
FAILURES = (ClientError, BotoCoreError, ResponseParserError)
# The most of another library's text a sentence quotes.
_QUOTED = 300


def cloud_error(error: Exception, doing: str) -> CloudError:
    """One readable CloudError for a failed call (see :data:`FAILURES`): the AWS code where there
    is one, what to do, and none of botocore's traceback or the request's credentials."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "Unknown")
        message = error.response.get("Error", {}).get("Message", "")
        advice = _ADVICE.get(code, "")
        return CloudError(
            code, f"{doing} failed: {_quoted(message)}" + (f"; {advice}" if advice else "")
        )
    code, reason = _reason(error)
    return CloudError(code, f"{doing} failed: {reason}")


# Failures that are not an AWS error answer, most specific first: (classes, code (None: the class's
# name), the sentence, with {said} (botocore's text), {where} (the endpoint) and {profile}).
_CHECK_NETWORK = "check the network (and HTTPS_PROXY), then run it again."
_REASONS = (
    (
        NoCredentialsError,
        "NoCredentials",
        "no AWS credentials were found; configure a profile (aws configure) or use the sandbox "
        "backend.",
    ),
    (
        ProfileNotFound,
        "ProfileNotFound",
        "the AWS profile {profile!r} is not in your AWS config files; check AWS_PROFILE (aws "
        "configure list-profiles lists the profiles).",
    ),
    (
        (PartialCredentialsError, CredentialRetrievalError),
        None,
        "the AWS credentials could not be loaded ({said}); check your AWS profile or keys.",
    ),
    ((ConfigParseError, ConfigNotFound), None, "{said}; fix or move that AWS config file."),
    (ReadTimeoutError, "ReadTimeoutError", "{where} did not answer in time; " + _CHECK_NETWORK),
    (BotoConnectionError, None, "could not connect to {where}; " + _CHECK_NETWORK),
    (
        ResponseParserError,
        "ResponseParserError",
        "the answer was not an AWS response (an HTML page or an empty body, as a proxy or a "
        "captive portal sends); " + _CHECK_NETWORK,
    ),
    (
        HTTPClientError,
        "HTTPClientError",
        "the HTTP request did not complete ({said}); " + _CHECK_NETWORK,
    ),
)


def _reason(error: Exception) -> tuple[str, str]:
    """The code and the sentence for a failure that is not an AWS error answer."""
    kwargs = getattr(error, "kwargs", {})
    for classes, code, sentence in _REASONS:
        if isinstance(error, classes):
            return code or type(error).__name__, sentence.format(
                said=_quoted(error),
                where=_where(error),
                profile=_quoted(kwargs.get("profile", "")),
            )
    return type(error).__name__, _quoted(error)


def _where(error: Exception) -> str:
    kwargs = getattr(error, "kwargs", {})
    url = kwargs.get("endpoint_url") or kwargs.get("proxy_url")
    return _quoted(url) if url else "the AWS endpoint"


def _quoted(text) -> str:
    """Another library's text as a sentence may quote it: scrubbed, on one line, bounded."""
    said = " ".join(scrub(str(text)).split())
    return said if len(said) <= _QUOTED else said[: _QUOTED - 3] + "..."


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


# --------------------------------------------------------------------------------------------------
# Clients


class Secret:
    """A credential that never shows: its ``repr`` and ``str`` are masked, so a traceback's argument
    list (``%xmode Verbose``), a log line or a result's repr cannot print it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    @classmethod
    def wrap(cls, value) -> Secret | None:
        """``None`` stays ``None``; a string is wrapped; a Secret stays as it is."""
        if value is None or isinstance(value, Secret):
            return value
        return cls(str(value))

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._value.encode("utf-8", "surrogatepass")).digest())

    def __reduce__(self):
        raise TypeError("a Secret is not pickled")


@dataclass(frozen=True)
class Connection:
    """Where and as whom to connect. Credentials are :class:`Secret` objects, kept out of ``repr``,
    and never stored on disk."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    access_key_id: Secret | None = field(default=None, repr=False)
    secret_access_key: Secret | None = field(default=None, repr=False)
    # The sandbox is on loopback: an HTTP(S)_PROXY of the environment must not carry its calls away.
    direct: bool = False

    def __post_init__(self):
        object.__setattr__(self, "access_key_id", Secret.wrap(self.access_key_id))
        object.__setattr__(self, "secret_access_key", Secret.wrap(self.secret_access_key))


def default_region() -> str | None:
    """The region of the boto3 session (AWS_DEFAULT_REGION, the profile's ~/.aws/config); a profile
    or config file botocore cannot use is a :class:`CloudError`."""
    return _made("reading the AWS region", lambda: boto3.session.Session().region_name)


def _made(doing: str, make):
    """``make()``, which builds a boto3 session or client: an unknown ``AWS_PROFILE``, a config
    file that does not parse or an endpoint URL that is not one becomes a CloudError, raised
    outside the handler so that it carries none of botocore's objects."""
    try:
        return make()
    except FAILURES as error:
        failure = cloud_error(error, doing)
    except ValueError as error:  # botocore's "Invalid endpoint: ..." for a malformed URL
        failure = CloudError(
            "InvalidEndpoint", f"{doing} failed: {_quoted(error)}; check AWS_ENDPOINT_URL."
        )
    raise failure


_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


def client(service: str, connection: Connection):
    """A cached boto3 client, one per service, connection and AWS environment of the kernel (see
    :func:`.aws_environment.environment_digest`); the key holds digests, never the credentials themselves."""
    key_id, secret = connection.access_key_id, connection.secret_access_key
    credentials = hashlib.sha256(
        f"{key_id and key_id.reveal()}\0{secret and secret.reveal()}".encode()
    ).hexdigest()
    key = (
        service,
        connection.region,
        connection.endpoint_url,
        connection.profile,
        connection.direct,
        credentials,
        environment_digest(),
    )
    with _clients_lock:
        cached = _clients.get(key)
        if cached is None:
            cached = _made(f"connecting to AWS {service}", lambda: _new_client(service, connection))
            _clients[key] = cached
        return cached


def _new_client(service: str, connection: Connection):
    key_id, secret = connection.access_key_id, connection.secret_access_key
    session = boto3.session.Session(
        profile_name=connection.profile,
        aws_access_key_id=key_id and key_id.reveal(),
        aws_secret_access_key=secret and secret.reveal(),
        region_name=connection.region,
    )
    return session.client(
        service,
        endpoint_url=connection.endpoint_url,
        config=Config(
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=5,
            read_timeout=30,
            proxies={"http": None, "https": None} if connection.direct else None,
        ),
    )


def _call(doing: str, method, /, *, passing: tuple[str, ...] = (), **kwargs):
    """One API call, ``method(**kwargs)``. A failure becomes a :class:`CloudError` saying what was
    being done, raised outside the handler (no botocore exception, request or credential hangs on
    it), except an AWS error whose code is in ``passing``, which the caller handles itself."""
    try:
        return method(**kwargs)
    except ClientError as error:
        if _code(error) in passing:
            raise
        failure = cloud_error(error, doing)
    except FAILURES as error:
        failure = cloud_error(error, doing)
    raise failure


@dataclass(frozen=True)
class Group:
    """A security group as the cloud reports it, with its inbound rules canonicalised."""

    group_id: str
    name: str
    vpc_id: str
    account_id: str
    tags: dict
    rules: tuple[Rule, ...]
    unmanageable: tuple[str, ...] = ()
    # How the cloud spells each rule's source when that differs from the canonical form (moto keeps
    # host bits: a rule read as 10.1.0.0/16 may be stored as 10.1.0.2/16, and only that spelling
    # revokes it there). Keyed by Rule.key.
    stored_as: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def owned(self) -> bool:
        return self.tags.get(TAG_OWNER) == TOOL

    def with_rules(self, rules: Iterable[Rule]) -> Group:
        """This group holding ``rules`` instead (each key once, the later description winning)."""
        by_key = {r.key: r for r in rules}
        return replace(self, rules=tuple(sorted(by_key.values(), key=sort_key)))


def group_name(cluster: str) -> str:
    return f"{TOOL}-{cluster}"


def _group(description: dict) -> Group:
    rules, unmanageable = rules_from_permissions(description.get("IpPermissions", []))
    return Group(
        group_id=description["GroupId"],
        name=description.get("GroupName", ""),
        vpc_id=description.get("VpcId", ""),
        account_id=description.get("OwnerId", ""),
        tags={t["Key"]: t["Value"] for t in description.get("Tags", [])},
        rules=tuple(rules),
        unmanageable=tuple(unmanageable),
        stored_as=stored_sources(description.get("IpPermissions", [])),
    )


def rules_from_permissions(permissions: Iterable[dict]) -> tuple[list[Rule], list[str]]:
    """Flatten ``IpPermissions`` into one canonical rule per source.

    AWS masks host bits and moto does not, so networks are masked here (``strict=False``) before any
    comparison; protocols are lowercased; ``-1`` is ``all``. Prefix lists cannot be expressed as rules
    of ours and are returned apart, as text, so that they are reported rather than silently kept.
    """
    rules: list[Rule] = []
    unmanageable: list[str] = []
    for permission in permissions:
        protocol, low, high = _protocol_and_ports(permission)
        for entry in permission.get("IpRanges", []):
            network = str(ipaddress.ip_network(entry["CidrIp"], strict=False))
            rules.append(Rule(protocol, low, high, network, entry.get("Description", "")))
        for entry in permission.get("Ipv6Ranges", []):
            network = str(ipaddress.ip_network(entry["CidrIpv6"], strict=False))
            rules.append(Rule(protocol, low, high, network, entry.get("Description", "")))
        for entry in permission.get("UserIdGroupPairs", []):
            rules.append(Rule(protocol, low, high, entry["GroupId"], entry.get("Description", "")))
        for entry in permission.get("PrefixListIds", []):
            unmanageable.append(f"{protocol} {low}-{high} from prefix list {entry['PrefixListId']}")
    return sorted(set(rules), key=sort_key), unmanageable


def _protocol_and_ports(permission: dict) -> tuple[str, int, int]:
    """One ``IpPermissions`` entry's protocol (lowercased, ``-1`` as ``all``) and port range."""
    protocol = str(permission.get("IpProtocol", "")).lower()
    if protocol == "-1":
        return ALL_PROTOCOLS, 0, 65535
    protocol = {"6": "tcp", "17": "udp"}.get(protocol, protocol)
    return protocol, int(permission.get("FromPort", 0)), int(permission.get("ToPort", 65535))


def rule_from_entry(entry: dict) -> Rule | None:
    """One ``SecurityGroupRule`` (DescribeSecurityGroupRules, or the authorize response) as a canonical
    rule; ``None`` for egress and prefix-list rules, which this tool does not manage."""
    if entry.get("IsEgress") or entry.get("PrefixListId"):
        return None
    protocol, low, high = _protocol_and_ports(entry)
    description = entry.get("Description", "")
    if entry.get("CidrIpv4") or entry.get("CidrIpv6"):
        network = str(
            ipaddress.ip_network(entry.get("CidrIpv4") or entry["CidrIpv6"], strict=False)
        )
        return Rule(protocol, low, high, network, description)
    referenced = (entry.get("ReferencedGroupInfo") or {}).get("GroupId")
    return Rule(protocol, low, high, referenced, description) if referenced else None


def stored_sources(permissions: Iterable[dict]) -> dict[tuple, tuple[str, ...]]:
    """Rule key -> the source spellings as stored, for the sources stored in a non-canonical form."""
    found: dict[tuple, list[str]] = {}
    for permission in permissions:
        protocol, low, high = _protocol_and_ports(permission)
        spelled = [e["CidrIp"] for e in permission.get("IpRanges", [])]
        spelled += [e["CidrIpv6"] for e in permission.get("Ipv6Ranges", [])]
        for text in spelled:
            network = str(ipaddress.ip_network(text, strict=False))
            found.setdefault((protocol, low, high, network), []).append(text)
    return {key: tuple(dict.fromkeys(texts)) for key, texts in found.items() if texts != [key[3]]}


def permissions_from_rules(
    rules: Iterable[Rule], stored_as: dict | None = None, *, empty_descriptions: bool = False
) -> list[dict]:
    """Rules into as few ``IpPermissions`` entries as AWS allows: one per protocol and port range.

    ``stored_as`` (from :attr:`Group.stored_as`) gives the spellings to send instead of the canonical
    source, so that a revoke names the rule exactly as the cloud holds it. ``empty_descriptions``
    sends an empty description as ``""`` rather than leaving it out: a description update clears it
    so (AWS also clears an omitted one; moto keeps it).
    """
    grouped: dict[tuple[str, int, int], dict] = {}
    for rule in sorted(rules, key=sort_key):
        key = (rule.protocol, rule.from_port, rule.to_port)
        permission = grouped.get(key)
        if permission is None:
            if rule.protocol == ALL_PROTOCOLS:
                permission = {"IpProtocol": "-1"}
            else:
                permission = {
                    "IpProtocol": rule.protocol,
                    "FromPort": rule.from_port,
                    "ToPort": rule.to_port,
                }
            grouped[key] = permission
        described = (
            {"Description": rule.description} if rule.description or empty_descriptions else {}
        )
        if rule.source_kind == "group":
            permission.setdefault("UserIdGroupPairs", []).append(
                {"GroupId": rule.source, **described}
            )
            continue
        for source in (stored_as or {}).get(rule.key, (rule.source,)):
            if rule.source_kind == "ipv6":
                permission.setdefault("Ipv6Ranges", []).append({"CidrIpv6": source, **described})
            else:
                permission.setdefault("IpRanges", []).append({"CidrIp": source, **described})
    return list(grouped.values())


def _rule_tags(rules: list[Rule], me: Iterable[str], override: str) -> dict:
    """The TagSpecifications of an authorize: this tool's owner tag, which rules are 'me', and the
    guardrail override the rules need."""
    tags = [{"Key": TAG_OWNER, "Value": TOOL}]
    mine = sorted({r.source for r in rules} & set(me))
    if mine:
        tags.append({"Key": TAG_ME, "Value": " ".join(mine)})
    if override:
        tags.append({"Key": TAG_OVERRIDE, "Value": override[:256]})
    return {"ResourceType": "security-group-rule", "Tags": tags}


def caller_arn(connection: Connection) -> str:
    """Who this kernel's credentials are (STS ``GetCallerIdentity``; only the ARN is kept: the
    response's user id can be an access key id)."""
    doing = "asking AWS who these credentials are"
    arn = _call(doing, client("sts", connection).get_caller_identity).get("Arn")
    if not isinstance(arn, str):
        raise _unexpected_answer(doing, "ARN")
    return arn


class SecurityGroups:
    """Find, create, change and delete the security groups of clusters in one region.

    It keeps, per group, the group as last read, whose spelling of each source a revoke must use
    (see :attr:`Group.stored_as`). Each write resolves its own conflicts with another writer (an
    authorize answered ``InvalidPermission.Duplicate``, a revoke answered
    ``InvalidPermission.NotFound`` or with ``UnknownIpPermissions``) by reading the group again;
    what the group holds in the end is known only from a read (:meth:`get`), which an apply makes
    after its writes.
    """

    def __init__(self, connection: Connection):
        self.connection = connection
        self.ec2 = client("ec2", connection)
        # Group id -> the group as last read.
        self._read: dict[str, Group] = {}
        # Groups this object created: only for them is InvalidGroup.NotFound a passing state.
        self._created: set[str] = set()

    def find(self, cluster: str, vpc_id: str | None) -> Group | None:
        """The cluster's group, found by its tag (one call, which also returns its rules)."""
        filters = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]}]
        if vpc_id:
            filters.append({"Name": "vpc-id", "Values": [vpc_id]})
        groups = self._describe(Filters=filters)
        ours = [g for g in groups if g.owned]
        if len(ours) > 1:
            vpcs = ", ".join(sorted(g.vpc_id for g in ours))
            raise CloudError(
                "AmbiguousCluster",
                f"cluster {cluster!r} has groups in several VPCs "
                f"({vpcs}); set coiled-jupyter.vpc-id to pick one.",
            )
        if ours:
            return ours[0]
        if groups:
            raise ForeignGroupError(
                "ForeignGroup",
                f"group {groups[0].group_id} is tagged for "
                f"cluster {cluster!r} but not owned by {TOOL}; it is left alone.",
            )
        return None

    def find_by_name(self, cluster: str, vpc_id: str | None) -> Group | None:
        filters = [{"Name": "group-name", "Values": [group_name(cluster)]}]
        if vpc_id:
            filters.append({"Name": "vpc-id", "Values": [vpc_id]})
        groups = self._describe(Filters=filters)
        return groups[0] if groups else None

    def refuse_foreign_name(self, cluster: str, vpc_id: str | None) -> Group | None:
        """The group holding the cluster's name, if it is ours; a group of that name that is not
        ours raises :class:`ForeignGroupError`, since it must never be modified."""
        existing = self.find_by_name(cluster, vpc_id)
        if existing is not None and not existing.owned:
            raise ForeignGroupError(
                "ForeignGroup",
                f"a group named {group_name(cluster)} ({existing.group_id}) exists and is not "
                f"owned by {TOOL}; it is left alone. Rename the cluster or delete that group by "
                "hand.",
            )
        return existing

    def get(self, group_id: str) -> Group:
        """Read one group by id, retrying the NotFound that follows a fresh create."""
        found = self._retry_not_found(
            group_id,
            lambda: self._describe(passing=("InvalidGroup.NotFound",), GroupIds=[group_id]),
            f"reading group {group_id}",
        )
        if not found:
            raise _unexpected_answer(f"reading group {group_id}", "security group")
        return found[0]

    def rule_tags(self, group_id: str) -> dict[tuple, dict]:
        """Rule key -> the tags of that inbound rule (one ``DescribeSecurityGroupRules``): tells the
        rules this tool wrote (owner tag) from rules added by hand."""
        response = _call(
            f"reading the rules of {group_id}",
            self.ec2.describe_security_group_rules,
            Filters=[{"Name": "group-id", "Values": [group_id]}],
        )
        found: dict[tuple, dict] = {}
        for entry in response.get("SecurityGroupRules", []):
            rule = rule_from_entry(entry)
            if rule is not None:
                found[rule.key] = {t["Key"]: t["Value"] for t in entry.get("Tags", [])}
        return found

    def _describe(self, *, passing: tuple[str, ...] = (), **kwargs) -> list[Group]:
        response = _call(
            "reading security groups",
            self.ec2.describe_security_groups,
            passing=passing,
            **kwargs,
        )
        groups = [_group(g) for g in response.get("SecurityGroups", [])]
        for group in groups:
            self._read[group.group_id] = group
        return groups

    def create(self, cluster: str, vpc_id: str | None) -> str:
        """Create the cluster's group with its tags; a concurrent creator winning is not an error."""
        tags = [
            {"Key": TAG_OWNER, "Value": TOOL},
            {"Key": TAG_CLUSTER, "Value": cluster},
            {"Key": "Name", "Value": group_name(cluster)},
        ]
        kwargs = {
            "GroupName": group_name(cluster),
            "Description": f"Dask cluster {cluster} (managed by {TOOL})",
            "TagSpecifications": [{"ResourceType": "security-group", "Tags": tags}],
        }
        if vpc_id:
            kwargs["VpcId"] = vpc_id
        response = None
        try:
            response = _call(
                f"creating group {group_name(cluster)}",
                self.ec2.create_security_group,
                passing=("InvalidGroup.Duplicate",),
                **kwargs,
            )
        except ClientError:
            pass  # the name is taken: by a concurrent creator, or by a group that is not ours
        if response is None:
            existing = self.refuse_foreign_name(cluster, vpc_id)
            if existing is None:
                raise CloudError(
                    "InvalidGroup.Duplicate",
                    f"the name {group_name(cluster)} is taken but no group of that name can be "
                    "read; run apply again.",
                )
            return existing.group_id
        group_id = response.get("GroupId")
        if not isinstance(group_id, str):
            raise _unexpected_answer(f"creating group {group_name(cluster)}", "group id")
        self._created.add(group_id)
        return group_id

    def authorize(
        self, group_id: str, rules: list[Rule], me: Iterable[str] = (), override: str = ""
    ) -> None:
        """Add rules in one call, tagged as this tool's; if some already exist (a concurrent apply),
        add only the rest. ``me``: the networks 'me' stands for (tagged, see :data:`TAG_ME`);
        ``override``: the guardrail these rules override, and why (see :data:`TAG_OVERRIDE`)."""
        for _ in range(_CONFLICT_ROUNDS):
            if not rules:
                return
            try:
                self._retry_not_found(
                    group_id,
                    functools.partial(
                        _call,
                        f"adding rules to {group_id}",
                        self.ec2.authorize_security_group_ingress,
                        passing=("InvalidGroup.NotFound", "InvalidPermission.Duplicate"),
                        GroupId=group_id,
                        IpPermissions=permissions_from_rules(rules),
                        TagSpecifications=[_rule_tags(rules, me, override)],
                    ),
                    f"adding rules to {group_id}",
                )
            except ClientError:
                pass  # a duplicate: another writer added some of them meanwhile
            else:
                return
            present = {r.key for r in self.get(group_id).rules}
            rules = [r for r in rules if r.key not in present]
        if rules:
            raise CloudError(
                "ConcurrentChange",
                f"adding rules to {group_id} kept failing as "
                "duplicates of rules it does not hold (another writer?); run it again.",
            )

    def revoke(self, group_id: str, rules: list[Rule]) -> None:
        """Remove rules in one call; if some are already gone (a concurrent apply), remove the rest.

        Rules are named as the group's latest read spells them (see :attr:`Group.stored_as`). The
        call fails with ``InvalidPermission.NotFound`` unless the group held every rule; in AWS's
        default VPC it succeeds instead and lists what it did not remove as
        ``UnknownIpPermissions``. Either way the group is read again: rules it no longer holds were
        removed (by another writer, maybe), the rest are tried again. Rules still held after that
        were not removed, and that is an error naming them, never a removal reported as made."""
        unknown = False
        for _ in range(_CONFLICT_ROUNDS):
            if not rules:
                return
            stored_as = self._read[group_id].stored_as if group_id in self._read else None
            try:
                response = self._retry_not_found(
                    group_id,
                    functools.partial(
                        _call,
                        f"removing rules from {group_id}",
                        self.ec2.revoke_security_group_ingress,
                        passing=("InvalidGroup.NotFound", "InvalidPermission.NotFound"),
                        GroupId=group_id,
                        IpPermissions=permissions_from_rules(rules, stored_as),
                    ),
                    f"removing rules from {group_id}",
                )
            except ClientError:
                unknown = False
            else:
                unknown = bool(response.get("UnknownIpPermissions"))
                if not unknown:
                    return
            present = {r.key for r in self.get(group_id).rules}
            rules = [r for r in rules if r.key in present]
        if rules and unknown:
            raise CloudError(
                "UnknownIpPermissions",
                f"AWS answered the removal of {_listing(rules)} from {group_id} as done but listed "
                "them as unknown permissions, and the group still holds them: they were not "
                "removed. Remove them in the EC2 console, then run apply again.",
            )
        if rules:
            raise CloudError(
                "ConcurrentChange",
                f"removing rules from {group_id} kept failing as "
                "not found while the group still holds them; run it again.",
            )

    def update_descriptions(self, group_id: str, rules: list[Rule]) -> None:
        """Give existing rules new descriptions in one call.

        ``UpdateSecurityGroupRuleDescriptionsIngress`` answers only "true" (moto: nothing at all, and
        it silently skips rules from a security group), so only a read can say what the group now
        says; an apply makes that read after its writes."""
        stored_as = self._read[group_id].stored_as if group_id in self._read else None
        _call(
            f"updating rule descriptions of {group_id}",
            self.ec2.update_security_group_rule_descriptions_ingress,
            GroupId=group_id,
            IpPermissions=permissions_from_rules(rules, stored_as, empty_descriptions=True),
        )

    def delete(self, group_id: str) -> bool:
        """Delete a group; False when it was already gone."""
        try:
            _call(
                f"deleting group {group_id}",
                self.ec2.delete_security_group,
                passing=("InvalidGroup.NotFound",),
                GroupId=group_id,
            )
        except ClientError:
            return False
        return True

    def instances(self, group_id: str) -> list[dict]:
        """Running instances that use the group (for the scheduler's address)."""
        response = _call(
            f"listing instances of {group_id}",
            self.ec2.describe_instances,
            Filters=[
                {"Name": "instance.group-id", "Values": [group_id]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ],
        )
        return [i for r in response.get("Reservations", []) for i in r.get("Instances", [])]

    def _retry_not_found(self, group_id: str, call, doing: str):
        """Retry ``InvalidGroup.NotFound`` for a group this object just created: AWS may not see it
        for a few seconds (eventual consistency), and botocore does not retry that code. For any other
        group (or a rule naming a group id that does not exist) the error is reported at once.
        ``call`` lets that code (and any other it is told to let pass) through as a ClientError."""
        delays = _NOT_FOUND_RETRIES if group_id in self._created else ()
        for delay in (*delays, None):
            try:
                return call()
            except ClientError as error:
                if _code(error) != "InvalidGroup.NotFound":
                    raise
                if delay is None:
                    failure = cloud_error(error, doing)
                    break
            time.sleep(delay)
        raise failure


def _listing(rules: list[Rule]) -> str:
    shown = ", ".join(str(r) for r in rules[:5])
    return shown + (f" and {len(rules) - 5} more" if len(rules) > 5 else "")


def _unexpected_answer(doing: str, missing: str) -> CloudError:
    return CloudError(
        "InvalidResponse",
        f"{doing} failed: the answer held no {missing} (not an AWS answer? a proxy in between?); "
        "check the network and HTTPS_PROXY, then run it again.",
    )


# --------------------------------------------------------------------------------------------------
# Account store (SSM Parameter Store)


class AccountStore:
    """Account-wide defaults in one SSM String parameter holding JSON in Coiled's shape."""

    def __init__(self, connection: Connection, name: str):
        self.connection = connection
        self.name = name
        self.ssm = client("ssm", connection)

    def load(self) -> dict | None:
        doing = f"reading account defaults {self.name}"
        try:
            response = _call(
                doing, self.ssm.get_parameter, passing=("ParameterNotFound",), Name=self.name
            )
        except ClientError:
            return None
        value = (response.get("Parameter") or {}).get("Value")
        if not isinstance(value, str):
            raise _unexpected_answer(doing, "parameter value")
        return self._parse(value)

    def _parse(self, text: str) -> dict:
        """The parameter's JSON, strictly: bounded in size and depth, no key twice, an object. A
        parameter edited by hand in the console that breaks these is an error, never ignored."""
        from ..strict_yaml import StrictYAMLError, check_depth, check_size, excerpt

        where = f"parameter {self.name}"

        def unique(pairs):
            keys = [key for key, _ in pairs]
            for key in keys:
                if keys.count(key) > 1:
                    raise StrictYAMLError(f"{where} has the key {excerpt(key)} twice; keep one.")
            return dict(pairs)

        try:
            check_size(text, where)
            check_depth(text, where)
            value = json.loads(text, object_pairs_hook=unique)
        except StrictYAMLError as error:
            raise CloudError(
                "InvalidAccountDefaults",
                f"{str(error).rstrip('.')}; set it again with set_backend_options().",
            ) from None
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise CloudError(
                "InvalidAccountDefaults",
                f"{where} does not hold a JSON object; set it again with set_backend_options().",
            )
        return value

    def store(self, options: dict) -> None:
        _call(
            f"writing account defaults {self.name}",
            self.ssm.put_parameter,
            Name=self.name,
            Value=json.dumps(options, sort_keys=True),
            Type="String",
            Overwrite=True,
            Description=f"Account-wide Dask cluster firewall defaults ({TOOL})",
        )

    def delete(self) -> bool:
        try:
            _call(
                f"deleting account defaults {self.name}",
                self.ssm.delete_parameter,
                passing=("ParameterNotFound",),
                Name=self.name,
            )
        except ClientError:
            return False
        return True
