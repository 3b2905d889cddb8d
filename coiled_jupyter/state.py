"""This machine's shared state directory and the file locks every kernel on it honours.

The sandbox's state file, the apply locks of every backend and the change counter live here, so that
all kernels and the Jupyter server of one machine agree on them. The directory is
``coiled-jupyter.sandbox.state-dir`` in Dask's config (default ``~/.local/share/coiled-jupyter``);
it holds no secrets.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from .errors import CoiledJupyterError, LockTimeout
from .settings import option

_POLL_SECONDS = 0.05


_CHANGES = "changes"


def _folder() -> Path:
    configured = option("sandbox.state-dir")
    return (
        Path(configured).expanduser()
        if configured
        else Path("~/.local/share/coiled-jupyter").expanduser()
    )


def state_dir() -> Path:
    """The shared state directory, created on first use."""
    folder = _folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CoiledJupyterError(
            f"the state directory {folder} cannot be created ({error.strerror or error}); "
            "set coiled-jupyter.sandbox.state-dir in Dask's config to a writable folder."
        ) from None
    return folder


def lock_name(*parts: str | None) -> str:
    """A file name for a lock on one thing, e.g. ``("aws", "us-east-1", None, "analytics")``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(str(p) for p in parts)) + ".lock"


@contextlib.contextmanager
def file_lock(
    name: str,
    *,
    timeout: float | None = None,
    what: str = "this lock",
    on_wait: Callable[[str], None] | None = None,
):
    """Hold an exclusive lock on ``state_dir()/locks/name`` while the block runs.

    Waits at most ``timeout`` seconds (``None``: for ever), telling ``on_wait`` once, with a sentence,
    that it is waiting; gives up with :class:`LockTimeout` naming ``what`` it waited for.
    """
    folder = state_dir() / "locks"
    try:
        folder.mkdir(exist_ok=True)
        handle = open(folder / name, "w")
    except OSError as error:
        raise CoiledJupyterError(
            f"the lock file {folder / name} cannot be opened ({error.strerror or error}); "
            "check the permissions of coiled-jupyter.sandbox.state-dir."
        ) from None
    with handle:
        _acquire(handle, timeout, what, on_wait)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire(handle, timeout: float | None, what: str, on_wait) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if not told and on_wait is not None:
            on_wait(f"waiting for {what} (another kernel on this machine holds it)")
            told = True
        if deadline is not None and time.monotonic() >= deadline:
            raise LockTimeout(
                f"gave up waiting for {what} after {timeout:g} s: another kernel on this machine "
                "is still holding it; run the command again when it has finished."
            )
        time.sleep(_POLL_SECONDS)


def note_change() -> None:
    """Count one change of what a cloud group or a saved settings file holds (an apply, a destroy,
    a save), by any kernel or server of this machine, so that a view can see it has to read again.

    One byte appended per change: appends need no lock, and the count is the file's size. It never
    raises (it runs after the change, also after a failed one): a view that misses a change only
    shows it when asked to read again."""
    try:
        with open(_folder() / _CHANGES, "ab") as changes:
            changes.write(b".")
    except OSError:
        pass


def change_count() -> int:
    """How many changes were noted; one ``stat``, which creates nothing and starts nothing."""
    try:
        return (_folder() / _CHANGES).stat().st_size
    except OSError:
        return 0


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never a part:
    a temporary file beside it, then a rename. A failure is one sentence and leaves no temporary."""
    import os
    import tempfile

    try:
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise CoiledJupyterError(f"{path} cannot be written: {error.strerror or error}.") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temp, path)
    except OSError as error:
        Path(temp).unlink(missing_ok=True)
        raise CoiledJupyterError(f"{path} cannot be written: {error.strerror or error}.") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def process_alive(pid: int) -> bool:
    """Is process ``pid`` still there (a zombie counts as there until reaped)? Whether it is ours
    to signal does not matter: a process of another user is alive too."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
