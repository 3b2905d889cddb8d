"""Account-wide defaults: ``set_backend_options`` (Coiled's signature) and the account store.

The account store is one SSM String parameter in the AWS account (the sandbox has SSM too), holding
JSON in Coiled's shape, so every member of a team reads the same defaults. Its name is
``coiled-jupyter.account-parameter``, suffixed by ``/<workspace>`` when a Coiled workspace is named
(``coiled.workspace``, or Coiled's older ``coiled.account``).
"""

from __future__ import annotations

from ..errors import AccountStoreUnreadable, CloudError
from ..rules import IngressError, to_coiled
from ..settings import Layer, LayerValues, layer_from_options, option
from .target import Target, target


def store_name(workspace: str | None = None) -> str:
    """The SSM parameter of a workspace's defaults (the configured workspace when none is given)."""
    import dask.config

    name = option("account-parameter")
    workspace = (
        workspace
        or dask.config.get("coiled.workspace", None)
        or dask.config.get("coiled.account", None)
    )
    return f"{name}/{workspace}" if workspace else name


def account_store(t: Target, workspace: str | None = None, connection=None):
    from .aws import AccountStore

    return AccountStore(connection or t.connection(), store_name(workspace))


def load_account_layer(t: Target) -> LayerValues:
    """The account layer from the target backend's store (one SSM read)."""
    store = account_store(t)
    try:
        options = store.load()
    except CloudError as error:
        raise AccountStoreUnreadable(
            f"{str(error).rstrip('.')}; the account defaults are needed because no Dask config, "
            "session or cluster options set these values."
        ) from None
    return layer_from_options(Layer.ACCOUNT, options, f"SSM {store.name}")


def save_account(t: Target, ingress, use_scheduler_public_ip: bool | None) -> str:
    """Keep these values (``None``: leave the stored one) as the account-wide defaults; returns
    where they went (``SSM <parameter>``)."""
    set_backend_options(
        ingress=to_coiled(ingress) if ingress is not None else None,
        use_scheduler_public_ip=use_scheduler_public_ip,
        aws_region=t.region,
    )
    return f"SSM {store_name()}"


def set_backend_options(
    account: str | None = None,
    workspace: str | None = None,
    backend: str = "aws",
    ingress=None,
    firewall=None,
    aws_region: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    use_scheduler_public_ip: bool | None = None,
    **unsupported,
) -> None:
    """Set account-wide defaults, with Coiled's signature, in the account store (SSM).

    Everyone in the account then gets these rules unless their Dask config, session or cluster options
    say otherwise. Credentials given here are used for this one call's boto3 session only; they are not
    stored, printed or put into any message.
    """
    from .aws import Secret

    # At once, so that a traceback's argument list (%xmode Verbose) shows them masked.
    aws_access_key_id = Secret.wrap(aws_access_key_id)
    aws_secret_access_key = Secret.wrap(aws_secret_access_key)
    problems = []
    if unsupported:
        problems.append(
            f"set_backend_options here stores only firewall settings; "
            f"{', '.join(sorted(unsupported))} belong to Coiled's own "
            "coiled.set_backend_options."
        )
    if backend != "aws":
        problems.append(
            f"backend {backend!r} is not supported; coiled_jupyter manages AWS security "
            "groups (backend='aws')."
        )
    if problems:
        raise IngressError(problems)
    options = {}
    if ingress is not None or firewall is not None:
        values = layer_from_options(Layer.ACCOUNT, {"ingress": ingress, "firewall": firewall})
        options["ingress"] = to_coiled(values.ingress)
    if use_scheduler_public_ip is not None:
        options["use_scheduler_public_ip"] = layer_from_options(
            Layer.ACCOUNT, {"use_scheduler_public_ip": use_scheduler_public_ip}
        ).use_scheduler_public_ip
    t = target(region=aws_region)
    connection = t.connection()
    if aws_access_key_id or aws_secret_access_key:
        if t.backend == "sandbox":
            raise IngressError(
                [
                    "real AWS keys are never sent to the sandbox; drop "
                    "aws_access_key_id/aws_secret_access_key or set "
                    "coiled-jupyter.backend to 'aws'."
                ]
            )
        from .aws import Connection

        connection = Connection(
            region=t.region,
            access_key_id=aws_access_key_id,
            secret_access_key=aws_secret_access_key,
        )
    store = account_store(t, account or workspace, connection)
    current = store.load() or {}
    store.store({**current, **options})
