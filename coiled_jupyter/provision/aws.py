"""EC2 security groups and the SSM account store, through boto3. The only module that speaks to AWS.

Every call goes through one boto3 client per (region, endpoint, credentials), created once and reused
(creating one costs ~0.2 s), with botocore's ``standard`` retry mode so that throttling
(``RequestLimitExceeded``) is retried. Errors are matched on their codes, never on messages, and turned
into :class:`CloudError`, which says what to do and never carries credentials.
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
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ..errors import CloudError, ForeignGroupError
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


def cloud_error(error: Exception, doing: str) -> CloudError:
    """A readable CloudError for a botocore failure, without the botocore traceback or secrets."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "Unknown")
        message = error.response.get("Error", {}).get("Message", "")
        advice = _ADVICE.get(code, "")
        return CloudError(code, f"{doing} failed: {message}" + (f"; {advice}" if advice else ""))
    if isinstance(error, NoCredentialsError):
        return CloudError(
            "NoCredentials",
            f"{doing} failed: no AWS credentials were found; configure "
            "a profile (aws configure) or use the sandbox backend.",
        )
    return CloudError(type(error).__name__, f"{doing} failed: {error}")


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
    """The region of the boto3 session (AWS_DEFAULT_REGION, the profile's ~/.aws/config)."""
    return boto3.session.Session().region_name


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
            session = boto3.session.Session(
                profile_name=connection.profile,
                aws_access_key_id=key_id and key_id.reveal(),
                aws_secret_access_key=secret and secret.reveal(),
                region_name=connection.region,
            )
            cached = session.client(
                service,
                endpoint_url=connection.endpoint_url,
                config=Config(
                    retries={"mode": "standard", "max_attempts": 5},
                    connect_timeout=5,
                    read_timeout=30,
                    proxies={"http": None, "https": None} if connection.direct else None,
                ),
            )
            _clients[key] = cached
        return cached


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
    try:
        return client("sts", connection).get_caller_identity()["Arn"]
    except (ClientError, BotoCoreError) as error:
        raise cloud_error(error, "asking AWS who these credentials are") from None


class SecurityGroups:
    """Find, create, change and delete the security groups of clusters in one region.

    It keeps, per group, the group as last known: the latest read, with every write confirmed since
    applied to it (:meth:`latest`), so that an apply reports the group it leaves without reading it
    again. Writes are verified from the responses: an authorize lists the ``SecurityGroupRules`` it
    stored, a revoke succeeds only for rules the group held (``InvalidPermission.NotFound`` else).
    """

    def __init__(self, connection: Connection):
        self.connection = connection
        self.ec2 = client("ec2", connection)
        # Group id -> the group as last known (read, then changed by our confirmed writes).
        self._latest: dict[str, Group] = {}
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
        return self._retry_not_found(
            group_id, lambda: self._describe(GroupIds=[group_id])[0], f"reading group {group_id}"
        )

    def latest(self, group_id: str) -> Group:
        """The group as last read, with the writes confirmed since: no call."""
        return self._latest[group_id]

    def rule_tags(self, group_id: str) -> dict[tuple, dict]:
        """Rule key -> the tags of that inbound rule (one ``DescribeSecurityGroupRules``): tells the
        rules this tool wrote (owner tag) from rules added by hand."""
        try:
            response = self.ec2.describe_security_group_rules(
                Filters=[{"Name": "group-id", "Values": [group_id]}]
            )
        except (ClientError, BotoCoreError) as error:
            raise cloud_error(error, f"reading the rules of {group_id}") from None
        found: dict[tuple, dict] = {}
        for entry in response.get("SecurityGroupRules", []):
            rule = rule_from_entry(entry)
            if rule is not None:
                found[rule.key] = {t["Key"]: t["Value"] for t in entry.get("Tags", [])}
        return found

    def _describe(self, **kwargs) -> list[Group]:
        try:
            response = self.ec2.describe_security_groups(**kwargs)
        except ClientError as error:
            if _code(error) == "InvalidGroup.NotFound" and "GroupIds" in kwargs:
                raise
            raise cloud_error(error, "reading security groups") from None
        except BotoCoreError as error:
            raise cloud_error(error, "reading security groups") from None
        groups = [_group(g) for g in response.get("SecurityGroups", [])]
        for group in groups:
            self._latest[group.group_id] = group
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
        try:
            response = self.ec2.create_security_group(**kwargs)
        except ClientError as error:
            if _code(error) != "InvalidGroup.Duplicate":
                raise cloud_error(error, f"creating group {group_name(cluster)}") from None
        else:
            group_id = response["GroupId"]
            self._created.add(group_id)
            # The ARN (arn:aws:ec2:region:account:security-group/sg-...) names the account.
            arn = response.get("SecurityGroupArn", "").split(":")
            self._latest[group_id] = Group(
                group_id=group_id,
                name=group_name(cluster),
                vpc_id=vpc_id or "",
                account_id=arn[4] if len(arn) > 5 else "",
                tags={t["Key"]: t["Value"] for t in tags},
                rules=(),
            )
            return group_id
        existing = self.refuse_foreign_name(cluster, vpc_id)
        if existing is None:
            raise CloudError(
                "InvalidGroup.Duplicate",
                f"the name {group_name(cluster)} is taken but no group of that name can be read; "
                "run apply again.",
            )
        return existing.group_id

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
                response = self._retry_not_found(
                    group_id,
                    functools.partial(
                        self.ec2.authorize_security_group_ingress,
                        GroupId=group_id,
                        IpPermissions=permissions_from_rules(rules),
                        TagSpecifications=[_rule_tags(rules, me, override)],
                    ),
                    f"adding rules to {group_id}",
                )
            except ClientError as error:
                if _code(error) != "InvalidPermission.Duplicate":
                    raise cloud_error(error, f"adding rules to {group_id}") from None
            else:
                self._stored(group_id, rules, response)
                return
            present = {r.key for r in self.get(group_id).rules}
            rules = [r for r in rules if r.key not in present]
        if rules:
            raise CloudError(
                "ConcurrentChange",
                f"adding rules to {group_id} kept failing as "
                "duplicates of rules it does not hold (another writer?); run it again.",
            )

    def _stored(self, group_id: str, sent: list[Rule], response: dict) -> None:
        """Take the rules an authorize stored into the group as last known, as the response lists
        them (AWS lists every rule of the batch, which it applies all or nothing).

        A listed rule that was not sent means the cloud stored something else than asked (e.g. a
        network spelled another way): then the group is read back, since only a read can say what
        it holds. moto 5.2.5 lists only the rules of the call's last ``IpPermissions`` entry (its
        handler keeps one loop variable); a sent rule the response leaves out is taken as stored
        on the strength of the call's success, which the server answers only once every entry
        was stored.
        """
        listed = [rule_from_entry(e) for e in response.get("SecurityGroupRules", [])]
        sent_keys = {r.key for r in sent}
        if any(r is None or r.key not in sent_keys for r in listed):
            self.get(group_id)
            return
        group = self._latest[group_id]
        self._latest[group_id] = group.with_rules([*group.rules, *sent, *listed])

    def revoke(self, group_id: str, rules: list[Rule]) -> None:
        """Remove rules in one call; if some are already gone (a concurrent apply), remove the rest.

        Rules are named as the group's latest read spells them (see :attr:`Group.stored_as`). The
        call fails with ``InvalidPermission.NotFound`` unless the group held every rule, so its
        success confirms the removal."""
        for _ in range(_CONFLICT_ROUNDS):
            if not rules:
                return
            stored_as = self._latest[group_id].stored_as if group_id in self._latest else None
            try:
                response = self._retry_not_found(
                    group_id,
                    functools.partial(
                        self.ec2.revoke_security_group_ingress,
                        GroupId=group_id,
                        IpPermissions=permissions_from_rules(rules, stored_as),
                    ),
                    f"removing rules from {group_id}",
                )
            except ClientError as error:
                if _code(error) != "InvalidPermission.NotFound":
                    raise cloud_error(error, f"removing rules from {group_id}") from None
            else:
                if response.get("UnknownIpPermissions"):
                    # AWS's default VPC answers success for rules it did not hold: read what is left.
                    self.get(group_id)
                    return
                gone = {r.key for r in rules}
                group = self._latest[group_id]
                self._latest[group_id] = group.with_rules(
                    r for r in group.rules if r.key not in gone
                )
                return
            present = {r.key for r in self.get(group_id).rules}
            rules = [r for r in rules if r.key in present]
        if rules:
            raise CloudError(
                "ConcurrentChange",
                f"removing rules from {group_id} kept failing as "
                "not found while the group still holds them; run it again.",
            )

    def update_descriptions(self, group_id: str, rules: list[Rule]) -> Group:
        """Give existing rules new descriptions in one call, then read the group back.

        ``UpdateSecurityGroupRuleDescriptionsIngress`` answers only "true" (moto: nothing at all, and
        it silently skips rules from a security group), so its response cannot confirm what the
        group now says: this is the one write that is read back."""
        stored_as = self._latest[group_id].stored_as if group_id in self._latest else None
        try:
            self.ec2.update_security_group_rule_descriptions_ingress(
                GroupId=group_id,
                IpPermissions=permissions_from_rules(rules, stored_as, empty_descriptions=True),
            )
        except (ClientError, BotoCoreError) as error:
            raise cloud_error(error, f"updating rule descriptions of {group_id}") from None
        return self.get(group_id)

    def delete(self, group_id: str) -> bool:
        """Delete a group; False when it was already gone."""
        try:
            self.ec2.delete_security_group(GroupId=group_id)
        except ClientError as error:
            if _code(error) == "InvalidGroup.NotFound":
                return False
            raise cloud_error(error, f"deleting group {group_id}") from None
        return True

    def instances(self, group_id: str) -> list[dict]:
        """Running instances that use the group (for the scheduler's address)."""
        try:
            response = self.ec2.describe_instances(
                Filters=[
                    {"Name": "instance.group-id", "Values": [group_id]},
                    {"Name": "instance-state-name", "Values": ["pending", "running"]},
                ]
            )
        except (ClientError, BotoCoreError) as error:
            raise cloud_error(error, f"listing instances of {group_id}") from None
        return [i for r in response.get("Reservations", []) for i in r.get("Instances", [])]

    def _retry_not_found(self, group_id: str, call, doing: str):
        """Retry ``InvalidGroup.NotFound`` for a group this object just created: AWS may not see it
        for a few seconds (eventual consistency), and botocore does not retry that code. For any other
        group (or a rule naming a group id that does not exist) the error is reported at once."""
        delays = _NOT_FOUND_RETRIES if group_id in self._created else ()
        for delay in (*delays, None):
            try:
                return call()
            except ClientError as error:
                if _code(error) != "InvalidGroup.NotFound":
                    raise
                if delay is None:
                    raise cloud_error(error, doing) from None
                time.sleep(delay)
            except BotoCoreError as error:
                raise cloud_error(error, doing) from None


# --------------------------------------------------------------------------------------------------
# Account store (SSM Parameter Store)


class AccountStore:
    """Account-wide defaults in one SSM String parameter holding JSON in Coiled's shape."""

    def __init__(self, connection: Connection, name: str):
        self.connection = connection
        self.name = name
        self.ssm = client("ssm", connection)

    def load(self) -> dict | None:
        try:
            response = self.ssm.get_parameter(Name=self.name)
        except ClientError as error:
            if _code(error) == "ParameterNotFound":
                return None
            raise cloud_error(error, f"reading account defaults {self.name}") from None
        except BotoCoreError as error:
            raise cloud_error(error, f"reading account defaults {self.name}") from None
        return self._parse(response["Parameter"]["Value"])

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
        try:
            self.ssm.put_parameter(
                Name=self.name,
                Value=json.dumps(options, sort_keys=True),
                Type="String",
                Overwrite=True,
                Description=f"Account-wide Dask cluster firewall defaults ({TOOL})",
            )
        except (ClientError, BotoCoreError) as error:
            raise cloud_error(error, f"writing account defaults {self.name}") from None

    def delete(self) -> bool:
        try:
            self.ssm.delete_parameter(Name=self.name)
        except ClientError as error:
            if _code(error) == "ParameterNotFound":
                return False
            raise cloud_error(error, f"deleting account defaults {self.name}") from None
        return True
