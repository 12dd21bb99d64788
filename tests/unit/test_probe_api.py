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


def test_top_ports_rank_the_common_services_first_then_the_services_database() -> None:
    from udpkit.probe import top_ports
    from udpkit.probe.api import DEFAULT_PORTS, TOP_PORTS

    assert top_ports(15) == [int(p) for p in DEFAULT_PORTS.split(",")]
    ranked = top_ports(len(TOP_PORTS) + 3, services={9999: "x", 53: "domain", 40000: "y", 30000: "z"})
    assert ranked[-3:] == [9999, 30000, 40000]  # after udpkit's own list, what /etc/services names, lowest first
    assert sorted(top_ports(65535)) == list(range(1, 65536))
    with pytest.raises(UsageError):
        top_ports(0)


def test_the_table_counts_what_open_hides_and_names_a_proven_protocol() -> None:
    from udpkit.cli.probe import render_table
    from udpkit.probe import PortResult, Target
    from udpkit.services.base import Evidence

    def result(port: int, state: str, reason: str, evidence: Evidence | None = None) -> PortResult:
        return PortResult(Target("192.0.2.1", port, socket.AF_INET), state, reason, 1, None, None, None, evidence)

    results = [result(7007, "open", "echo", Evidence("echo", {})), result(53, "open", "dns", Evidence("dns", {})),
               result(1, "closed", "port-unreachable"), result(2, "closed", "port-unreachable"),
               result(9999, "open|filtered", "no-response")]
    table = render_table(results, [("192.0.2.1", socket.AF_INET)], only_open=True)
    assert "Not shown: 2 closed udp ports (port-unreachable), 1 open|filtered udp port (no-response)" in table
    assert "7007/udp  open   echo " in table  # nmap -sV says echo; /etc/services says afs3-bos
    assert "53/udp    open   domain" in table  # the registered name, when the reply proves that very protocol
