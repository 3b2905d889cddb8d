"""The rehearsal's cluster: a real ``distributed`` scheduler and one worker, run inside its namespace.

Started by :mod:`.namespaces` as ``ip netns exec cjr-sched python -m coiled_jupyter.rehearsal.serve``.
It listens on every address of the namespace (IPv4 and IPv6), prints one ``ready`` line once the
worker has joined, and ends when told (SIGTERM) or when the process that started it is gone, so a
killed notebook never leaves a scheduler behind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile


async def serve(parent: int, scheduler_port: int, dashboard_port: int) -> None:
    import dask.config
    from distributed import Scheduler, Worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        watched = os.pidfd_open(parent)
    except ProcessLookupError:
        return
    loop.add_reader(watched, stop.set)
    with (
        tempfile.TemporaryDirectory(prefix="cjr-rehearsal-") as scratch,
        dask.config.set({"temporary-directory": scratch}),
    ):
        # A dashboard on the scheduler's own port (Coiled's HTTPS dashboard on 443) is not served
        # there: distributed cannot share a port (its web server goes to a free one, never probed),
        # and the dashboard's verdict is the scheduler's.
        shared = dashboard_port == scheduler_port
        async with Scheduler(
            host="",
            port=scheduler_port,
            dashboard=not shared,
            dashboard_address=":0" if shared else f":{dashboard_port}",
        ) as scheduler:
            if not shared:
                # distributed serves the dashboard on IPv4 only; a second listener adds IPv6.
                scheduler.http_server.listen(dashboard_port, address="::")
            async with Worker(
                f"tcp://127.0.0.1:{scheduler.port}", nthreads=1, local_directory=scratch
            ):
                print("ready", flush=True)
                await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--scheduler-port", type=int, required=True)
    parser.add_argument("--dashboard-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.parent, args.scheduler_port, args.dashboard_port))


if __name__ == "__main__":
    main()
