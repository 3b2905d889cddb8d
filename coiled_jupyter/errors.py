"""The project's errors: one base class for every failure a person or the environment causes.

Front ends (magics, the panel, the REST handlers) catch :class:`CoiledJupyterError` and show its
sentences, with no traceback; anything else is a bug and keeps its traceback. This module imports
nothing of the project or of boto3, so a front end can catch cloud failures without importing boto3.

Every sentence built from another library's text (botocore's exceptions, AWS's error messages, an
HTTP client's complaint about a header) passes through :func:`scrub` first: such text can quote the
signed request, with its access key id, signature and session token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

HIDDEN = "[hidden]"
# Each pattern finds one kind of credential in free text; scrub() replaces the secret part.
_CREDENTIAL_PATTERNS = (
    # SigV4 parameters of a header or a query: Credential=AKIA.../20260101/..., Signature=0a1b...
    re.compile(r"(?i)((?:X-Amz-)?(?:Credential|Signature|Security-Token)=)[^\s,;&'\"]+"),
    # Headers quoted with their values: x-amz-security-token: FwoG..., Authorization: AWS4-...
    re.compile(r"(?i)(x-amz-security-token['\"]?\s*:\s*['\"]?)[^\s,;&'\"}]+"),
    re.compile(r"(?i)(authorization['\"]?\s*:\s*['\"]?)[^'\"\r\n;}]+"),
    # Access key ids (long-term AKIA, temporary ASIA, and the other IAM unique-id prefixes).
    re.compile(
        r"()(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA)[A-Z0-9]{12,}"
    ),
    # A secret access key: 40 characters of base64, alone.
    re.compile(r"()(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
    # A session token (hundreds of base64 characters) or any other long opaque blob.
    re.compile(r"()[A-Za-z0-9/+]{80,}={0,2}"),
    # A user and password in a URL (a proxy's): http://user:password@proxy:3128
    re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s'\"]+(?=@)"),
)


def scrub(text: str) -> str:
    """``text`` with access key ids, signatures, session tokens and secret keys replaced by
    ``[hidden]``: for every message taken from another library's exception or from AWS."""
    for pattern in _CREDENTIAL_PATTERNS:
        text = pattern.sub(lambda match: match.group(1) + HIDDEN, text)
    return text


class CoiledJupyterError(Exception):
    """A failure with one sentence per problem, naming the value and the fix; nothing was changed."""

    def __init__(self, problems: Iterable[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ConfigFileError(CoiledJupyterError, ValueError):
    """The Dask config file cannot be read or written safely; nothing was changed."""


class CloudError(CoiledJupyterError, RuntimeError):
    """A call to the cloud failed; ``code`` is the AWS error code and the message says what to do.

    The message is scrubbed (:func:`scrub`): it is often built from AWS's or botocore's text."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(scrub(f"{code}: {message}"))

    def tell(self, sentence: str) -> None:
        """Add to the message what the failure left behind (a half-done apply), same code."""
        self.problems[-1] = scrub(f"{self.problems[-1]} {sentence}")
        self.args = ("\n".join(self.problems),)


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
