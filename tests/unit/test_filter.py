"""The ss filter language, checked on hand-made sockets: operators, precedence and address rules."""

from __future__ import annotations

import socket
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpkit.errors import UsageError
from udpkit.inventory import SocketState, UdpSocket
from udpkit.inventory.filter import parse_filter, tokenize


def sock(local: str, lport: int, peer: str | None = None, pport: int = 0, *, device: str | None = None,
         mark: int | None = None) -> UdpSocket:
    family = socket.AF_INET6 if ":" in local else socket.AF_INET
    wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
    state = SocketState.ESTABLISHED if pport else SocketState.CLOSE
    return UdpSocket(family, state, 0, 0, local, lport, peer or wildcard, pport, device, 1, 0, 1, None,
                     None, None, None, mark, None, ())


NTP = sock("0.0.0.0", 123)
DNS_CLIENT = sock("127.0.0.1", 40000, "127.0.0.1", 53)
V6 = sock("::1", 5353)
MAPPED = sock("::ffff:127.0.0.1", 41000, "::ffff:127.0.0.1", 53)
BOUND = sock("0.0.0.0", 9999, device="lo", mark=0x12)
ALL = [NTP, DNS_CLIENT, V6, MAPPED, BOUND]


def selected(expr: str | list[str]) -> list[UdpSocket]:
    f = parse_filter(expr)
    return [s for s in ALL if f.matches(s)]


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("sport = :123", [NTP]), ("sport == 123", [NTP]), ("sport eq :ntp", [NTP]), ("sport :123", [NTP]),
        ("dport = :domain", [DNS_CLIENT, MAPPED]), ("dport != :53", [NTP, V6, BOUND]), ("dport ne :53", [NTP, V6, BOUND]),
        ("sport > :9999", [DNS_CLIENT, MAPPED]), ("sport gt :9999", [DNS_CLIENT, MAPPED]),
        ("sport >= :9999", [DNS_CLIENT, MAPPED, BOUND]), ("sport < :5353", [NTP]), ("sport <= :5353", [NTP, V6]),
        ("src 127.0.0.1", [DNS_CLIENT, MAPPED]),  # an IPv4 address also matches IPv4-mapped IPv6
        ("src [::ffff:127.0.0.1]", [MAPPED]), ("src 127.0.0.0/8", [DNS_CLIENT, MAPPED]), ("src [::1]", [V6]),
        ("src [::1]:5353", [V6]), ("src [::1]:5354", []), ("src 0.0.0.0", [NTP, BOUND]), ("src *:123", [NTP]),
        ("src ::/0", [V6, MAPPED]), ("dst = 127.0.0.1:53", [DNS_CLIENT, MAPPED]), ("src inet6:[::1]", [V6]),
        ("not dport = :53", [NTP, V6, BOUND]), ("! sport = :123", [DNS_CLIENT, V6, MAPPED, BOUND]),
        ("dev = lo", [BOUND]), ("dev != lo", [NTP, DNS_CLIENT, V6, MAPPED]), ("fwmark = 0x12", [BOUND]),
        ("fwmark = 0x2/0x2", [BOUND]), ("fwmark = 0", [NTP, DNS_CLIENT, V6, MAPPED]), ("", ALL),
        ("sport = :123 or sport = :5353", [NTP, V6]), ("sport = :123 || sport = :5353", [NTP, V6]),
        ("sport = :123 and dport = :0", [NTP]), ("sport = :123 && dport = :53", []),
        ("sport = :123 dport = :0", [NTP]),  # juxtaposition is "and"
    ],
)
def test_expressions_select_like_ss(expr: str, expected: list[UdpSocket]) -> None:
    assert selected(expr) == expected


def test_and_or_have_no_precedence_they_group_left_to_right_as_in_ss() -> None:
    # (sport 123 or sport 5353) and dport 53 -> nothing; with C-like precedence NTP would match.
    assert selected("sport = :123 or sport = :5353 and dport = :53") == []
    assert selected("( sport = :123 or sport = :5353 ) and dport = :0") == [NTP, V6]
    assert selected("sport = :123 or ( sport = :5353 and dport = :53 )") == [NTP]


def test_words_may_be_split_or_joined_and_backslash_escapes() -> None:
    assert tokenize(["sport = :53", "or", "(dport", "=", ":1)"]) == ["sport", "=", ":53", "or", "(dport", "=", ":1)"]
    assert tokenize(["a\\ b", "c"]) == ["a b", "c"]
    assert selected(["sport", "=", ":123"]) == [NTP]


@pytest.mark.parametrize(
    "expr, message",
    [
        ("sport = :bogus", '"bogus" does not look like a port'),
        ("src ::1", 'an inet prefix is expected rather than ":"'),
        ("src 10.0.0.0/33", "bad prefix length"),
        ("foo", "expected a condition"),
        ("sport =", "expected a port at the end"),
        ("( sport = :1", 'expected ")" at the end'),
        ("sport = :1 )", "expected a condition"),
        ("dev = no-such-device0", 'cannot parse device "no-such-device0"'),
        ("fwmark = x", 'cannot parse mark "x"'),
        ("sport = :70000", "out of range"),
        ("src [::1", 'missing "]"'),
    ],
)
def test_malformed_filters_are_usage_errors_naming_the_problem(expr: str, message: str) -> None:
    with pytest.raises(UsageError, match="bad filter") as info:
        parse_filter(expr)
    assert message in str(info.value)


WORDS = ["sport", "dport", "src", "dst", "dev", "fwmark", "=", "!=", "<", ">=", "and", "or", "not", "(", ")",
         ":53", ":ntp", "127.0.0.1", "[::1]", "lo", "0x1", "*", "autobound", "::1", ""]


def _no_dns(host: str, *args: object, **kwargs: object) -> list[object]:
    """Random words must not become DNS queries (tests send nothing off this machine)."""
    raise socket.gaierror(socket.EAI_NONAME, "name resolution disabled in tests")


@pytest.mark.parametrize("words", [["src", "\x00"], ["dst", "a\x00b"], ["src", "\x00/8"], ["dev", "\x00"]])
def test_a_nul_in_an_address_is_a_usage_error(words: list[str]) -> None:
    """Found by the property test below: inet_pton, getaddrinfo and if_nametoindex raise
    ValueError for a NUL."""
    with pytest.raises(UsageError):
        parse_filter(words)


@given(st.lists(st.sampled_from(WORDS) | st.text(max_size=8), max_size=8))
def test_any_words_parse_or_give_a_usage_error(words: list[str]) -> None:
    try:
        with mock.patch.object(socket, "getaddrinfo", _no_dns):
            f = parse_filter(words)
    except UsageError:
        return
    for s in ALL:
        assert f.matches(s) in (True, False)
