"""Nothing of a rehearsal is left behind, also when the process that made it is killed.

A rehearsal started in a child process is killed with SIGKILL (no exit handler runs): its scheduler
ends by itself, and the next start (of any process) removes the namespaces it left, so that after
closing, ``ip netns list`` and ``ip link`` hold nothing of ours.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys

import pytest

from coiled_jupyter.rehearsal import namespaces
from coiled_jupyter.rehearsal.namespaces import Rehearsal, unavailable

REASON = unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

CHILD = """
import sys
from coiled_jupyter.rehearsal.namespaces import Rehearsal
Rehearsal(8786, 8787).start()
print("ready", flush=True)
sys.stdin.read()  # held open by the test until it kills this process
"""


def host_links_of_ours() -> list[str]:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return [line for line in links.stdout.splitlines() if "cjr" in line or "p-sched" in line]


def test_a_killed_rehearsal_leaves_nothing_after_the_next_start():
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        (serve,) = [
            int(p)
            for p in subprocess.run(
                ["ip", "netns", "pids", f"cjr-{child.pid}-sched"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
        ]
        watched = os.pidfd_open(serve)
        child.kill()
        child.wait()
        # The scheduler notices that its parent is gone and ends by itself.
        ended, _, _ = select.select([watched], [], [], 60)
        os.close(watched)
        assert ended, "the rehearsal's scheduler outlived the process that started it"
        left = namespaces.ours(child.pid)
        assert left, "the killed rehearsal left no namespace: nothing to clean here"
        assert set(left) <= set(namespaces.leftovers())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()
    with Rehearsal(8786, 8787) as again:
        assert again.alive
        assert namespaces.ours(child.pid) == []  # removed by the next start
    assert namespaces.ours() == []
    assert host_links_of_ours() == []


def test_an_idle_rehearsal_is_torn_down():
    from coiled_jupyter.rehearsal import rehearse

    running = rehearse.current(8786, 8787)
    assert rehearse.current(8786, 8787) is running  # reused, not built again
    rehearse._touch(0.05)
    idle = rehearse._idle
    idle.join(60)  # the idle clock ran out and stopped the rehearsal
    assert not idle.is_alive()
    assert rehearse._current is None and not running.alive
    assert namespaces.ours() == []
