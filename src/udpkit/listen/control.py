"""Running a listener as a command does: signals that stop it or report on it, and ``--workers``
processes sharing its ports (``SO_REUSEPORT``) whose statistics are added to its own."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from udpkit.addr import Endpoint
from udpkit.listen.listener import Listener
from udpkit.listen.stats import ListenerStats

__all__ = ["Workers", "install_signals"]

Handler = Callable[[int, FrameType | None], Any] | int | None


def install_signals(listener: Listener, report: Callable[[ListenerStats], None],
                    restore: dict[int, Handler] | None = None) -> dict[int, Handler]:
    """SIGINT/SIGTERM stop the listener cleanly; SIGUSR1 calls ``report`` with the statistics so
    far. ``restore``: put back the handlers a previous call returned."""
    if restore is not None:
        for signum, handler in restore.items():
            signal.signal(signum, handler)
        return {}

    def stop(signum: int, frame: FrameType | None) -> None:
        listener.stop()

    def usr1(signum: int, frame: FrameType | None) -> None:
        report(listener.stats)

    previous: dict[int, Handler] = {}
    for signum, handler in ((signal.SIGINT, stop), (signal.SIGTERM, stop), (signal.SIGUSR1, usr1)):
        previous[signum] = signal.signal(signum, handler)
    return previous


class Workers:
    """``count`` more processes, each with sockets of its own on the listener's resolved ports, so
    the kernel spreads peers over them; each reports its statistics through a pipe at exit.

    Strategy, measured (``bench/ntp_bench.py --workers 1,2``, two cores shared with the load):
    sockets of their own (``SO_REUSEPORT``, one queue per worker) answered 1.01-1.06x one worker
    under a flood and 1.09-1.10x for clients that wait for answers; one socket shared by every
    worker (``EPOLLEXCLUSIVE``, fewer idle queues in theory) answered 0.84-0.88x — the queue's lock
    and cache lines bounced between the cores. A single peer is hashed to one worker: never less
    than one worker answers."""

    def __init__(self, listener: Listener, count: int, bound: list[Endpoint]) -> None:
        self._children: list[tuple[int, int]] = []
        for _ in range(count):
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker: its own listener, then report and leave
                status = 1
                try:
                    os.close(read_fd)
                    for sock in listener.sockets:
                        sock.close()
                    mine = listener.twin(bound)
                    mine.open()
                    signal.signal(signal.SIGTERM, lambda signum, frame: mine.stop())
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    os.write(write_fd, json.dumps(mine.serve()._asdict()).encode())
                    mine.close()
                    status = 0
                finally:
                    os._exit(status)
            os.close(write_fd)
            self._children.append((pid, read_fd))

    def __len__(self) -> int:
        return len(self._children)

    def join(self, stats: ListenerStats) -> ListenerStats:
        """Stop the workers (by the PIDs we forked) and add their statistics to ``stats``."""
        for pid, read_fd in self._children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            chunks = []
            while chunk := os.read(read_fd, 65536):
                chunks.append(chunk)
            os.close(read_fd)
            os.waitpid(pid, 0)
            if chunks:
                stats = stats.merged(json.loads(b"".join(chunks)))
        self._children.clear()
        return stats
