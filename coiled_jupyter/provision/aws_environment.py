"""Whose AWS a call would reach, as a digest: what boto3 signs as and where it sends, read from the
kernel's environment without importing boto3, so that settings work can tell one account from another
and stay light.
"""

from __future__ import annotations

import hashlib
import os

# Where boto3 looks for a profile's credentials, region and endpoint when a Connection names none.
_AWS_FILES = (
    ("AWS_CONFIG_FILE", "~/.aws/config"),
    ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
)


def environment_digest() -> str:
    """A digest of everything in the kernel's environment that decides whom boto3 signs as and
    where it sends: every ``AWS_*`` variable and the state of the AWS config and credentials files.

    Part of the boto3 client cache key, so that ``AWS_PROFILE``, new keys, a region or an endpoint
    set in a running kernel take effect at the next call, instead of the first client's account being
    used for ever; and of the key under which the account defaults last read are remembered. A
    digest, so that no secret is kept in either key.
    """
    digest = hashlib.sha256()
    for name in sorted(k for k in os.environ if k.upper().startswith("AWS_")):
        digest.update(f"{name}\0{os.environ[name]}\0".encode("utf-8", "surrogatepass"))
    for variable, default in _AWS_FILES:
        path = os.path.expanduser(os.environ.get(variable) or default)
        try:
            info = os.stat(path)
            digest.update(f"{path}\0{info.st_mtime_ns}\0{info.st_size}\0".encode())
        except OSError:
            digest.update(f"{path}\0-\0".encode())
    return digest.hexdigest()
