"""Signals reach a listener whose loop waits in a receive with no timeout (the blocking loop, where
the echo loop runs in C: on one socket, or on a socket a family waited on together): SIGUSR1 reports
and SIGTERM stops at once, idle or under load, and a loop that never returns to Python is no reason
for a signal to wait for the next datagram."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

import pytest

from udpkit.net.loops import serve_beside_main


class Cli:
    """``udpkit listen`` as a user runs it, its stderr read line by line as it comes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "udpkit", "listen", *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.line(10.0)
        assert first.startswith("udpkit listen:"), first
        found = re.search(r":(\d+)\b", first)  # (the first socket's port: a port alone binds both families)
        assert found is not None, first
        self.port = int(found.group(1))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def line(self, timeout: float) -> str:
        return self.lines.get(timeout=timeout)

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


#: One socket, and the default of a port alone: one socket a family, each echoed on a thread of its own.
WHERE = pytest.mark.parametrize("where", ["127.0.0.1:0", "0"], ids=["one socket", "a socket a family"])


@pytest.fixture(params=["127.0.0.1:0", "0"], ids=["one socket", "a socket a family"])
def echo(request: pytest.FixtureRequest) -> Iterator[Cli]:
    cli = Cli(request.param, "--respond", "echo", "--rate-limit", "0")
    try:
        yield cli
    finally:
        cli.end()


def ping_pong(port: int, stop: threading.Event, trips: list[int]) -> None:
    """One request in flight until ``stop`` (at most 20 s): the load under which the loop stays in C."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.connect(("127.0.0.1", port))
        c.settimeout(0.5)
        end = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < end:
            c.send(b"ping")
            try:
                c.recv(64)
            except (TimeoutError, ConnectionRefusedError):
                continue
            trips[0] += 1


def test_sigusr1_reports_and_sigterm_stops_at_once_while_idle(echo: Cli) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(2)
        c.sendto(b"one", ("127.0.0.1", echo.port))
        assert c.recv(64) == b"one"
    time.sleep(0.3)  # the loop is back in its wait, which has no timeout
    echo.proc.send_signal(signal.SIGUSR1)
    assert "1 datagrams (3 bytes) in, 1 (3 bytes) out" in echo.line(2.0)
    started = time.monotonic()
    echo.proc.send_signal(signal.SIGTERM)
    assert echo.proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 1.0


def test_sigusr1_reports_under_load(echo: Cli) -> None:
    stop, trips = threading.Event(), [0]
    client = threading.Thread(target=ping_pong, args=(echo.port, stop, trips))
    client.start()
    try:
        deadline = time.monotonic() + 10
        while trips[0] < 2000 and time.monotonic() < deadline:
            time.sleep(0.01)
        echo.proc.send_signal(signal.SIGUSR1)
        assert " datagrams (" in echo.line(2.0)
    finally:
        stop.set()
        client.join()
    assert trips[0] > 2000


@WHERE
def test_sigterm_in_the_middle_of_a_flood_that_then_stops_ends_the_listener_at_once(where: str) -> None:
    """A SIGTERM that lands while the loop runs between two system calls, and then no datagram
    comes: it must not wait for one."""
    for attempt in range(8):
        cli = Cli(where, "--respond", "echo", "--rate-limit", "0")
        try:
            stop, trips = threading.Event(), [0]
            client = threading.Thread(target=ping_pong, args=(cli.port, stop, trips))
            client.start()
            deadline = time.monotonic() + 10
            while trips[0] < 500 + 100 * attempt and time.monotonic() < deadline:
                time.sleep(0.001)
            cli.proc.send_signal(signal.SIGTERM)
            stop.set()
            client.join()
            started = time.monotonic()
            assert cli.proc.wait(timeout=5) == 0
            assert time.monotonic() - started < 1.0
        finally:
            cli.end()


# -- serve_beside_main, in this process (pytest runs tests on the main thread) -------------------

def blocked_receive(sock: socket.socket) -> None:
    """A receive with no timeout, woken only by ``shutdown(SHUT_RD)`` (it returns b"")."""
    sock.recv(64)


def test_a_handler_runs_at_once_and_its_stop_wakes_the_receive() -> None:
    assert threading.current_thread() is threading.main_thread()
    ran: list[int] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))

        def stop() -> None:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:  # ENOTCONN on an unconnected UDP socket, which is shut all the same
                pass

        def handler(signum: int, frame: FrameType | None) -> None:
            ran.append(signum)
            stop()

        previous = signal.signal(signal.SIGUSR1, handler)
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1))
        try:
            started = time.monotonic()
            timer.start()
            serve_beside_main(lambda: blocked_receive(sock), stop, check=30.0)
            took = time.monotonic() - started
        finally:
            timer.cancel()
            signal.signal(signal.SIGUSR1, previous)
    assert ran == [signal.SIGUSR1]
    assert took < 5.0  # not the 30 s check: the signal interrupted the main thread's wait


def test_the_serving_threads_exception_is_raised_on_the_caller() -> None:
    def serve() -> None:
        raise OSError(98, "address in use")

    with pytest.raises(OSError, match="address in use"):
        serve_beside_main(serve, lambda: None)


def test_an_exception_on_the_main_thread_stops_the_loop_before_it_propagates() -> None:
    woken = threading.Event()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))

        def stop() -> None:
            woken.set()
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

        def interrupt(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGUSR1, interrupt)
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1))
        try:
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                serve_beside_main(lambda: blocked_receive(sock), stop)
        finally:
            timer.cancel()
            signal.signal(signal.SIGUSR1, previous)
    assert woken.is_set()


def test_off_the_main_thread_it_serves_in_place() -> None:
    where: list[threading.Thread] = []
    outer = threading.Thread(target=serve_beside_main,
                             args=(lambda: where.append(threading.current_thread()), lambda: None))
    outer.start()
    outer.join(5)
    assert where == [outer]


def test_the_busy_poll_is_said_under_debug_and_a_client_waiting_for_each_answer_is_served() -> None:
    """``udpkit --debug listen`` on one address: the receive path names the poll's window, every
    request of a ping-pong is answered, and at the end one line says what the poll did."""
    proc = subprocess.Popen([sys.executable, "-m", "udpkit", "--debug", "listen", "127.0.0.1:0", "--respond", "echo",
                             "--rate-limit", "0", "--busy-poll", "100"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first, path = proc.stderr.readline(), proc.stderr.readline()
        port = int(first.rsplit(":", 1)[1])
        assert path.rstrip().endswith("(reflect) with sendmmsg, polling 100 µs before each wait"), path
        stop, trips = threading.Event(), [0]
        client = threading.Thread(target=ping_pong, args=(port, stop, trips))
        client.start()
        deadline = time.monotonic() + 10
        while trips[0] < 3000 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        client.join()
        proc.send_signal(signal.SIGTERM)
        _out, rest = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and trips[0] >= 3000
    summary = [line for line in rest.splitlines() if " datagrams (" in line]
    assert summary and int(summary[-1].split("udpkit listen: ")[1].split()[0]) >= trips[0], rest
    assert "Traceback" not in rest, rest
    polled = [line for line in rest.splitlines() if line.startswith("udpkit listen: busy poll: ")]
    assert len(polled) == 1 and "requests caught awake" in polled[0], rest
