"""The project's errors: one base class for every failure a person or the environment causes.

Front ends (magics, the panel, the REST handlers) catch :class:`CoiledJupyterError` and show its
sentences, with no traceback; anything else is a bug and keeps its traceback. This module imports
nothing, so a front end can catch cloud failures without importing boto3.
"""

from __future__ import annotations

from collections.abc import Iterable


class CoiledJupyterError(Exception):
    """A failure with one sentence per problem, naming the value and the fix; nothing was changed."""

    def __init__(self, problems: Iterable[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ConfigFileError(CoiledJupyterError, ValueError):
    """The Dask config file cannot be read or written safely; nothing was changed."""


class CloudError(CoiledJupyterError, RuntimeError):
    """A call to the cloud failed; ``code`` is the AWS error code and the message says what to do."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(f"{code}: {message}")


class AccountStoreUnreadable(CloudError):
    """The account store could not be read (no credentials, no permission, no network).

    It only matters when no stronger layer decides a value; otherwise the settings are complete
    without it, and a person with a config file or session rules is not blocked by it.
    """


class ForeignGroupError(CloudError):
    """A group with the cluster's name exists but is not tagged as owned by coiled_jupyter."""


class LockTimeout(CoiledJupyterError, TimeoutError):
    """Another kernel held a lock longer than this one would wait; nothing was changed."""


class StaleEdit(CoiledJupyterError):
    """An edit made from a session state that has changed since; it was not made (it would have
    undone the newer change)."""
