"""The effective rules in IT's own formats, and back.

IT asks "which ports, from where?" and wants the answer in its own tools. Each format here renders the
rules exactly (one resource, row or permission per rule) and reads back what it rendered, so an export
imported again gives the same rules: Terraform's ``aws_vpc_security_group_ingress_rule`` blocks (one
CIDR per resource, as Terraform's guidance has it), Coiled's ``backend_options={"ingress": [...]}``,
a port matrix as CSV or Markdown, and one AWS CLI command. A rule a format cannot carry (Coiled's
ingress opens TCP ports from CIDRs only) is left out and named, never dropped silently.

Pure functions over :class:`~coiled_jupyter.rules.Rule`: no cloud call; the session resolves the rules
(``me`` included) and names their origin and purposes.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .rules import IngressError, Rule, canonical, parse_ingress, to_coiled
from .strict_yaml import excerpt

FORMATS = ("terraform", "coiled", "csv", "markdown", "aws-cli")
# The port matrix's columns, in order; ``description`` makes the matrix read back exactly.
MATRIX_COLUMNS = ("port", "protocol", "source", "description", "purpose", "origin", "expiry")
_TERRAFORM_RESOURCE = "aws_vpc_security_group_ingress_rule"
_TERRAFORM_VARIABLE = "security_group_id"
_AWS_CLI_GROUP = "$SECURITY_GROUP_ID"

Purpose = Callable[[Rule], str]


@dataclass(frozen=True)
class Export:
    """One rendering: its ``text``, and ``lost``, one sentence per thing the format cannot carry
    (a rule left out, descriptions dropped)."""

    format: str
    text: str
    lost: tuple[str, ...] = ()


def check_format(value, *, importing: bool = False) -> str:
    """``value`` as one of :data:`FORMATS` (case ignored), or one sentence naming them."""
    word = value.strip().lower() if isinstance(value, str) else value
    if word in FORMATS:
        return word
    verb = "import" if importing else "export"
    raise IngressError([f"cannot {verb} format {excerpt(value)}; use one of {', '.join(FORMATS)}."])


def export(
    rules: Iterable[Rule],
    format: str,
    *,
    cluster: str,
    region: str,
    origin: str = "",
    purpose: Purpose = lambda rule: "",
    expiry: Callable[[Rule], str] = lambda rule: "",
) -> Export:
    """``rules`` (``me`` already resolved) rendered in ``format``."""
    rules = canonical(rules)
    format = check_format(format)
    if format == "terraform":
        return Export(format, _terraform(rules, cluster))
    if format == "coiled":
        return _coiled(rules, cluster)
    if format == "aws-cli":
        return Export(format, _aws_cli(rules, region))
    matrix = [
        {
            "port": rule.ports,
            "protocol": rule.protocol,
            "source": rule.source,
            "description": rule.description,
            "purpose": purpose(rule),
            "origin": origin,
            "expiry": expiry(rule),
        }
        for rule in rules
    ]
    return Export(format, _csv(matrix) if format == "csv" else _markdown(matrix))


def import_rules(text: str, format: str, *, where: str = "the import") -> list[Rule]:
    """The rules an export in ``format`` holds, validated as if a person had typed them."""
    format = check_format(format, importing=True)
    if not isinstance(text, str):
        raise IngressError([f"{where} must be text, not {type(text).__name__}."])
    reader = {
        "terraform": _read_terraform,
        "coiled": _read_coiled,
        "csv": _read_csv,
        "markdown": _read_markdown,
        "aws-cli": _read_aws_cli,
    }[format]
    return canonical(parse_ingress(reader(text, where), where=where))


# --------------------------------------------------------------------------------------------------
# Terraform


def _hcl_string(value: str) -> str:
    """A quoted HCL string; ``${`` doubled, so that a description is never a template (AWS refuses
    the other template character, ``%``, and the quote and backslash in descriptions)."""
    return '"' + value.replace("${", "$${") + '"'


def _resource_name(cluster: str, rule: Rule, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]+", "_", f"{cluster}_{rule.protocol}_{rule.ports}_{rule.source}")
    base = base.strip("_") or "rule"
    if not re.match(r"[A-Za-z_]", base):
        base = f"rule_{base}"
    name, number = base, 2
    while name in taken:
        name, number = f"{base}_{number}", number + 1
    taken.add(name)
    return name


def _terraform(rules: list[Rule], cluster: str) -> str:
    blocks = [
        f"# Inbound rules of the Dask cluster {cluster!r}, exported by coiled_jupyter.",
        f'variable "{_TERRAFORM_VARIABLE}" {{',
        "  type        = string",
        f"  description = {_hcl_string(f'The security group of the Dask cluster {cluster}')}",
        "}",
    ]
    taken: set[str] = set()
    for rule in rules:
        fields = [
            ("security_group_id", f"var.{_TERRAFORM_VARIABLE}"),
            ("ip_protocol", _hcl_string(rule.protocol)),
            ("from_port", str(rule.from_port)),
            ("to_port", str(rule.to_port)),
        ]
        source_field = {
            "ipv4": "cidr_ipv4",
            "ipv6": "cidr_ipv6",
            "group": "referenced_security_group_id",
        }
        fields.append((source_field[rule.source_kind], _hcl_string(rule.source)))
        if rule.description:
            fields.append(("description", _hcl_string(rule.description)))
        width = max(len(key) for key, _ in fields)
        name = _resource_name(cluster, rule, taken)
        blocks.append("")
        blocks.append(f'resource "{_TERRAFORM_RESOURCE}" "{name}" {{')
        blocks.extend(f"  {key.ljust(width)} = {value}" for key, value in fields)
        blocks.append("}")
    return "\n".join(blocks) + "\n"


_HCL_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def _hcl_value(value, where: str) -> str:
    """An HCL string literal as python-hcl2 returns it (quotes kept) back to its text; an expression
    or a template is refused, since its value is not in the file."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise IngressError([f"{where} is {excerpt(value)}, not a string or a number."])
    if isinstance(value, int):
        return str(value)
    if not (len(value) >= 2 and value.startswith('"') and value.endswith('"')):
        raise IngressError(
            [f"{where} is the expression {excerpt(value)}; write the value itself to import it."]
        )
    out, body, index = [], value[1:-1], 0
    while index < len(body):
        char = body[index]
        pair = body[index : index + 2]
        if char == "\\" and index + 1 < len(body) and body[index + 1] in _HCL_ESCAPES:
            out.append(_HCL_ESCAPES[body[index + 1]])
            index += 2
        elif pair in ("$$", "%%") and body[index + 2 : index + 3] == "{":
            out.append(char)
            index += 2
        elif pair in ("${", "%{"):
            raise IngressError(
                [
                    f"{where} holds the template {excerpt(value)}; write the value itself to import it."
                ]
            )
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _read_terraform(text: str, where: str) -> list[dict]:
    import hcl2
    from hcl2.utils import SerializationOptions

    try:
        tree = hcl2.loads(text, serialization_options=SerializationOptions(with_comments=False))
    except Exception as error:  # lark's many parse errors: one sentence, the position kept
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise IngressError([f"{where} is not valid HCL: {excerpt(first)}."]) from None
    items = []
    for block in tree.get("resource", []):
        for kind, named in block.items():
            if kind.strip('"') != _TERRAFORM_RESOURCE:
                continue
            for name, body in named.items():
                items.append(_terraform_rule(body, f"{where}: resource {name.strip(chr(34))}"))
    if not items:
        raise IngressError([f"{where} holds no {_TERRAFORM_RESOURCE} resource."])
    return items


def _terraform_rule(body: dict, where: str) -> dict:
    known = {
        "security_group_id",
        "ip_protocol",
        "from_port",
        "to_port",
        "cidr_ipv4",
        "cidr_ipv6",
        "referenced_security_group_id",
        "description",
        "__is_block__",
    }
    unknown = sorted(set(body) - known)
    if unknown:
        raise IngressError(
            [f"{where} sets {', '.join(unknown)}, which this tool cannot carry into a rule."]
        )
    sources = [k for k in ("cidr_ipv4", "cidr_ipv6", "referenced_security_group_id") if k in body]
    if len(sources) != 1:
        raise IngressError(
            [f"{where} needs exactly one of cidr_ipv4, cidr_ipv6 or referenced_security_group_id."]
        )
    protocol = _hcl_value(body.get("ip_protocol", '""'), f"{where} ip_protocol")
    low = _hcl_value(body.get("from_port", '""'), f"{where} from_port")
    high = _hcl_value(body.get("to_port", '""'), f"{where} to_port")
    item: dict = {
        "ports": [low if low == high else f"{low}-{high}"],
        "cidr": _hcl_value(body[sources[0]], f"{where} {sources[0]}"),
        "protocol": protocol,
    }
    if "description" in body:
        item["description"] = _hcl_value(body["description"], f"{where} description")
    return item


# --------------------------------------------------------------------------------------------------
# Coiled


def _coiled(rules: list[Rule], cluster: str) -> Export:
    carried, lost = [], []
    for rule in rules:
        try:
            to_coiled([rule], client=True)
        except IngressError as error:
            lost.extend(error.problems)
        else:
            carried.append(rule)
    described = sum(1 for rule in carried if rule.description)
    if described:
        lost.append(
            f"Coiled's ingress has no descriptions, so those of {described} "
            f"rule{'s' if described > 1 else ''} are not in this export."
        )
    ingress = json.dumps(to_coiled(carried, client=True))
    lines = [
        f"# coiled.Cluster(...) keyword arguments for the Dask cluster {cluster!r}, "
        "exported by coiled_jupyter.",
        f'backend_options={{"ingress": {ingress}}}',
    ]
    lines.extend(f"# not carried: {sentence}" for sentence in lost)
    return Export("coiled", "\n".join(lines) + "\n", tuple(lost))


def _read_coiled(text: str, where: str) -> list:
    """``backend_options={"ingress": [...]}`` (or the ingress list alone) as Python literals."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    body = re.sub(r"^\s*backend_options\s*=", "", body.strip())
    try:
        value = ast.literal_eval(body.strip().rstrip(","))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise IngressError(
            [
                f'{where} is not Coiled\'s form: write backend_options={{"ingress": [...]}} '
                "or the ingress list, as Python literals."
            ]
        ) from None
    if isinstance(value, dict):
        if set(value) != {"ingress"}:
            raise IngressError(
                [f"{where} holds backend options other than ingress: {', '.join(map(str, value))}."]
            )
        value = value["ingress"]
    return value


# --------------------------------------------------------------------------------------------------
# Port matrix: CSV and Markdown


def _csv(matrix: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=MATRIX_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(matrix)
    return out.getvalue()


def _markdown_cell(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|")


def _markdown(matrix: list[dict]) -> str:
    lines = [
        "| " + " | ".join(MATRIX_COLUMNS) + " |",
        "|" + "|".join("---" for _ in MATRIX_COLUMNS) + "|",
    ]
    lines.extend(
        "| " + " | ".join(_markdown_cell(row[c]) for c in MATRIX_COLUMNS) + " |" for row in matrix
    )
    return "\n".join(lines) + "\n"


def _matrix_rule(row: dict, where: str) -> dict:
    missing = [c for c in ("port", "protocol", "source") if not row.get(c)]
    if missing:
        raise IngressError([f"{where} has no {', '.join(missing)}."])
    item: dict = {
        "ports": [row["port"].strip()],
        "cidr": row["source"].strip(),
        "protocol": row["protocol"].strip(),
    }
    if row.get("description"):
        item["description"] = row["description"]
    return item


def _read_csv(text: str, where: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    if not reader.fieldnames or not {"port", "protocol", "source"} <= set(reader.fieldnames):
        raise IngressError(
            [f"{where} needs a header row with the columns port, protocol and source."]
        )
    return [_matrix_rule(row, f"{where} row {n}") for n, row in enumerate(reader, start=2)]


_MARKDOWN_SPLIT = re.compile(r"(?<!\\)\|")


def _markdown_cells(line: str) -> list[str]:
    cells = _MARKDOWN_SPLIT.split(line.strip().strip("|") if line.strip() != "|" else "")
    return [re.sub(r"\\([\\|])", r"\1", cell.strip()) for cell in cells]


def _read_markdown(text: str, where: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        raise IngressError([f"{where} holds no Markdown table."])
    header = _markdown_cells(lines[0])
    if not {"port", "protocol", "source"} <= set(header):
        raise IngressError(
            [f"{where} needs a header row with the columns port, protocol and source."]
        )
    rows = []
    for number, line in enumerate(lines[2:], start=3):
        cells = _markdown_cells(line)
        if len(cells) != len(header):
            raise IngressError(
                [f"{where} line {number} has {len(cells)} cells, not {len(header)}."]
            )
        rows.append(_matrix_rule(dict(zip(header, cells)), f"{where} line {number}"))
    return rows


# --------------------------------------------------------------------------------------------------
# AWS CLI


def _permission(rule: Rule) -> dict:
    permission: dict = {
        "IpProtocol": rule.protocol,
        "FromPort": rule.from_port,
        "ToPort": rule.to_port,
    }
    described = {"Description": rule.description} if rule.description else {}
    if rule.source_kind == "group":
        permission["UserIdGroupPairs"] = [{"GroupId": rule.source, **described}]
    elif rule.source_kind == "ipv6":
        permission["Ipv6Ranges"] = [{"CidrIpv6": rule.source, **described}]
    else:
        permission["IpRanges"] = [{"CidrIp": rule.source, **described}]
    return permission


def _aws_cli(rules: list[Rule], region: str) -> str:
    permissions = json.dumps([_permission(rule) for rule in rules], separators=(",", ":"))
    return (
        "# Set SECURITY_GROUP_ID to the cluster's security group first; one call, all or nothing.\n"
        "aws ec2 authorize-security-group-ingress "
        f'--region {shlex.quote(region)} --group-id "{_AWS_CLI_GROUP}" \\\n'
        f"  --ip-permissions {shlex.quote(permissions)}\n"
    )


def _read_aws_cli(text: str, where: str) -> list[dict]:
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    try:
        words = shlex.split(body.replace("\\\n", " "))
    except ValueError as error:
        raise IngressError([f"{where} is not a shell command: {error}."]) from None
    if "--ip-permissions" not in words or words.index("--ip-permissions") + 1 >= len(words):
        raise IngressError([f"{where} has no --ip-permissions JSON."])
    try:
        permissions = json.loads(words[words.index("--ip-permissions") + 1])
    except (ValueError, RecursionError):
        raise IngressError([f"{where}: --ip-permissions is not JSON."]) from None
    if not isinstance(permissions, list):
        raise IngressError([f"{where}: --ip-permissions is not a list."])
    return [item for permission in permissions for item in _permission_rules(permission, where)]


def _permission_rules(permission, where: str) -> list[dict]:
    if not isinstance(permission, dict):
        raise IngressError([f"{where}: a permission is {excerpt(permission)}, not an object."])
    protocol = permission.get("IpProtocol")
    low, high = permission.get("FromPort"), permission.get("ToPort")
    ports = [low if low == high else f"{low}-{high}"]
    sources = [
        (entry.get(key), entry.get("Description"))
        for field, key in (
            ("IpRanges", "CidrIp"),
            ("Ipv6Ranges", "CidrIpv6"),
            ("UserIdGroupPairs", "GroupId"),
        )
        for entry in permission.get(field, [])
        if isinstance(entry, dict)
    ]
    items = []
    for source, description in sources:
        item: dict = {"ports": ports, "cidr": source, "protocol": protocol}
        if description:
            item["description"] = description
        items.append(item)
    return items
