"""Receive loops for one socket that answer each datagram on the spot: the cheapest paths, for a
responder on a socket bound to one unicast address (no destination to look up, nothing to route).

Each loop hands ``answer(data, peer[, now])`` every datagram — the caller's per-datagram work,
which counts and replies and returns ``True`` to stop — and ``on_error`` every error the kernel
reports in place of a datagram (an ICMP error for an earlier reply). None of them raises for what
a peer did.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from udpkit.net.rx import MAX_DATAGRAM, TIMESTAMP_SPACE, OnError, kernel_time

__all__ = ["Answer", "drain_plain", "drain_timed", "serve_beside_main", "serve_blocking"]

#: The signals a fault in a thread raises in that thread: blocking them there is undefined behaviour.
_FAULTS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL})

#: The caller's work for one datagram: ``answer(data, peer, now=None)``; ``True`` ends the loop.
Answer = Callable[..., bool]


def drain_plain(sock: socket.socket, answer: Answer, limit: int, on_error: OnError) -> bool:
    """Up to ``limit`` datagrams waiting on the non-blocking ``sock``, each by ``recvfrom``."""
    recvfrom = sock.recvfrom
    for _ in range(limit):
        try:
            data, peer = recvfrom(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            on_error(exc)
            continue
        if answer(data, peer):
            return True
    return False


def drain_timed(sock: socket.socket, answer: Answer, limit: int, on_error: OnError) -> bool:
    """``drain_plain`` with each datagram's kernel receive time (``SO_TIMESTAMPNS``) as ``now``,
    for a time service: ``recvmsg`` with room for the timestamp alone."""
    recvmsg, space = sock.recvmsg, TIMESTAMP_SPACE
    for _ in range(limit):
        try:
            data, ancillary, _flags, peer = recvmsg(MAX_DATAGRAM, space)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            on_error(exc)
            continue
        if answer(data, peer, kernel_time(ancillary)):
            return True
    return False


def serve_blocking(sock: socket.socket, answer: Answer, *, deadline: float | None, stopping: Callable[[], bool],
                   on_error: OnError, every_1024: Callable[[], Any]) -> None:
    """Answer datagram by datagram with a blocking ``recvfrom``: no ``epoll`` wake-up and no failed
    read per request, so an echo round trip costs what a bare Python loop's does. Ends at
    ``deadline`` (monotonic), when ``answer`` says so, or once ``stopping()`` — which the caller
    makes prompt with ``sock.shutdown(SHUT_RD)``: on an unconnected UDP socket that only interrupts
    the wait (``recvfrom`` returns ``(b"", None)``). ``every_1024`` is called every 1,024 datagrams."""
    recvfrom = sock.recvfrom
    handled = 0
    try:
        while not stopping():
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
            else:
                sock.settimeout(None)
            try:
                data, peer = recvfrom(MAX_DATAGRAM)
            except (TimeoutError, InterruptedError):
                continue
            except OSError as exc:
                on_error(exc)
                continue
            if peer is None:  # woken by the caller's shutdown(SHUT_RD)
                continue
            if answer(data, peer):
                break
            handled += 1
            if not handled & 1023:
                every_1024()
    finally:
        sock.setblocking(False)


def serve_beside_main(serve: Callable[[], None], stop: Callable[[], None], *, check: float = 0.25) -> None:
    """Run ``serve``, a loop that waits in a receive with no timeout, so that a signal still ends it
    at once.

    A receive without a timeout arms no timer each time the socket sleeps (``SO_RCVTIMEO`` arms
    and cancels one per wait: 2 % of an echo round trip with the other core busy, measured). But
    Python runs a signal handler only when the main thread is back in the interpreter, and a loop
    in C between two system calls is not: a SIGTERM that lands there would wait for the next
    datagram, for ever if none comes. So on the main thread ``serve`` runs in a thread of its own
    that blocks the asynchronous signals; the kernel delivers them to the main thread, waiting
    here, whose handler runs at once (``stop``, from it or from another thread, must wake
    ``serve``'s receive, e.g. with ``shutdown(SHUT_RD)``). Off the main thread no handler can run
    anyway, and ``serve`` runs in place. ``serve``'s exception is raised here; an exception here
    (``KeyboardInterrupt``) calls ``stop``, waits for ``serve`` to end, and goes on up."""
    if threading.current_thread() is not threading.main_thread():
        serve()
        return
    failed: list[BaseException] = []

    def run() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals() - _FAULTS)
        try:
            serve()
        except BaseException as exc:  # raised again on the main thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="udpkit-serve", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(check)  # a signal interrupts the wait and its handler runs; check bounds a near miss
    except BaseException:
        stop()
        thread.join(10.0)
        raise
    if failed:
        raise failed[0]
