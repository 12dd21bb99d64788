"""The probe API's input rules, without sockets: targets resolved once, source addresses checked."""

from __future__ import annotations

import socket

import pytest

from udpkit.errors import UsageError
from udpkit.probe import check_sources, resolve, source_addresses


def test_resolved_pairs_are_kept_without_asking_the_resolver_again(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("resolved twice")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    pairs = [("192.0.2.1", socket.AF_INET), ("2001:db8::1", socket.AF_INET6)]
    assert resolve(pairs) == pairs
    assert resolve(pairs, socket.AF_INET6) == pairs[1:]


def test_sources_are_grouped_by_family_and_must_be_unicast_literals() -> None:
    assert check_sources(["10.0.0.2", "fd00::2", "10.0.0.3", "10.0.0.2"]) == {
        socket.AF_INET: ["10.0.0.2", "10.0.0.3"], socket.AF_INET6: ["fd00::2"]}
    for bad in ("example.org", "224.0.0.1", "0.0.0.0", "ff02::1", "255.255.255.255"):
        with pytest.raises(UsageError):
            check_sources([bad])


def test_a_source_prefix_names_each_of_its_addresses() -> None:
    assert source_addresses(["2001:db8::/126"]) == ["2001:db8::", "2001:db8::1", "2001:db8::2", "2001:db8::3"]
    assert source_addresses(["10.0.0.0/30,10.0.1.1"]) == ["10.0.0.1", "10.0.0.2", "10.0.1.1"]
    with pytest.raises(UsageError, match="at most 256"):
        source_addresses(["10.0.0.0/16"])
