"""Settings: the layers they come from, their resolution with origin, and reading the Dask config.

Layers, weakest to strongest (DESIGN.md "Words"): built-in default, account store, Dask config (YAML
files, then ``DASK_COILED__*`` environment variables), notebook session, one cluster's
``backend_options``. The strongest layer that sets ``ingress`` wins for ``ingress`` as a whole (lists
are replaced, not merged, as in Coiled); ``use_scheduler_public_ip`` wins on its own.

The Dask config layer is read afresh from the files and the environment on every resolution, so a file
saved a moment ago, or another kernel's change to it, shows at once. The session layer is kept per
cluster. The default cluster's session toggle is also set in this kernel's Dask config
(``coiled.use_scheduler_public_ip``), the one setting a ``coiled.Cluster()`` created later in the same
kernel reads from there; Coiled's client never applies ingress from Dask's config, so the rules (and
any other cluster's toggle) reach it only as ``coiled.Cluster(**cluster_kwargs(cluster))``.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AccountStoreUnreadable, ConfigFileError, StaleEdit
from .policy import Guardrails
from .rules import ME, IngressError, Rule, canonical, compact, parse_ingress
from .strict_yaml import excerpt

INGRESS_KEY = "coiled.backend-options.ingress"
PUBLIC_IP_KEY = "coiled.use_scheduler_public_ip"
CONFIG_FILE_NAME = "coiled.yaml"
_DEFAULTS_FILE = Path(__file__).with_name("coiled-jupyter.yaml")

BUILT_IN_DEFAULT = {
    "ingress": [{"ports": [8786, 8787], "cidr": "0.0.0.0/0"}],
    "use_scheduler_public_ip": True,
}


def built_in_default(model=None) -> dict:
    """What the cluster does when nothing is set: its scheduler and dashboard ports open to
    everyone, and clients on the public IP. The ports are those of ``model`` (a
    :class:`coiled_jupyter.ports.PortModel`; a Coiled cluster listens on 443), or Dask's 8786/8787."""
    if model is None:
        return BUILT_IN_DEFAULT
    ports = list(dict.fromkeys((model.scheduler, model.dashboard)))
    return {**BUILT_IN_DEFAULT, "ingress": [{"ports": ports, "cidr": "0.0.0.0/0"}]}


class Layer(enum.IntEnum):
    """Where a value came from; a higher layer wins."""

    DEFAULT = 0
    ACCOUNT = 1
    CONFIG = 2
    SESSION = 3
    CLUSTER = 4

    @property
    def label(self) -> str:
        return _LAYER_LABELS[self]


_LAYER_LABELS = {
    Layer.DEFAULT: "built-in default",
    Layer.ACCOUNT: "account default",
    Layer.CONFIG: "dask config",
    Layer.SESSION: "notebook session",
    Layer.CLUSTER: "cluster options",
}


@dataclass(frozen=True)
class Resolved:
    """A value with the layer that set it and, in ``detail``, where exactly (a file, a variable)."""

    value: Any
    layer: Layer
    detail: str = ""

    @property
    def origin(self) -> str:
        """Where the value came from, as every table says it: ``dask config (/path/coiled.yaml)``."""
        return f"{self.layer.label} ({self.detail})" if self.detail else self.layer.label


@dataclass(frozen=True)
class LayerValues:
    """What one layer sets: parsed rules (or None when it does not set them) and the toggle.

    ``read`` is False for a layer that was not read (the account layer in settings work, which makes
    no cloud call): it then sets nothing here, though it may set values where it is kept. ``note``
    says how the layer is known ("read at 03:41:07 UTC", "not read: ..."), for the layer list.
    ``built_on`` (the session layer only) is the account layer its rules were edited from, so that a
    plan can say what the team changed since.
    """

    layer: Layer
    ingress: list[Rule] | None = None
    use_scheduler_public_ip: bool | None = None
    ingress_detail: str = ""
    public_ip_detail: str = ""
    read: bool = True
    note: str = ""
    built_on: LayerValues | None = None
    # The team's guardrails (the account layer only; see coiled_jupyter.policy).
    guardrails: Guardrails = field(default_factory=Guardrails)


@dataclass(frozen=True)
class Settings:
    """The effective settings, each value with its origin, and every layer that was consulted."""

    ingress: Resolved
    use_scheduler_public_ip: Resolved
    layers: tuple[LayerValues, ...] = field(default=())
    # Why the account store could not be read, when the settings did not need it: its guardrails
    # are then unknown, so nothing may be applied (see provision.reconcile).
    account_unreadable: AccountStoreUnreadable | None = None

    @property
    def rules(self) -> list[Rule]:
        return self.ingress.value

    def layer(self, layer: Layer) -> LayerValues | None:
        """What ``layer`` set, as consulted for these settings (None if it was not consulted)."""
        return next((values for values in self.layers if values.layer == layer), None)

    @property
    def guardrails(self) -> Guardrails:
        """The team's guardrails, as the account layer holds them."""
        account = self.layer(Layer.ACCOUNT)
        return account.guardrails if account is not None else Guardrails()

    @property
    def account_read(self) -> bool:
        """False when the account layer was not read, so values shown from the built-in default may
        in truth be the team's account defaults."""
        account = self.layer(Layer.ACCOUNT)
        return account is None or account.read


# --------------------------------------------------------------------------------------------------
# Reading one layer's raw values


def layer_from_options(layer: Layer, options: dict | None, detail: str = "") -> LayerValues:
    """Parse Coiled-shaped options (``ingress``, deprecated ``firewall``, ``use_scheduler_public_ip``)."""
    options = dict(options or {})
    where = f"{layer.label}{' ' + detail if detail else ''}"
    ingress = None
    if options.get("ingress") is not None:
        ingress = parse_ingress(options["ingress"], where=f"ingress in {where}")
    elif options.get("firewall") is not None:
        warnings.warn(
            f"'firewall' in {where} is deprecated, as in Coiled; write "
            "ingress=[{'ports': [...], 'cidr': '...'}] instead.",
            FutureWarning,
            stacklevel=3,
        )
        ingress = parse_ingress([options["firewall"]], where=f"firewall in {where}")
    public_ip = options.get("use_scheduler_public_ip")
    if public_ip is not None:
        public_ip = parse_public_ip(public_ip, where=f"use_scheduler_public_ip in {where}")
    return LayerValues(
        layer,
        ingress,
        public_ip,
        detail if ingress is not None else "",
        detail if public_ip is not None else "",
    )


def parse_coiled_options(
    value, *, where: str = "the settings"
) -> tuple[list[Rule] | None, bool | None]:
    """Rules and the toggle from what people paste: a rule list, one rule,
    ``{ingress: ..., use_scheduler_public_ip: ...}``, or a whole ``coiled:`` snippet exactly as in
    Coiled's documentation; as YAML/JSON text or Python values. Every problem is reported at once.
    Returns ``(rules or None, use_scheduler_public_ip or None)``.
    """
    from .rules import load_text
    from .strict_yaml import StrictYAMLError, check_value

    if isinstance(value, str):
        data = load_text(value, where)
    else:
        try:
            check_value(value, where)
        except StrictYAMLError as error:
            raise IngressError(error.problems) from None
        data = value
    if data is None:
        raise IngressError(
            [
                f"{where} is empty; write a rule list like [{{ports: [8786], cidr: "
                "10.1.0.0/16}] or a coiled: snippet."
            ]
        )
    problems: list[str] = []
    if isinstance(data, dict) and _get(data, "coiled") is not None:
        coiled = _get(data, "coiled")
        if not isinstance(coiled, dict):
            raise IngressError(
                [
                    f"'coiled' in {where} must be a mapping with backend-options and "
                    "use_scheduler_public_ip, as in Coiled's documentation."
                ]
            )
        problems += [
            _not_used(key, f"beside 'coiled' in {where}", _BELONGS_UNDER_COILED)
            for key in data
            if key != key_spelling(data, "coiled")
        ]
        problems += _unknown_keys(
            coiled,
            ("backend-options", "use_scheduler_public_ip"),
            f"'coiled' in {where}",
            belongs=_BELONGS_IN_COILED,
        )
        backend = _get(coiled, "backend-options") or {}
        if not isinstance(backend, dict):
            problems.append(f"'coiled.backend-options' in {where} must be a mapping with ingress.")
            backend = {}
        problems += _unknown_keys(
            backend,
            ("ingress", "firewall"),
            f"'coiled.backend-options' in {where}",
            belongs=_BELONGS_IN_BACKEND_OPTIONS,
        )
        if _get(backend, "ingress") is not None and _get(backend, "firewall") is not None:
            problems.append(
                f"'coiled.backend-options' in {where} has both 'ingress' and the deprecated "
                "'firewall', and only ingress is used; remove 'firewall'."
            )
        options = {
            "ingress": _get(backend, "ingress"),
            "firewall": _get(backend, "firewall"),
            "use_scheduler_public_ip": _get(coiled, "use_scheduler_public_ip"),
        }
    elif isinstance(data, dict) and (
        _get(data, "ingress") is not None or _get(data, "use_scheduler_public_ip") is not None
    ):
        problems += _unknown_keys(data, ("ingress", "use_scheduler_public_ip"), where)
        options = {
            "ingress": _get(data, "ingress"),
            "use_scheduler_public_ip": _get(data, "use_scheduler_public_ip"),
        }
    else:
        options = {"ingress": data}
    rules = public_ip = None
    try:
        if options.get("ingress") is not None:
            rules = parse_ingress(options["ingress"], where="ingress")
        elif options.get("firewall") is not None:
            rules = layer_from_options(Layer.SESSION, {"firewall": options["firewall"]}).ingress
    except IngressError as error:
        problems += error.problems
    try:
        if options.get("use_scheduler_public_ip") is not None:
            public_ip = parse_public_ip(options["use_scheduler_public_ip"])
    except IngressError as error:
        problems += error.problems
    if not problems and rules is None and public_ip is None:
        problems.append(
            f"{where} sets neither coiled.backend-options.ingress nor "
            "coiled.use_scheduler_public_ip; write them as in Coiled's documentation."
        )
    if problems:
        raise IngressError(problems)
    return rules, public_ip


def _unknown_keys(
    mapping: dict, known: tuple[str, ...], where: str, *, belongs: dict | None = None
) -> list[str]:
    """Keys Coiled's format does not have, with a did-you-mean ('-' and '_' are alike, as in Dask).

    ``belongs`` (inside a pasted ``coiled:`` snippet): where keys that are not ours belong, by key
    (``None``: any other key), for a sentence that names the key and that place: every key is
    used or refused, none is accepted and dropped.
    """
    import difflib

    spellings = [k.replace("_", "-") for k in known]
    problems = []
    for key in mapping:
        name = str(key).replace("_", "-")
        if name in spellings:
            continue
        close = difflib.get_close_matches(name, spellings, n=1, cutoff=0.7)
        if close:
            problems.append(f"{where} has unknown key {excerpt(key)}; did you mean {close[0]!r}?")
        elif belongs is not None:
            problems.append(_not_used(key, f"in {where}", belongs))
        else:
            problems.append(f"{where} has unknown key {excerpt(key)}; use only {', '.join(known)}.")
    return problems


def _not_used(key, where: str, belongs: dict) -> str:
    place = belongs.get(str(key).replace("_", "-"), belongs[None])
    return f"{excerpt(key)} {where} is not used here: {place}"


# Where a key that is not ours belongs, for the sentence refusing it in a pasted snippet.
_BELONGS_UNDER_COILED = {
    "ingress": "it belongs under coiled.backend-options (coiled: {backend-options: {ingress: "
    "[...]}}), as in Coiled's documentation.",
    "firewall": "it belongs under coiled.backend-options, as in Coiled's documentation.",
    "backend-options": "it belongs under coiled (coiled: {backend-options: ...}), as in "
    "Coiled's documentation.",
    "use-scheduler-public-ip": "it belongs under coiled (coiled: {use_scheduler_public_ip: "
    "false}), as in Coiled's documentation.",
    None: "only coiled: is read from a snippet; other tools' settings belong in your Dask config "
    "file, so remove it.",
}
_BELONGS_IN_COILED = {
    "ingress": _BELONGS_UNDER_COILED["ingress"],
    "firewall": _BELONGS_UNDER_COILED["firewall"],
    None: "only backend-options.ingress and use_scheduler_public_ip are firewall settings; "
    "Coiled's other settings belong in your Dask config file (coiled.yaml) or in "
    "coiled.Cluster(...), so remove it.",
}
_BELONGS_IN_BACKEND_OPTIONS = {
    None: "only ingress is a firewall setting; other backend options belong in "
    "coiled.Cluster(backend_options=...), so remove it.",
}


def parse_public_ip(value, *, where: str = "use_scheduler_public_ip") -> bool:
    """``True``/``False`` (YAML and env give booleans; ``public``/``private`` are accepted too)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _PUBLIC_IP_WORDS:
        return _PUBLIC_IP_WORDS[value.strip().lower()]
    raise IngressError(
        [
            f"{where} is {excerpt(value)}; use true (connect on the scheduler's public IP) or "
            "false (its private IP)."
        ]
    )


# No yes/no: YAML 1.2 and Coiled's client read them as text, and Coiled would take the text "no" as
# true; only the words that mean one thing everywhere are accepted.
_PUBLIC_IP_WORDS = {
    "public": True,
    "true": True,
    "private": False,
    "false": False,
}


def _get(mapping: dict, *path: str):
    """Look up a nested key the way Dask does, treating '-' and '_' alike."""
    node: Any = mapping
    for key in path:
        if not isinstance(node, dict):
            return None
        for spelling in (key, key.replace("-", "_"), key.replace("_", "-")):
            if spelling in node:
                node = node[spelling]
                break
        else:
            return None
    return node


def config_dir() -> Path:
    """Dask's user config directory, honouring ``DASK_CONFIG`` as it is now (not at import)."""
    return Path(os.environ.get("DASK_CONFIG") or Path("~/.config/dask").expanduser())


def config_path() -> Path:
    return config_dir() / CONFIG_FILE_NAME


def _config_search_paths() -> list[str]:
    import dask.config

    system = [p for p in dask.config.paths if Path(p) != Path(dask.config.PATH)]
    return [*system, str(config_dir())]


# The keys of ours a Dask config file may hold; the strict reader reads only these from a file.
_OUR_KEYS = (
    ("coiled", "backend-options", "ingress"),
    ("coiled", "backend-options", "firewall"),
    ("coiled", "use_scheduler_public_ip"),
)
_CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def _tree(paths: tuple[tuple[str, ...], ...]) -> dict:
    tree: dict = {}
    for path in paths:
        place = tree
        for name in path:
            place = place.setdefault(name, {})
    return tree


# The same keys as nested names, as :func:`.strict_yaml.load_keys` takes them.
_OUR_TREE = _tree(_OUR_KEYS)


def _config_files() -> list[str]:
    """The files Dask reads its config from, in Dask's order.

    Dask skips a folder or file it cannot read, silently; here that fails closed: restrictive rules
    in a file this kernel cannot read must never give way to the world-open built-in default.
    """
    files: list[str] = []
    for place in _config_search_paths():
        try:
            is_folder = stat.S_ISDIR(os.stat(place).st_mode)
            if not is_folder:
                files.append(place)
                continue
            names = os.listdir(place)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise ConfigFileError(_unreadable(place, error)) from None
        files.extend(
            sorted(
                os.path.join(place, name)
                for name in names
                if os.path.splitext(name)[1].lower() in _CONFIG_SUFFIXES
            )
        )
    return files


def _config_sources() -> list[tuple[str, dict]]:
    """Our keys from each Dask config file, read strictly (see :mod:`.strict_yaml`), in Dask's order;
    a file that cannot be read or parsed is an error naming it, for every operation that uses the
    settings."""
    from .strict_yaml import FILE_LIMITS, StrictYAMLError, load_keys

    sources = []
    for path in _config_files():
        try:
            text = _read_config_file(path, FILE_LIMITS.bytes + 1)
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigFileError(_unreadable(path, error)) from None
        try:
            data = load_keys(text, f"the Dask config file {path}", _OUR_TREE)
        except StrictYAMLError as error:
            raise ConfigFileError(
                [f"{error} Fix or move the file: the coiled settings are not used until then."]
            ) from None
        sources.append((path, data))
    return sources


def _read_config_file(path: str, most: int) -> str:
    """At most ``most`` bytes of a config file as text. Opened without blocking: a FIFO or a device
    among the config files (which would block a plain read for ever) is refused as unreadable."""
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(handle).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(mode):
            raise OSError(0, "not a regular file")
        return os.read(handle, most).decode("utf-8")
    finally:
        os.close(handle)


def _unreadable(path: str, error: Exception) -> str:
    reason = getattr(error, "strerror", None) or type(error).__name__
    return (
        f"the Dask config file {path} cannot be read ({reason.lower()}); it may hold coiled "
        "settings, so none are used until it can be read or is moved away."
    )


def _our_values(data: dict, tree: dict) -> dict:
    """Our keys from already-read config values (the environment's), shaped as
    :func:`.strict_yaml.load_keys` shapes a file's."""
    from .strict_yaml import NOT_A_MAPPING

    found: dict = {}
    for name, below in tree.items():
        spelling = key_spelling(data, name)
        if spelling not in data:
            continue
        value = data[spelling]
        if not below or value is None:
            found[spelling] = value
        elif isinstance(value, dict):
            found[spelling] = _our_values(value, below)
        else:
            found[spelling] = NOT_A_MAPPING
    return found


@dataclass(frozen=True)
class _Origin:
    """Marks, in a merge of the sources' places instead of their values, which source a value
    came from (see :func:`_merged`)."""

    source: int


def _merged(patches: list[dict]) -> dict:
    """The sources merged as ``dask.config.collect`` merges config files and the environment: from
    the last to the first, each filling in only what the later ones left open (``priority="old"``),
    with Dask's own ``update``. Lists and other values are replaced as a whole, mappings merged."""
    import dask.config

    result: dict = {}
    for patch in reversed(patches):
        dask.config.update(result, patch, priority="old")
    return result


def _origins(patch, source: int):
    """``patch`` with every value that is neither a mapping nor null replaced by its source, so that
    merging these gives, in each place, the source whose value Dask keeps there."""
    if isinstance(patch, dict):
        return {key: _origins(value, source) for key, value in patch.items()}
    return None if patch is None else _Origin(source)


def _sources_in(value) -> list[int]:
    if isinstance(value, _Origin):
        return [value.source]
    if isinstance(value, dict):
        return sorted({s for child in value.values() for s in _sources_in(child)})
    return []


_OUR_PATHS = {path[-1]: path for path in _OUR_KEYS}


def config_layer() -> LayerValues:
    """The Dask config layer from the files and the environment as they are now, with origins.

    What Dask's own resolution yields for our keys (several files, merge keys, ``DASK_COILED__*``
    variables) is what is used; where that cannot be used safely (a null that unsets rules a weaker
    file sets, a ``coiled`` or ``backend-options`` that is not a mapping) it is refused with a
    sentence naming the file, never replaced by the built-in default.
    """
    import dask.config

    from .strict_yaml import NOT_A_MAPPING

    sources = _config_sources()
    sources.append(("environment", _our_values(dask.config.collect_env(os.environ), _OUR_TREE)))
    details = [detail for detail, _ in sources]
    patches = [patch for _, patch in sources]
    merged = _merged(patches)
    origins = _merged([_origins(patch, index) for index, patch in enumerate(patches)])

    def detail(sources_of: list[int], variable: str) -> str:
        named = [
            _env_detail(variable) if index == len(details) - 1 else details[index]
            for index in sources_of
        ]
        return ", ".join(named)

    for path, variable in ((("coiled",), ""), (("coiled", "backend-options"), "BACKEND_OPTIONS")):
        if _get(merged, *path) is NOT_A_MAPPING:
            raise ConfigFileError(
                f"{'.'.join(path)} in {detail(_sources_in(_get(origins, *path)), variable)} is not "
                "a mapping, so Dask reads no coiled settings from the Dask config; write it as "
                "in Coiled's documentation (coiled: {backend-options: {ingress: [...]}})."
            )
    values = {}
    for name, path in _OUR_PATHS.items():
        variable = (
            "USE_SCHEDULER_PUBLIC_IP" if name == "use_scheduler_public_ip" else "BACKEND_OPTIONS"
        )
        values[name] = (_get(merged, *path), detail(_sources_in(_get(origins, *path)), variable))
        if values[name][0] is not None or (name == "firewall" and values["ingress"][0] is not None):
            continue
        setters = [i for i, patch in enumerate(patches) if _get(patch, *path) is not None]
        if setters:
            unsetting = max(i for i, patch in enumerate(patches) if _has_null(patch, path))
            raise ConfigFileError(
                f"{'.'.join(path)} is null in {detail([unsetting], variable)}, which Dask reads "
                f"as unsetting the value from {detail(setters, variable)}; remove the null or "
                "write the value you want there (an empty list [] means no rules)."
            )
    ingress, ingress_detail = values["ingress"]
    firewall, firewall_detail = values["firewall"]
    public_ip, public_ip_detail = values["use_scheduler_public_ip"]
    # As everywhere: ingress wins over the deprecated firewall, wherever each was set.
    if ingress is None and firewall is not None:
        ingress_detail = firewall_detail
    options = {"ingress": ingress, "firewall": firewall}
    # Parsed apart, so that a bad value is reported with the place it came from.
    ingress_values = layer_from_options(Layer.CONFIG, options, detail=ingress_detail)
    public_ip_values = layer_from_options(
        Layer.CONFIG, {"use_scheduler_public_ip": public_ip}, detail=public_ip_detail
    )
    return LayerValues(
        Layer.CONFIG,
        ingress_values.ingress,
        public_ip_values.use_scheduler_public_ip,
        ingress_values.ingress_detail,
        public_ip_values.public_ip_detail,
    )


def _has_null(patch: dict, path: tuple[str, ...]) -> bool:
    """Whether ``patch`` holds a null at ``path`` (a null on the way does not unset, see
    :func:`_merged`)."""
    *way, last = path
    place = _get(patch, *way) if way else patch
    return (
        isinstance(place, dict) and key_spelling(place, last) in place and _get(place, last) is None
    )


def _env_detail(suffix: str = "") -> str:
    prefix = "DASK_COILED__"
    names = sorted(k for k in os.environ if k.upper().startswith(prefix + suffix))
    return ", ".join(f"${k}" for k in names) if names else "environment"


# --------------------------------------------------------------------------------------------------
# The session layer


@dataclass(frozen=True)
class SessionValues:
    """What this kernel's session sets for one cluster: parsed rules and the toggle (``None``: does
    not set it).

    ``built_on``: the account layer that ``add`` or ``remove`` started the rules from, as it was
    known then (None when the rules were written whole, or built on another layer).
    """

    ingress: tuple[Rule, ...] | None = None
    use_scheduler_public_ip: bool | None = None
    built_on: LayerValues | None = None

    @property
    def empty(self) -> bool:
        return self.ingress is None and self.use_scheduler_public_ip is None


@dataclass(frozen=True)
class SessionChange:
    """One change of the session, as observers hear it: the cluster, its new values, and the
    session's version of that cluster after the change (see :meth:`SessionLayer.replace`)."""

    cluster: str
    values: SessionValues
    version: int


_ABSENT = object()


class SessionLayer:
    """This kernel's session edits, per cluster: one store that every front end reads and changes.

    What is set for one cluster is never seen by another: every read and every change names its
    cluster (the resolved name, so "no --cluster" is the default cluster's entry). Changes are
    serialised (:attr:`lock`), and each cluster has a version that every change raises, so that an
    edit made from an older state (a panel's edit waiting in its thread while a magic changed the
    session) can be refused instead of undoing the newer change.

    :mod:`coiled_jupyter.session` validates and changes it; observers (an open panel) are told after
    every change. The toggle of the default cluster (:func:`default_cluster`) is also set in this
    kernel's Dask config (``coiled.use_scheduler_public_ip``), the one key Coiled's client
    reads from there: that key is kernel-wide, so it cannot hold every cluster's toggle; other
    clusters' toggles reach Coiled through ``cluster_kwargs(cluster)``, and their settings view says
    so when the key says otherwise. The value that was there before is put back when the default
    cluster's session stops setting it.

    ``detail`` names whose session it is in every origin: "this kernel", or the Jupyter server's
    when the server extension holds it (the lab sidebar's session is the server's, not a kernel's).
    """

    def __init__(self, detail: str = "this kernel"):
        import threading

        self.detail = detail
        self.lock = threading.RLock()
        self._clusters: dict[str, SessionValues] = {}
        self._versions: dict[str, int] = {}
        self._observers: list[Callable[[SessionChange], None]] = []
        self._toggle_before: Any = _ABSENT
        self.default_cluster: str | None = None  # see default_cluster()

    def use_default_cluster(self, cluster: str | None) -> None:
        """Act on ``cluster`` when an operation names none (None: Dask's coiled-jupyter.cluster),
        and mirror its toggle from now on."""
        with self.lock:
            self.default_cluster = cluster or None
            self._mirror_toggle(self.of().use_scheduler_public_ip)

    @property
    def values(self) -> dict[str, SessionValues]:
        """Every cluster that has session settings, with them (a copy: changing it changes nothing)."""
        return dict(self._clusters)

    def of(self, cluster: str | None = None) -> SessionValues:
        """What the session sets for ``cluster`` (None: the default cluster); empty values when it
        sets nothing."""
        return self._clusters.get(cluster or default_cluster(), SessionValues())

    def version(self, cluster: str) -> int:
        """How many changes ``cluster``'s session settings have had; an edit names the version it
        was made from (see :meth:`replace`)."""
        return self._versions.get(cluster, 0)

    def clusters(self) -> tuple[str, ...]:
        """The clusters that have session settings, by name."""
        return tuple(sorted(self._clusters))

    def layer(self, cluster: str | None = None, values: SessionValues | None = None) -> LayerValues:
        """``cluster``'s session (None: the default cluster's) as a layer: its current values, or
        ``values`` if given."""
        values = self.of(cluster) if values is None else values
        return LayerValues(
            Layer.SESSION,
            list(values.ingress) if values.ingress is not None else None,
            values.use_scheduler_public_ip,
            self.detail if values.ingress is not None else "",
            self.detail if values.use_scheduler_public_ip is not None else "",
            built_on=values.built_on,
        )

    def replace(
        self, cluster: str, values: SessionValues, *, based_on: int | None = None
    ) -> SessionChange:
        """Make ``values`` (already validated) ``cluster``'s session, mirror the default cluster's
        toggle, tell the observers.

        ``based_on``: the version the edit was made from; if the cluster changed since, the edit is
        refused (:class:`~coiled_jupyter.errors.StaleEdit`) and nothing changes.
        """
        with self.lock:
            if based_on is not None and based_on != self.version(cluster):
                raise StaleEdit(
                    f"the session settings of cluster {cluster!r} changed (a magic, the sidebar or "
                    "another panel) after this edit was made, so it was not made: it would undo "
                    "that change. The rows now show the session; make the edit again."
                )
            if values.ingress is not None:
                values = dataclasses.replace(values, ingress=tuple(canonical(values.ingress)))
            if values.empty:
                self._clusters.pop(cluster, None)
            else:
                self._clusters[cluster] = values
            self._versions[cluster] = self.version(cluster) + 1
            self._mirror_toggle(self.of().use_scheduler_public_ip)
            change = SessionChange(cluster, values, self.version(cluster))
            for observer in list(self._observers):
                observer(change)
            return change

    def clear(self) -> None:
        """Drop every cluster's session settings (a new kernel's state), telling the observers."""
        with self.lock:
            for cluster in self.clusters():
                self.replace(cluster, SessionValues())

    def subscribe(self, observer: Callable[[SessionChange], None]) -> Callable[[], None]:
        """Call ``observer(change)`` after every change; returns the function that unsubscribes."""
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return unsubscribe

    def _mirror_toggle(self, public_ip: bool | None) -> None:
        import dask.config

        with dask.config.config_lock:
            coiled = dask.config.config.get("coiled")
            here = _get(coiled, "use_scheduler_public_ip") if isinstance(coiled, dict) else None
            key = (
                key_spelling(coiled, "use_scheduler_public_ip")
                if isinstance(coiled, dict)
                else None
            )
            if public_ip is not None:
                if self._toggle_before is _ABSENT:
                    self._toggle_before = (key, here) if here is not None else None
                if not isinstance(coiled, dict):
                    coiled = dask.config.config["coiled"] = {}
                coiled[key or "use_scheduler_public_ip"] = public_ip
            elif self._toggle_before is not _ABSENT:
                if self._toggle_before is None:
                    if isinstance(coiled, dict) and key is not None:
                        coiled.pop(key)
                else:
                    before_key, before = self._toggle_before
                    coiled[before_key] = before
                self._toggle_before = _ABSENT


SESSION = SessionLayer()


def default_cluster() -> str:
    """The cluster an operation acts on when it names none: the magics' ``CoiledMagics.cluster``
    when it is set in this kernel, else Dask's ``coiled-jupyter.cluster``; one default for the
    magics, the panel and the mirrored toggle."""
    return SESSION.default_cluster or option("cluster")


def coiled_toggle() -> bool:
    """The ``use_scheduler_public_ip`` a ``coiled.Cluster()`` created now in this kernel would use
    when not given one: Coiled's client reads ``dask.config.get("coiled.use_scheduler_public_ip",
    True)`` (``Cluster.__init__`` in coiled/v2/cluster.py), the same expression as here."""
    import dask.config

    return bool(dask.config.get(PUBLIC_IP_KEY, True))


# --------------------------------------------------------------------------------------------------
# Resolution


AccountLoader = Callable[[], "LayerValues | None"]


def effective_settings(
    backend_options: dict | None = None,
    *,
    account: AccountLoader | None = None,
    session: SessionValues | None = None,
    cluster: str | None = None,
    model=None,
) -> Settings:
    """Resolve every layer into the effective settings, each value with its origin.

    ``backend_options`` is one cluster's options (the strongest layer). ``account`` loads the account
    layer (the session passes :func:`coiled_jupyter.provision.account.load_account_layer`, so that
    this module never calls the provisioning core); without it the account layer is empty. An
    unreadable account store is an error only if it would decide a value. ``session`` resolves
    prospective session values instead of the current ones (checking an edit before it is made).
    ``cluster``: whose session layer is used (None: the default cluster, ``coiled-jupyter.cluster``).
    ``model`` (the cluster's :class:`~coiled_jupyter.ports.PortModel`) gives the built-in default
    its ports.
    """
    unreadable = None
    account_values = LayerValues(Layer.ACCOUNT)
    if account is not None:
        try:
            account_values = account() or account_values
        except AccountStoreUnreadable as error:
            unreadable = error
    settings = resolve(
        [
            layer_from_options(Layer.DEFAULT, built_in_default(model)),
            account_values,
            config_layer(),
            SESSION.layer(cluster, session),
            layer_from_options(Layer.CLUSTER, backend_options, "backend_options"),
        ]
    )
    weakest = min(settings.ingress.layer, settings.use_scheduler_public_ip.layer)
    if unreadable is not None and weakest < Layer.ACCOUNT:
        raise unreadable
    return dataclasses.replace(settings, account_unreadable=unreadable)


def resolve(layers: list[LayerValues]) -> Settings:
    """Pick, for each value, the strongest layer that sets it."""
    ordered = sorted(layers, key=lambda values: values.layer)
    ingress = public_ip = None
    for values in ordered:
        if values.ingress is not None:
            ingress = Resolved(values.ingress, values.layer, values.ingress_detail)
        if values.use_scheduler_public_ip is not None:
            public_ip = Resolved(
                values.use_scheduler_public_ip, values.layer, values.public_ip_detail
            )
    if ingress is None or public_ip is None:
        raise ValueError("the built-in default layer must set every value")
    return Settings(ingress, public_ip, tuple(ordered))


def replaced_rules_note(settings: Settings) -> str | None:
    """The sentence saying which weaker layers' rules the effective rules replace, or None.

    Lists are replaced, not merged, as in Coiled: rules declared anywhere leave nothing of Coiled's
    world-open default or of the account defaults. People expect an addition, so the settings view
    and the plan say it before anything is applied, when a person's own rules (Dask config, session,
    cluster options) replace others; the account defaults replacing the built-in default are the
    team's baseline, not news to repeat in every view.
    """
    winner = settings.ingress.layer
    if winner <= Layer.ACCOUNT:
        return None
    effective = {r.key for r in settings.rules}
    replaced = [
        values
        for values in settings.layers
        if values.ingress is not None
        and values.layer < winner
        and {r.key for r in values.ingress} != effective  # the same rules again lose nothing
    ]
    if not replaced:
        return None
    described = [_layer_rules(values) for values in sorted(replaced, key=lambda v: -v.layer)]
    return (
        f"the rules from {settings.ingress.origin} replace those of the "
        f"{', and of the '.join(described)}; as in Coiled, the strongest layer that declares "
        "ingress wins as a whole: none of the replaced rules is kept."
    )


def unread_account_note(settings: Settings) -> str | None:
    """The sentence saying what an account layer that was not read may change, or None when read.

    Settings work makes no cloud call, so a view can show the built-in default where the team's
    account defaults apply, or rules that replace account rules it cannot name. Saying so keeps the
    view honest; a plan or an apply reads the account store and names them.
    """
    if settings.account_read:
        return None
    effects = []
    from_default = [
        name
        for name, resolved in (
            ("the rules", settings.ingress),
            ("use_scheduler_public_ip", settings.use_scheduler_public_ip),
        )
        if resolved.layer == Layer.DEFAULT
    ]
    if from_default:
        effects.append(
            f"they apply instead of the built-in default shown for {' and '.join(from_default)}"
        )
    if settings.ingress.layer > Layer.ACCOUNT:
        effects.append(f"the rules from {settings.ingress.origin} replace their rules")
    return (
        "the account defaults were not read here (settings work makes no cloud call): if your "
        f"team set some, {', and '.join(effects)}. A plan or an apply reads them and names what "
        "is replaced."
    )


def account_drift_note(settings: Settings) -> str | None:
    """The sentence saying how the account defaults changed since the session's rules were built on
    them, or None.

    ``add`` over the team's rules copies them into the session, which then replaces the account
    layer as a whole. If the team later drops a rule, the copy still admits it: more than the team
    now allows, and more than the person believes they kept. A plan reads the account store again,
    so it can say so before anything is applied.
    """
    session, account = settings.layer(Layer.SESSION), settings.layer(Layer.ACCOUNT)
    if settings.ingress.layer != Layer.SESSION or session is None or account is None:
        return None
    basis = session.built_on
    if basis is None or not account.read:
        return None
    then = {rule.key for rule in basis.ingress or []}
    now = {rule.key for rule in account.ingress or []}
    mine = {rule.key for rule in settings.rules}
    dropped = [rule for rule in settings.rules if rule.key in then - now]
    added = canonical(rule for rule in account.ingress or [] if rule.key not in then | mine)
    if not dropped and not added:
        return None
    changes = []
    if dropped:
        changes.append(f"they no longer have {_listed(dropped)}, which this session still admits")
    if added:
        changes.append(f"they now have {_listed(added)}, which this session does not")
    since = f" ({basis.note})" if basis.note else ""
    return (
        f"the rules from {settings.ingress.origin} were built on the account defaults as known "
        f"then{since}, and {', and '.join(changes)}: the session's rules are what apply, and a "
        "reset takes the team's rules as they are now."
    )


def _listed(rules: list[Rule]) -> str:
    shown = ", ".join(str(rule) for rule in rules[:3])
    return f"{shown} and {len(rules) - 3} more" if len(rules) > 3 else shown


def _layer_rules(values: LayerValues) -> str:
    rules = values.ingress or []
    where = f"{values.layer.label}{f' ({values.ingress_detail})' if values.ingress_detail else ''}"
    if not rules:
        return f"{where} (no rules)"
    written = [r for r in rules if r.source == ME]
    return f"{where} ({_listed(compact([r for r in rules if r.source != ME]) + written)})"


# --------------------------------------------------------------------------------------------------
# Package defaults for this tool's own keys


def package_defaults() -> dict:
    """This tool's defaults, read once from the YAML file shipped in the package."""
    global _package_defaults
    if _package_defaults is None:
        import yaml

        with open(_DEFAULTS_FILE) as f:
            _package_defaults = yaml.safe_load(f)
    return _package_defaults


_package_defaults: dict | None = None


def register_defaults() -> None:
    """Register ``coiled-jupyter.*`` defaults with Dask, as dask-labextension does."""
    import dask.config

    dask.config.update_defaults(package_defaults())


def option(key: str):
    """One of this tool's options from Dask's config, e.g. ``option("backend")``.

    The packaged default is the fallback even if the defaults were registered inside a temporary
    ``dask.config.set`` block, which drops them again on exit.
    """
    import dask.config

    _ensure_defaults()
    fallback = _get(package_defaults(), "coiled-jupyter", *key.split("."))
    return dask.config.get(f"coiled-jupyter.{key}", default=fallback)


_defaults_registered = False


def _ensure_defaults() -> None:
    global _defaults_registered
    if not _defaults_registered:
        register_defaults()
        _defaults_registered = True


def key_spelling(mapping, key: str) -> str:
    """The spelling of ``key`` that ``mapping`` uses ('-' and '_' are alike, as in Dask)."""
    for spelling in (key, key.replace("-", "_"), key.replace("_", "-")):
        if spelling in mapping:
            return spelling
    return key
