"""Account-wide defaults: ``set_backend_options`` (Coiled's signature) and the account store.

The account store is one SSM String parameter in the AWS account (the sandbox has SSM too), holding
JSON in Coiled's shape, so every member of a team reads the same defaults. Its name is
``coiled-jupyter.account-parameter``, suffixed by ``/<workspace>`` for a Coiled workspace. The writer
and every reader name the workspace the way Coiled's client does (the ``workspace=`` or ``account=``
argument, else ``coiled.workspace``, else ``coiled.account`` in Dask's config) and through one
function, :func:`store_name`, so ``set_backend_options(account="my-team")`` writes exactly the
parameter that a kernel configured with ``coiled.workspace: my-team`` reads.

Settings work makes no cloud call, so it uses the account layer as this process last read or wrote
it (:func:`known_account_layer`), with the time; a plan, an apply or a describe reads it again
(:func:`load_account_layer`). The memory is keyed on the store: the running sandbox server (one
that restarted holds nothing) or the region and AWS environment, and the parameter's name.
"""

from __future__ import annotations

import difflib
import re
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..errors import AccountStoreUnreadable, CloudError
from ..policy import Guardrails
from ..rules import IngressError, mask_host_bits, to_coiled
from ..settings import Layer, LayerValues, layer_from_options, option
from .target import Target, target

# The key of the team's guardrails beside Coiled's options in the account store's JSON.
GUARDRAILS_KEY = "coiled-jupyter-guardrails"
# What this tool keeps of a set_backend_options call; every other keyword is Coiled's own.
FIREWALL_KEYWORDS = ("ingress", "firewall", "use_scheduler_public_ip")
# Coiled's workspace slugs; also what an SSM parameter name may hold after the prefix.
_WORKSPACE = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
# What real AWS keys look like; the documentation's placeholders ("<your-access-key-id-here>") do not.
# (Every pattern here is matched whole, with fullmatch: "$" would let a final newline through.)
_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")
_SECRET = re.compile(r"[A-Za-z0-9/+=]{16,128}")


@dataclass(frozen=True, repr=False)
class AwsKeys:
    """AWS keys given to one call, as :class:`~.aws.Secret` objects: never stored, and never in a
    repr, a message or a traceback's locals."""

    access_key_id: object = None
    secret_access_key: object = None

    def __post_init__(self):
        from .aws import Secret

        object.__setattr__(self, "access_key_id", Secret.wrap(self.access_key_id))
        object.__setattr__(self, "secret_access_key", Secret.wrap(self.secret_access_key))

    def __repr__(self) -> str:
        return f"AwsKeys({'<hidden>' if self.given else 'none'})"

    __str__ = __repr__

    @property
    def given(self) -> bool:
        return bool(self.access_key_id or self.secret_access_key)

    def problems(self) -> list[str]:
        """What is wrong with the keys for a real AWS call; the values are never quoted."""
        if not self.given:
            return []
        if not (self.access_key_id and self.secret_access_key):
            return [
                "only one of aws_access_key_id and aws_secret_access_key was given; give both, "
                "or neither to use your usual AWS credentials (profile, environment or role)."
            ]
        problems = []
        if not _KEY_ID.fullmatch(self.access_key_id.reveal()):
            problems.append(
                "aws_access_key_id is not an AWS access key id (a placeholder from the "
                "documentation?); put your key id, or leave both keys out to use your usual AWS "
                "credentials."
            )
        if not _SECRET.fullmatch(self.secret_access_key.reveal()):
            problems.append(
                "aws_secret_access_key is not an AWS secret key (a placeholder from the "
                "documentation?); put your secret key, or leave both keys out to use your usual "
                "AWS credentials."
            )
        return problems


def workspace_name(workspace: str | None = None) -> str | None:
    """The Coiled workspace as Coiled's client picks it: the one given, else ``coiled.workspace``,
    else ``coiled.account`` in Dask's config; normalised (Coiled's slugs are lower case)."""
    import dask.config

    name = (
        workspace
        or dask.config.get("coiled.workspace", None)
        or dask.config.get("coiled.account", None)
    )
    if name is None:
        return None
    if not isinstance(name, str) or not _WORKSPACE.fullmatch(name.strip().lower()):
        raise IngressError(
            [
                f"workspace {name!r} is not a Coiled workspace name; use its slug as in "
                "cloud.coiled.io/<workspace>, e.g. 'my-team'."
            ]
        )
    return name.strip().lower()


def store_name(workspace: str | None = None) -> str:
    """The SSM parameter of a workspace's defaults (the configured workspace when none is given)."""
    name = option("account-parameter")
    workspace = workspace_name(workspace)
    return f"{name}/{workspace}" if workspace else name


def account_store(t: Target, workspace: str | None = None, connection=None):
    from .aws import AccountStore

    return AccountStore(connection or t.connection(), store_name(workspace))


# The account layer of each store as this process last read or wrote it, its note saying when.
_known: dict[tuple, LayerValues] = {}
_known_lock = threading.Lock()


_SANDBOX_STOPPED = LayerValues(
    Layer.ACCOUNT, note="the local sandbox is not running, so it holds none"
)


def _located(t: Target, name: str) -> tuple[tuple, Target, object] | None:
    """Where store ``name`` of ``t`` is, found without a cloud call: the key of its memory, the
    target to read it through and, for the sandbox, its recorded server (answering or not: a busy
    server is not a stopped one). None for a sandbox that is not running: it holds no account
    defaults, and nothing starts it to ask."""
    if t.backend == "sandbox":
        from .sandbox import recorded, resets_here

        server = recorded()
        if t.endpoint_url is not None and (server is None or t.endpoint_url != server.url):
            return ("endpoint", t.endpoint_url, t.region, name), t, None
        if server is None:
            return None
        key = ("sandbox", server.pid, server.url, resets_here(), t.region, name)
        return key, replace(t, endpoint_url=server.url), server
    from .aws_environment import environment_digest

    return ("aws", t.region, name, environment_digest()), t, None


def _remember(key: tuple, values: LayerValues, how: str) -> LayerValues:
    """Keep ``values`` as the known state of the store ``key``; returns them with the note saying
    ``how`` ("read", "written") and when."""
    noted = replace(values, note=f"{how} at {time.strftime('%H:%M:%S UTC', time.gmtime())}")
    with _known_lock:
        _known[key] = noted
    return noted


def known_account_layer(t: Target) -> LayerValues:
    """The account layer as known without a cloud call: as last read or written by this process,
    empty for a sandbox that is not running, else marked as not read."""
    located = _located(t, store_name())
    if located is None:
        return _SANDBOX_STOPPED
    with _known_lock:
        known = _known.get(located[0])
    if known is not None:
        return known
    return LayerValues(
        Layer.ACCOUNT,
        read=False,
        note="not read: settings work makes no cloud call; a plan or an apply reads it",
    )


def load_account_layer(t: Target) -> LayerValues:
    """The account layer from the target backend's store (one SSM read), remembered with its time;
    a sandbox that is not running holds none and is not started to ask. A store that cannot be read
    in time (no answer from AWS, a sandbox server that is busy or paused) is
    :class:`AccountStoreUnreadable`, which refuses whatever needs the layer."""
    name = store_name()
    located = _located(t, name)
    if located is None:
        return _SANDBOX_STOPPED
    key, t, server = located
    try:
        if server is not None:
            from .sandbox import answering

            answering()  # a busy or paused server is a refusal, never "no defaults"
        options = account_store(t).load()
    except CloudError as error:
        said = str(error).removeprefix(f"{error.code}: ").rstrip(".")
        unreadable = AccountStoreUnreadable(
            error.code,
            f"{said}; the account defaults are needed because no Dask config, session or cluster "
            "options set these values.",
        )
    else:
        return _remember(key, account_layer(options, f"SSM {name}"), "read")
    raise unreadable


def account_layer(options: dict | None, detail: str) -> LayerValues:
    """The account layer from what the store holds: Coiled's options and the team's guardrails,
    each read strictly (a guardrail edited by hand into nonsense is refused, never dropped)."""
    options = dict(options or {})
    guardrails = Guardrails.from_stored(options.pop(GUARDRAILS_KEY, None), where=detail)
    return replace(layer_from_options(Layer.ACCOUNT, options, detail), guardrails=guardrails)


def save_account(t: Target, ingress, use_scheduler_public_ip: bool | None) -> str:
    """Keep these values (``None``: leave the stored one) as the account-wide defaults; returns
    where they went (``SSM <parameter>``)."""
    return set_backend_options(
        ingress=to_coiled(ingress) if ingress is not None else None,
        use_scheduler_public_ip=use_scheduler_public_ip,
        aws_region=t.region,
    )


def set_backend_options(
    account: str | None = None,
    workspace: str | None = None,
    backend: str = "aws",
    ingress=None,
    firewall=None,
    network=None,
    aws_region: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    gcp_service_creds_file=None,
    gcp_service_creds_dict=None,
    gcp_project_id=None,
    gcp_region=None,
    gcp_zone=None,
    instance_service_account=None,
    zone=None,
    registry_type=None,
    registry_namespace=None,
    registry_access_token=None,
    registry_uri=None,
    registry_username=None,
    log_output=None,
    use_scheduler_public_ip: bool | None = None,
    **kwargs,
) -> str:
    """Set account-wide firewall defaults, taking Coiled's ``coiled.set_backend_options`` call as
    written, in the account store (SSM); returns where they went (``SSM <parameter>``).

    Everyone in the workspace then gets these rules unless their Dask config, session or cluster
    options say otherwise. Only ``ingress`` (or the deprecated ``firewall``) and
    ``use_scheduler_public_ip`` are kept. Every other keyword of Coiled's call (``customer_hosted``,
    ``network``, ``zone``, ``gcp_*``, ``registry_*``, ...) is accepted and named in one warning: it is
    Coiled's own setting, and nothing is sent to Coiled. All mistakes of one call come in one
    :class:`~coiled_jupyter.rules.IngressError`, before any call.

    ``aws_access_key_id``/``aws_secret_access_key``: with the ``aws`` backend, used for this one
    call's boto3 session; under the sandbox, not used at all (the documentation's placeholders work
    there). Never stored, printed or put into a message. ``account``/``workspace``: the Coiled
    workspace whose defaults these are, exactly as the readers name it (see :func:`store_name`);
    ``aws_region``: the region of the store (default: the configured region).
    """
    from .aws import Secret

    # At once, so that a traceback's argument list (%xmode Verbose) shows the secrets masked. Of
    # Coiled's own keywords only the names are kept; their values (secrets among them) are masked too.
    aws_access_key_id = Secret.wrap(aws_access_key_id)
    aws_secret_access_key = Secret.wrap(aws_secret_access_key)
    gcp_service_creds_dict = Secret.wrap(gcp_service_creds_dict)
    registry_access_token = Secret.wrap(registry_access_token)
    kwargs = {name: Secret.wrap(value) for name, value in kwargs.items()}
    keys = AwsKeys(aws_access_key_id, aws_secret_access_key)
    coiled_only = {
        keyword
        for keyword, value in {
            "network": network,
            "gcp_service_creds_file": gcp_service_creds_file,
            "gcp_service_creds_dict": gcp_service_creds_dict,
            "gcp_project_id": gcp_project_id,
            "gcp_region": gcp_region,
            "gcp_zone": gcp_zone,
            "instance_service_account": instance_service_account,
            "zone": zone,
            "registry_type": registry_type,
            "registry_namespace": registry_namespace,
            "registry_access_token": registry_access_token,
            "registry_uri": registry_uri,
            "registry_username": registry_username,
            "log_output": log_output,
            **kwargs,
        }.items()
        if value is not None
    }

    problems: list[str] = []
    for keyword in sorted(coiled_only):
        close = difflib.get_close_matches(keyword, FIREWALL_KEYWORDS, n=1, cutoff=0.8)
        if close:
            problems.append(
                f"set_backend_options has no keyword {keyword!r}; did you mean {close[0]!r}?"
            )
            coiled_only.discard(keyword)
    if backend != "aws":
        problems.append(
            f"backend {backend!r} is not supported; coiled_jupyter manages AWS security "
            "groups (backend='aws')."
        )
    if ingress is not None and firewall is not None:
        problems.append(
            "both ingress and firewall were given, which say the same thing; keep ingress "
            "(firewall is deprecated)."
        )
    options: dict = {}
    ingress, widened = mask_host_bits(ingress)
    firewall, widened_firewall = mask_host_bits(firewall)
    widened += widened_firewall
    try:
        if ingress is not None or firewall is not None:
            values = layer_from_options(Layer.ACCOUNT, {"ingress": ingress, "firewall": firewall})
            options["ingress"] = to_coiled(values.ingress)
    except IngressError as error:
        problems += error.problems
    try:
        if use_scheduler_public_ip is not None:
            options["use_scheduler_public_ip"] = layer_from_options(
                Layer.ACCOUNT, {"use_scheduler_public_ip": use_scheduler_public_ip}
            ).use_scheduler_public_ip
    except IngressError as error:
        problems += error.problems
    t = name = own = None
    try:
        t = target(region=aws_region)
    except IngressError as error:
        problems += error.problems
    try:
        name, own = store_name(workspace or account), store_name()
    except IngressError as error:
        problems += error.problems
    if t is not None and t.backend != "sandbox":
        problems += keys.problems()
    if problems:
        raise IngressError(problems)

    _warn_ignored(
        coiled_only, keys if t.backend == "sandbox" else None, name, own, widened, not options
    )
    location = f"SSM {name}"
    if not options:
        return location
    connection = t.connection()
    if t.backend != "sandbox" and keys.given:
        from .aws import Connection

        connection = Connection(
            region=t.region,
            access_key_id=keys.access_key_id,
            secret_access_key=keys.secret_access_key,
        )
    from .aws import AccountStore

    store = AccountStore(connection, name)
    stored = {**(store.load() or {}), **options}
    store.store(stored)
    located = _located(t, name)
    if located is not None and (not keys.given or t.backend == "sandbox"):
        # (keys given for AWS may be another account's: its store is not this kernel's)
        _remember(located[0], account_layer(stored, location), "written")
    return location


def guardrails(t: Target) -> Guardrails:
    """The team's guardrails, read from the account store now (one SSM call)."""
    return load_account_layer(t).guardrails


def set_guardrails(t: Target, change: Callable[[Guardrails], Guardrails]) -> Guardrails:
    """Change the team's guardrails in the account store (``change`` maps the stored ones to the
    new ones) and keep every other value there; returns what was stored. Each guardrail it adds
    is signed with who set it (the AWS identity of this kernel's credentials) and when."""
    from .aws import AccountStore, caller_arn

    name = store_name()
    located = _located(t, name)
    t = located[1] if located is not None else t.connected()
    store = AccountStore(t.connection(), name)
    stored = store.load() or {}
    before = account_layer(stored, f"SSM {name}").guardrails
    signer = (caller_arn(t.connection()), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    after = change(before).signed(before, *signer)
    stored = {**stored, GUARDRAILS_KEY: after.to_stored()}
    if not after.rails:
        stored.pop(GUARDRAILS_KEY)
    store.store(stored)
    located = _located(t, name)
    if located is not None:
        _remember(located[0], account_layer(stored, f"SSM {name}"), "written")
    return after


def _warn_ignored(
    coiled_only: set[str],
    sandbox_keys: AwsKeys | None,
    name: str,
    own: str,
    widened: list[str],
    nothing_stored: bool,
) -> None:
    """One warning for everything of the call that was not kept as written, and for whom it was
    kept: nothing at all, Coiled's own keywords, unused keys, another workspace, host bits masked as
    AWS does."""
    sentences = list(widened)
    if nothing_stored:
        sentences.append(
            f"No firewall setting was given ({', '.join(FIREWALL_KEYWORDS)}), so nothing was "
            "stored."
        )
    if coiled_only:
        sentences.append(
            f"set_backend_options here keeps only the firewall settings ({', '.join(FIREWALL_KEYWORDS)}) "
            f"and sends nothing to Coiled; {', '.join(sorted(coiled_only))} "
            f"{'is' if len(coiled_only) == 1 else 'are'} Coiled's own, set with "
            "coiled.set_backend_options."
        )
    if sandbox_keys is not None and sandbox_keys.given:
        sentences.append(
            "aws_access_key_id and aws_secret_access_key were not used: the sandbox takes no AWS "
            "keys, and keys are never stored."
        )
    if name != own and not nothing_stored:
        sentences.append(
            f"These defaults are in {name}, which kernels read when their coiled.workspace (or "
            f"coiled.account) is {name.rsplit('/', 1)[-1]!r}; this kernel reads {own}."
        )
    if sentences:
        warnings.warn(" ".join(sentences), UserWarning, stacklevel=3)
