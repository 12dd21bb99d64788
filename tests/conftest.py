"""Shared test helpers: markers for root-only and peer-tool tests.

A test that needs root or a peer tool skips with the reason when run as a normal user. The README's
test command sets ``UDPKIT_REQUIRE_PEERS=1`` after installing every peer, and then a missing tool or
missing root fails the test instead: in CI nothing may be skipped silently.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from typing import Any

import pytest

REQUIRE = os.environ.get("UDPKIT_REQUIRE_PEERS") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (UDPKIT_REQUIRE_PEERS=1: the test command should have provided it)")
    pytest.skip(reason)


def need_root() -> None:
    if os.geteuid() != 0:
        _unavailable("needs root (network namespaces, device binding)")


def need_tool(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            _unavailable(f"needs the peer tool {tool!r} on PATH")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None:
        need_root()
    marker = item.get_closest_marker("peer")
    if marker is not None:
        need_tool(*marker.args)


#: Process groups the tests started (helpers in their own sessions): checked when the run ends.
STARTED_GROUPS: list[int] = []


def start_group(argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start a helper in its own process group (a ``socat ...,fork`` parent and its children), so
    that :func:`end_group` ends them all, and the run can tell if any outlived its test."""
    proc: subprocess.Popen[Any] = subprocess.Popen(argv, start_new_session=True, **kwargs)
    STARTED_GROUPS.append(proc.pid)
    return proc


def end_group(proc: subprocess.Popen[Any], timeout: float = 5) -> None:
    """SIGTERM to the helper's whole group, SIGKILL if it lingers, then reap the leader. A process
    that is not a group leader (started some other way) gets the signals itself."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None and not _group_alive(proc.pid):
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            if proc.poll() is None:
                proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(proc.pid):
            break
    if proc.poll() is None:
        proc.wait(timeout=timeout)


def _group_alive(pgid: int) -> bool:
    """Does any process of group ``pgid`` still run? A zombie does not count: a helper's forked child
    whose parent we ended is reaped by init, in its own time."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A helper still alive when the run ends is a leak: end it and fail the run."""
    left = [pgid for pgid in STARTED_GROUPS if _group_alive(pgid)]
    for pgid in left:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"process groups still alive after the run (ended now): {left}", red=True)
