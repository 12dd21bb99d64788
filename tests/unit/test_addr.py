"""Addresses as people type them: bare ports mean both families, brackets for IPv6, strict ranges."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpkit.addr import Endpoint, format_endpoint, parse_address, parse_ip, parse_port, parse_ports
from udpkit.errors import UsageError


def test_a_bare_port_means_both_wildcards_like_the_tutorials_two_socat_commands() -> None:
    assert parse_address("123") == (
        Endpoint("0.0.0.0", 123, socket.AF_INET),
        Endpoint("::", 123, socket.AF_INET6),
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("udp4:53", (Endpoint("0.0.0.0", 53, socket.AF_INET),)),
        ("udp6:53", (Endpoint("::", 53, socket.AF_INET6),)),
        ("UDP:7", (Endpoint("0.0.0.0", 7, socket.AF_INET), Endpoint("::", 7, socket.AF_INET6))),
        ("127.0.0.1:53", (Endpoint("127.0.0.1", 53, socket.AF_INET),)),
        ("[::1]:123", (Endpoint("::1", 123, socket.AF_INET6),)),
        ("[fe80::1%lo]:123", (Endpoint("fe80::1", 123, socket.AF_INET6, "lo"),)),
        ("udp6:[::1]:0", (Endpoint("::1", 0, socket.AF_INET6),)),
    ],
)
def test_explicit_addresses(text: str, expected: tuple[Endpoint, ...]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "abc", "65536", "-1", "1.2.3.4", "1.2.3.4:", "::1:53", "[::1]53", "[::1", "udp4:[::1]:5",
     "udp6:127.0.0.1:5", "300.1.1.1:5", "127.0.0.1:70000", "127.0.0.1%lo:5", " 53", "٣"],
)
def test_malformed_addresses_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_address(text)


def test_ports_and_ranges() -> None:
    assert parse_port("0") == 0
    assert parse_ports("53,123,1000-1002,53") == [53, 123, 1000, 1001, 1002]
    for bad in ("0", "1-0", ",", "1,,2", "65536", "+5"):  # "5-" is nmap's open range: 5-65535
        with pytest.raises(UsageError):
            parse_ports(bad)


def test_ip_with_scope_and_normal_form() -> None:
    assert parse_ip("fe80::0001%eth0") == (socket.AF_INET6, "fe80::1", "eth0")
    assert parse_ip("127.0.0.1") == (socket.AF_INET, "127.0.0.1", None)


def test_endpoint_text_brackets_ipv6_and_names_the_device() -> None:
    assert format_endpoint(Endpoint("::1", 123, socket.AF_INET6)) == "[::1]:123"
    assert str(Endpoint("::", 5, socket.AF_INET6, "lo")) == "[::%lo]:5"
    assert str(Endpoint("10.0.0.1", 53, socket.AF_INET)) == "10.0.0.1:53"


@given(st.text(max_size=40))
def test_any_text_parses_or_is_a_usage_error(text: str) -> None:
    try:
        endpoints = parse_address(text)
    except UsageError:
        return
    for ep in endpoints:
        assert 0 <= ep.port <= 65535
        assert parse_address(str(ep)) == (ep,)  # what we print, we read back


@given(st.integers(min_value=0, max_value=65535), st.ip_addresses())
def test_formatted_endpoints_parse_back(port: int, ip: object) -> None:
    family = socket.AF_INET6 if ":" in str(ip) else socket.AF_INET
    text = socket.inet_ntop(family, socket.inet_pton(family, str(ip)))  # the kernel's (and ss's) spelling
    ep = Endpoint(text, port, family)
    assert parse_address(str(ep)) == (ep,)


def test_port_lists_take_nmaps_forms_and_refuse_other_protocols() -> None:
    from udpkit.addr import parse_ports

    assert parse_ports("U:53,161") == [53, 161]
    assert parse_ports("U:53,U:123") == [53, 123]
    assert len(parse_ports("-")) == 65535
    assert parse_ports("-3") == [1, 2, 3] and parse_ports("65534-") == [65534, 65535]
    for bad, message in (("U:53,T:80", "T: names TCP"), ("S:9", "SCTP"), ("X:1", "unknown protocol prefix"),
                         ("53,,54", "empty element"), ("9-3", "greater than")):
        with pytest.raises(UsageError, match=message):
            parse_ports(bad)


def test_one_lookup_of_udp_service_names_for_every_parser() -> None:
    """socat's ports, nc's and the ss filter's all name UDP services through ``udp_service_port``."""
    from udpkit.addr import udp_service_port

    assert udp_service_port("ntp") == 123 and udp_service_port("domain") == 53
    assert udp_service_port("no-such-service") is None
    assert udp_service_port("nt\0p") is None  # cannot be a name: refused, not a crash


def test_the_services_database_is_read_once() -> None:
    """A scan names 65,535 ports: reading /etc/services per name would cost more than the scan."""
    from udpkit.addr import udp_services

    assert udp_services() is udp_services()
