"""Shared test helpers: markers for root-only and peer-tool tests.

A test that needs root or a peer tool skips with the reason when run as a normal user. The README's
test command sets ``UDPKIT_REQUIRE_PEERS=1`` after installing every peer, and then a missing tool or
missing root fails the test instead: in CI nothing may be skipped silently.
"""

from __future__ import annotations

import os
import shutil

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
