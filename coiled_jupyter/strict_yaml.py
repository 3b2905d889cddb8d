"""One strict reader for every YAML or JSON text a person or a file gives us.

A firewall tool must never turn what was typed into a different value, and never hang a kernel on a
pasted document. PyYAML's ``safe_load`` implements YAML 1.1, which reads ``0022`` as 18 (octal),
``1:30`` as 90 (sexagesimal), ``0x1f`` as 31, ``on``/``yes`` as true, keeps the last of two equal keys,
and expands aliases without bound (a "billion laughs" document of a few hundred bytes becomes
gigabytes). This reader uses PyYAML's scanner, parser and composer, and replaces the rest:

* YAML 1.2 core schema, stricter: plain scalars are ``null``/``~``, ``true``/``false``, decimal
  integers, floats, or text. A leading zero (``0022``), hex, octal or binary numbers are refused with a
  sentence rather than read in any base; ``yes``, ``on``, ``1:30`` and dates stay text.
* Duplicate keys are refused (``-`` and ``_`` count as the same, as in Dask's config keys).
* Anchors, aliases and explicit tags (``!!python/...``, ``!!int``) are refused.
* Limits are checked before the work grows: the size in bytes before anything is read, the nesting
  depth and the number of nodes while composing (the composer is recursive and would otherwise end in
  ``RecursionError``), and digits per number before ``int()``.

Every refusal is one sentence with the line and column and at most :data:`EXCERPT` characters of the
input. :func:`load` reads a person's text (a magic line, a cell, a REST body) whole. :func:`load_keys`
reads a Dask config file, which may hold anything for other tools: only the keys we own are held to
these rules; the rest of the file must only be well-formed YAML within the limits.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass

from .errors import CoiledJupyterError

EXCERPT = 40


@dataclass(frozen=True)
class Limits:
    """How much one text may hold; each limit is checked before the work it bounds is done."""

    bytes: int
    depth: int
    nodes: int
    digits: int = 20


# A cell or a REST body: 64 KiB holds ~1,000 rules written out, far beyond the 1,000-rule quota
# ceiling of a security group. Depth 32: Coiled's deepest snippet is 5 levels.
TEXT_LIMITS = Limits(bytes=64 * 1024, depth=32, nodes=20_000)
# A Dask config file may hold other tools' settings too.
FILE_LIMITS = Limits(bytes=1024 * 1024, depth=64, nodes=200_000)


class StrictYAMLError(CoiledJupyterError, ValueError):
    """A text was refused: not valid, reinterpretable, or too large; nothing was read from it."""


def excerpt(value, limit: int = EXCERPT) -> str:
    """A short ``repr`` of a value from outside, for messages: never more than ``limit`` characters
    of it, however large (a 10 MB body must not come back in its error message)."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    shortener.maxlist = shortener.maxtuple = shortener.maxdict = shortener.maxset = 4
    shortener.maxlevel = 3
    text = shortener.repr(value)
    return text if len(text) <= 2 * limit else text[: 2 * limit] + "..."


def check_size(text: str, where: str, limits: Limits = TEXT_LIMITS) -> None:
    """Refuse a text over the size limit before any of it is read (a text with more characters
    than the limit has bytes is refused without being encoded)."""
    if len(text) > limits.bytes:
        of = f"{len(text):,} characters"
    elif len(text.encode("utf-8", "surrogatepass")) > limits.bytes:
        of = f"{len(text.encode('utf-8', 'surrogatepass')):,} bytes"
    else:
        return
    raise StrictYAMLError(
        f"{where} is {of}, more than the {limits.bytes // 1024} KiB this tool reads; "
        "shorten it (a rule list of this size cannot be a security group's rules)."
    )


def load(text: str, where: str, limits: Limits = TEXT_LIMITS):
    """A person's YAML or JSON text into Python values, by the rules in this module's docstring."""
    check_size(text, where, limits)
    check_depth(text, where, limits)
    loader = _Loader(text, where, limits, everywhere=True)
    node = loader.get_single_node()
    return None if node is None else loader.convert(node)


class NotAMapping:
    """Stands, in what :func:`load_keys` returns, for a value on the way to our keys that is neither
    a mapping nor null (``coiled: 5``): Dask's merge treats it as a value, so its place matters,
    its content does not."""

    def __repr__(self) -> str:
        return "NOT_A_MAPPING"


NOT_A_MAPPING = NotAMapping()


def load_keys(text: str, where: str, tree: dict, limits=FILE_LIMITS):
    """From a config file, only the keys in ``tree`` (nested names, ``{}`` where a value is read:
    ``{"coiled": {"backend-options": {"ingress": {}}}}``), as nested dicts with the file's own
    spellings, as Dask's reader sees them: YAML merge keys (``<<: *defaults``) and aliases on the
    way are followed as PyYAML does. The values at
    the end of a path are held to the strict rules; the rest of the file only to the limits. On the
    way, a null stays ``None`` and any other value that is not a mapping is :data:`NOT_A_MAPPING`.
    Keys match with ``-`` and ``_`` alike, as in Dask; a key on one of these paths given twice (or
    in both spellings) is refused, since which of the two Dask would use is not what the person can
    see."""
    check_size(text, where, limits)
    check_depth(text, where, limits)
    loader = _Loader(text, where, limits, everywhere=False)
    node = loader.get_single_node()
    if node is not None and not isinstance(node, loader.yaml.MappingNode):
        raise loader.refusal(
            "does not hold a mapping at the top, as Dask requires", node.start_mark
        )
    if node is None:
        return {}
    try:
        return loader.select(node, tree)
    except _Refused as refused:
        raise loader.refusal(refused.problem, refused.mark) from None


def check_value(value, where: str, limits: Limits = TEXT_LIMITS) -> None:
    """Refuse Python values (a notebook variable, an API argument) nested deeper or holding more
    values than a text may, before anything walks them recursively: ``json.dumps``, ``repr`` and
    ``copy`` end in ``RecursionError`` on a list nested a few thousand deep. Walked with a stack,
    so a value that holds itself is refused on its depth too."""
    stack = [(value, 1)]
    count = 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if depth > limits.depth:
            raise StrictYAMLError(
                f"{where} nests deeper than {limits.depth} levels; a rule list needs 3."
            )
        if count > limits.nodes:
            raise StrictYAMLError(
                f"{where} holds more than {limits.nodes:,} values; split it or shorten it."
            )
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for pair in item.items() for child in pair)
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend((child, depth + 1) for child in item)


def load_json(text: str | bytes, where: str, limits: Limits = TEXT_LIMITS):
    """A JSON text (a REST body, as text or UTF-8 bytes) into Python values, by this module's rules
    that apply to JSON: the size (of the bytes, before decoding) and the nesting depth checked
    before it is parsed (Python's parser recurses), no key twice in one object (``-`` and ``_``
    alike, as in YAML here), at most ``limits.digits`` digits per number, and no ``NaN`` or
    ``Infinity``. Python's ``json`` alone keeps the last of two keys, so
    ``{"cidr": "10.1.0.0/16", "cidr": "0.0.0.0/0"}`` would admit the world."""
    import json

    if isinstance(text, bytes):
        if len(text) > limits.bytes:
            raise StrictYAMLError(
                f"{where} is {len(text):,} bytes, more than the {limits.bytes // 1024} KiB this "
                "tool reads; shorten it."
            )
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise StrictYAMLError(
                f"{where} is not UTF-8 (byte {error.start + 1}); send JSON text."
            ) from None
    check_size(text, where, limits)
    check_depth(text, where, limits)

    def mapping(pairs):
        found: dict = {}
        seen: set = set()
        for key, value in pairs:
            if key.replace("_", "-") in seen:
                raise StrictYAMLError(
                    f"{where} has the key {excerpt(key)} twice in one object; keep one."
                )
            seen.add(key.replace("_", "-"))
            found[key] = value
        return found

    def number(kind):
        def parse(text: str):
            digits = sum(c.isdigit() for c in text)
            if digits > limits.digits:
                raise StrictYAMLError(
                    f"{where} has a number of {digits:,} digits ({excerpt(text, 12)}); no value "
                    f"here has more than {limits.digits}."
                )
            return kind(text)

        return parse

    def constant(name: str):
        raise StrictYAMLError(f"{where} has {name}, which is not a number; write a plain number.")

    try:
        return json.loads(
            text,
            object_pairs_hook=mapping,
            parse_int=number(int),
            parse_float=number(float),
            parse_constant=constant,
        )
    except json.JSONDecodeError as error:
        raise StrictYAMLError(
            f"{where} is not JSON ({error.msg} at line {error.lineno}, column {error.colno})."
        ) from None


_BRACKET = re.compile(r"[\[\]{}]")


def check_depth(text: str, where: str, limits: Limits = TEXT_LIMITS) -> None:
    """Refuse flow nesting (``[[[...``) deeper than the limit before the scanner sees it: PyYAML's
    scanner keeps every open bracket as a possible key and rechecks them all at each token, which
    takes seconds for a few thousand. Brackets inside quoted text count too: a text needs more than
    ``limits.depth`` of them open at once to be refused for that."""
    depth = 0
    for match in _BRACKET.finditer(text):
        if match.group() in "[{":
            depth += 1
            if depth > limits.depth:
                line = text.count("\n", 0, match.start()) + 1
                raise StrictYAMLError(
                    f"{where} nests brackets deeper than {limits.depth} levels at line {line}; "
                    "a rule list needs 3."
                )
        elif depth:
            depth -= 1


def _yaml():
    import yaml

    return yaml


# --------------------------------------------------------------------------------------------------
# Scalars: YAML 1.2 core schema, with the YAML 1.1 readings that differ refused by name

_NULL = re.compile(r"~|null|Null|NULL|")
_TRUE = re.compile(r"true|True|TRUE")
_FALSE = re.compile(r"false|False|FALSE")
_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")
_OTHER_BASE = re.compile(r"[-+]?0[xXoObB][0-9a-fA-F_]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INFINITY = re.compile(r"([-+]?)\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")


class _Refused(Exception):
    """Raised inside the loader with the problem and fix; becomes a StrictYAMLError sentence."""

    def __init__(self, problem: str, mark=None):
        self.problem = problem
        self.mark = mark


def _plain_scalar(value: str, mark, limits: Limits):
    if _NULL.fullmatch(value):
        return None
    if _TRUE.fullmatch(value):
        return True
    if _FALSE.fullmatch(value):
        return False
    if _OTHER_BASE.fullmatch(value):
        raise _Refused(
            f"has the number {excerpt(value)} in another base than 10; write it in decimal", mark
        )
    if _LEADING_ZERO.fullmatch(value):
        raise _Refused(
            f"has the number {excerpt(value)} with a leading zero, which YAML 1.1 reads as octal; "
            f"write {value.lstrip('+-').lstrip('0_') or '0'} (or quote it if it is text)",
            mark,
        )
    if _INT.fullmatch(value) or _FLOAT.fullmatch(value):
        digits = sum(c.isdigit() for c in value)
        if digits > limits.digits:
            raise _Refused(
                f"has a number of {digits:,} digits ({excerpt(value, 12)}); no value here has "
                f"more than {limits.digits}",
                mark,
            )
        return int(value) if _INT.fullmatch(value) else float(value)
    infinity = _INFINITY.fullmatch(value)
    if infinity:
        return float(f"{infinity.group(1)}inf")
    if _NAN.fullmatch(value):
        return float("nan")
    return value


# --------------------------------------------------------------------------------------------------
# The loader


def _loader_class():
    """PyYAML's pure-Python reader, scanner, parser and composer (imported on first use), with a
    composer that checks the limits and refuses anchors, aliases and tags as it goes."""
    global _LOADER_CLASS
    if _LOADER_CLASS is not None:
        return _LOADER_CLASS
    yaml = _yaml()
    from yaml.composer import Composer
    from yaml.events import AliasEvent
    from yaml.resolver import BaseResolver

    class BoundedComposer(Composer):
        def compose_node(self, parent, index):
            event = self.peek_event()
            shared = isinstance(event, AliasEvent) or event.anchor is not None
            if shared and self.everywhere:
                raise _Refused(_ANCHOR_PROBLEM, event.start_mark)
            if getattr(event, "tag", None) is not None and self.everywhere:
                raise _Refused(_tag_problem(event.tag), event.start_mark)
            self.depth += 1
            self.nodes += 1
            if self.depth > self.limits.depth:
                raise _Refused(
                    f"nests deeper than {self.limits.depth} levels; a rule list needs 3",
                    event.start_mark,
                )
            if self.nodes > self.limits.nodes:
                raise _Refused(
                    f"holds more than {self.limits.nodes:,} values; split it or shorten it",
                    event.start_mark,
                )
            try:
                node = super().compose_node(parent, index)
            finally:
                self.depth -= 1
            if shared:
                self.shared.add(id(node))
            return node

    class Loader(BoundedComposer, _event_source(), BaseResolver):
        """Events from libyaml when PyYAML was built with it (a 64 KiB body in 0.07 s instead of
        0.6 s), else from PyYAML's Python parser; composed and resolved here."""

        def __init__(self, stream):
            _event_source().__init__(self, stream)
            Composer.__init__(self)
            BaseResolver.__init__(self)

    _LOADER_CLASS = (Loader, yaml)
    return _LOADER_CLASS


_LOADER_CLASS = None


def _event_source():
    try:
        from yaml._yaml import CParser

        return CParser
    except ImportError:
        from yaml.parser import Parser
        from yaml.reader import Reader
        from yaml.scanner import Scanner

        class PythonParser(Reader, Scanner, Parser):
            def __init__(self, stream):
                Reader.__init__(self, stream)
                Scanner.__init__(self)
                Parser.__init__(self)

        return PythonParser


class _Loader:
    """One text being read: composes it within the limits, then converts nodes strictly."""

    def __init__(self, text: str, where: str, limits: Limits, *, everywhere: bool):
        loader_class, yaml = _loader_class()
        self.text = text
        self.where = where
        self.limits = limits
        self.yaml = yaml
        self.loader_class = loader_class
        self.everywhere = everywhere

    def get_single_node(self):
        """Compose the one document, within the limits; PyYAML's own errors become sentences."""
        try:
            self.loader = self.loader_class(self.text)
            self.loader.limits = self.limits
            self.loader.depth = 0
            self.loader.nodes = 0
            # Nodes with an anchor: convert() refuses them (an alias is the anchored node itself).
            self.loader.shared = set()
            # Refuse anchors and tags while composing; else (a config file, which may use them
            # outside our keys) only convert() refuses them, in the values it converts.
            self.loader.everywhere = self.everywhere
            return self.loader.get_single_node()
        except _Refused as refused:
            raise self.refusal(refused.problem, refused.mark) from None
        except self.yaml.YAMLError as error:
            raise self.refusal_from(error) from None

    # ----------------------------------------------------------------------------------------------

    def convert(self, node):
        """A composed node into Python values, refusing what the module's docstring lists."""
        try:
            return self._convert(node)
        except _Refused as refused:
            raise self.refusal(refused.problem, refused.mark) from None

    def _convert(self, node):
        yaml = self.yaml
        if id(node) in self.loader.shared:
            raise _Refused(_ANCHOR_PROBLEM, node.start_mark)
        if node.tag not in _DEFAULT_TAGS:
            raise _Refused(_tag_problem(node.tag), node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            if not node.style:  # plain: None from PyYAML's parser, "" from libyaml
                return _plain_scalar(node.value, node.start_mark, self.limits)
            return node.value
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(item) for item in node.value]
        mapping: dict = {}
        seen: dict = {}
        for key_node, value_node in node.value:
            if (
                isinstance(key_node, yaml.ScalarNode)
                and key_node.value == "<<"
                and not key_node.style
            ):
                raise _Refused(_MERGE_PROBLEM, key_node.start_mark)
            key = self._convert(key_node)
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise _Refused(
                    "has a list or mapping as a key; keys are names like 'ports'",
                    key_node.start_mark,
                )
            spelling = key.replace("_", "-") if isinstance(key, str) else key
            if spelling in seen:
                raise _Refused(
                    f"has the key {excerpt(key)} twice in one mapping (first at line "
                    f"{seen[spelling].line + 1}); keep one",
                    key_node.start_mark,
                )
            seen[spelling] = key_node.start_mark
            mapping[key] = self._convert(value_node)
        return mapping

    def select(self, node, tree: dict) -> dict:
        """The keys of ``tree`` (nested names; ``{}`` marks a value to read) found in the mapping
        ``node``, each under the file's spelling."""
        yaml = self.yaml
        found: dict = {}
        for name, below in tree.items():
            pair = self.find(node, name, frozenset())
            if pair is None:
                continue
            key_node, value_node = pair
            if not below:
                found[key_node.value] = self._convert(value_node)
            elif isinstance(value_node, yaml.MappingNode):
                found[key_node.value] = self.select(value_node, below)
            elif _is_null(value_node, yaml):
                found[key_node.value] = None
            else:
                found[key_node.value] = NOT_A_MAPPING
        return found

    def find(self, node, name: str, seen: frozenset):
        """The (key, value) nodes of ``name`` in the mapping ``node`` as PyYAML's reader resolves
        it: a key written in the mapping wins over one merged into it (``<<``). A key merged from
        two mappings is refused: PyYAML 6.0.4 takes the last one, the YAML merge spec and earlier
        versions the first. None if absent."""
        yaml = self.yaml
        if id(node) in seen:
            raise _Refused("has a merge key (<<) that includes its own mapping", node.start_mark)
        seen = seen | {id(node)}
        wanted = name.replace("_", "-")
        written = []
        merges = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.value == "<<" and not key_node.style:
                merges.append(value_node)
            elif key_node.value.replace("_", "-") == wanted:
                if written:
                    raise _Refused(
                        f"has the key {excerpt(key_node.value)} twice (first at line "
                        f"{written[0][0].start_mark.line + 1}); keep one",
                        key_node.start_mark,
                    )
                written.append((key_node, value_node))
        merged = []
        for value_node in merges:
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise _Refused(
                        "has a merge key (<<) whose value is not a mapping or a list of mappings",
                        source.start_mark,
                    )
                pair = self.find(source, name, seen)
                if pair is not None:
                    merged.append(pair)
        if len(merged) > 1:
            # Which one wins differs between PyYAML versions (6.0.4 takes the last listed).
            raise _Refused(
                f"merges {excerpt(name)} from {len(merged)} mappings (<<), and PyYAML versions "
                "disagree on which one Dask then uses; keep it in one",
                merged[-1][0].start_mark,
            )
        spellings = {key.value for key, _ in written + merged}
        if len(spellings) > 1:
            first, second = sorted(spellings)
            raise _Refused(
                f"has both {excerpt(first)} and {excerpt(second)} (one through a merge key <<), "
                "which Dask reads as one key; keep one spelling",
                (written + merged)[0][0].start_mark,
            )
        return (written + merged)[0] if written + merged else None

    # ----------------------------------------------------------------------------------------------

    def refusal(self, problem: str, mark=None) -> StrictYAMLError:
        at = ""
        if mark is not None:
            near = self._near(mark)
            near = f", near {excerpt(near)}" if near else ""
            at = f" (line {mark.line + 1}, column {mark.column + 1}{near})"
        return StrictYAMLError(f"{self.where} {problem}{at}.")

    def refusal_from(self, error) -> StrictYAMLError:
        """PyYAML's own syntax error as one sentence, with a hint for the usual cause."""
        if isinstance(error, self.yaml.reader.ReaderError):
            return StrictYAMLError(
                f"{self.where} has the character {_character(error.character)} at position "
                f"{error.position + 1}, which YAML does not allow; remove it."
            )
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "it is not valid YAML"
        return StrictYAMLError(
            f"{self.where} text could not be read{at}: {problem}; check the indentation and "
            "quote values that contain ':'."
        )

    def _near(self, mark) -> str:
        index = getattr(mark, "index", None)
        if index is None or not 0 <= index < len(self.text):
            return ""
        line_end = self.text.find("\n", index)
        end = min(index + EXCERPT, line_end if line_end != -1 else len(self.text))
        return self.text[index:end].strip()


def _is_null(node, yaml) -> bool:
    return (
        isinstance(node, yaml.ScalarNode) and not node.style and bool(_NULL.fullmatch(node.value))
    )


def _character(character) -> str:
    return repr(chr(character) if isinstance(character, int) else character)


_ANCHOR_PROBLEM = "uses an anchor (&) or alias (*); write each value out instead"
_MERGE_PROBLEM = "uses a merge key (<<) inside a value; write each value out instead"


def _tag_problem(tag: str) -> str:
    return f"has the tag {excerpt(tag)}; tags are not accepted, write plain values"


_DEFAULT_TAGS = (
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map",
)
