"""socat's UDP addresses, parsed into listener plans; what we do not support is named, not ignored."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from udpkit.addr import Endpoint
from udpkit.compat.socat import ClientPlan, SocatPlan, Target, parse_socat
from udpkit.errors import UsageError
from udpkit.net import Membership, MulticastSend


def test_the_tutorials_two_commands() -> None:
    v4 = parse_socat("UDP4-LISTEN:123,fork", "/dev/null")
    assert v4.endpoint == Endpoint("0.0.0.0", 123, socket.AF_INET) and v4.fork and v4.mode == "listen"
    assert v4.target == Target("discard")
    v6 = parse_socat("UDP6-LISTEN:123,ipv6only=1,fork", "/dev/null")
    assert v6.endpoint == Endpoint("::", 123, socket.AF_INET6) and v6.v6only and v6.fork


def test_udp6_listen_is_dual_stack_unless_ipv6only_and_udp_listen_is_ipv4() -> None:
    assert not parse_socat("UDP6-LISTEN:5", "/dev/null").v6only
    assert parse_socat("udp-listen:5", "/dev/null").endpoint.family == socket.AF_INET
    assert parse_socat("UDP-LISTEN:5,pf=ip6", "/dev/null").endpoint.family == socket.AF_INET6


def test_options() -> None:
    plan = parse_socat("UDP4-LISTEN:5353,fork,reuseaddr,so-reuseport,bind=127.0.0.1,range=10.0.0.0/8,"
                       "max-children=10,rcvbuf=65536,su=nobody", "UDP4:127.0.0.1:53")
    assert plan.endpoint.ip == "127.0.0.1" and plan.reuseaddr and plan.reuseport
    assert plan.allow == (ipaddress.ip_network("10.0.0.0/8"),) and plan.max_children == 10
    assert plan.rcvbuf == 65536 and plan.user == "nobody"
    assert plan.target == Target("relay", family=socket.AF_INET, host="127.0.0.1", port=53)
    assert parse_socat("UDP6-LISTEN:5,range=[::1/128]", "-").allow == (ipaddress.ip_network("::1/128"),)
    assert parse_socat("UDP4-LISTEN:5,range=10.1.0.0:255.255.0.0", "-").allow == (ipaddress.ip_network("10.1.0.0/16"),)


@pytest.mark.parametrize(
    "second, target",
    [
        ("STDOUT", Target("stdout")), ("STDIO", Target("stdio")), ("-", Target("stdio")), ("PIPE", Target("echo")),
        ("./out.bin", Target("file", path="./out.bin")), ("/tmp/x:y", Target("file", path="/tmp/x:y")),
        ("CREATE:log", Target("file", path="log", truncate=True)),
        ("OPEN:log", Target("file", path="log", must_exist=True, append=False)),  # socat writes from the start
        ("OPEN:/var/log/x,creat,append", Target("file", path="/var/log/x")),  # socat's logging idiom
        ("OPEN:x,o-creat,excl,perm=0600", Target("file", path="x", append=False, exclusive=True, perm=0o600)),
        ("GOPEN:x,trunc", Target("file", path="x", truncate=True)),
        ("UDP6:[::1]:53", Target("relay", family=socket.AF_INET6, host="::1", port=53)),
        ("UDP-SENDTO:localhost:53", Target("relay", family=None, host="localhost", port=53)),
        ("UDP4:127.0.0.1:domain", Target("relay", family=socket.AF_INET, host="127.0.0.1", port=53)),
    ],
)
def test_second_addresses(second: str, target: Target) -> None:
    assert parse_socat("UDP4-RECVFROM:9", second).target == target


@pytest.mark.parametrize(
    "first, second, message",
    [
        ("TCP4-LISTEN:80", "/dev/null", "unsupported socat address type 'TCP4-LISTEN'"),
        ("UDP4-LISTEN:123,fork", "UNIX-CONNECT:/run/x.sock", "unsupported socat address type .UNIX-CONNECT."),
        ("UDP4-LISTEN:123,fork", "EXEC:cat,pty", "pty option is not supported"),
        ("UDP4-LISTEN:123,crlf", "/dev/null", "unsupported socat option 'crlf'"),
        ("UDP4-LISTEN:123,ipv6only=2", "/dev/null", "expected 0 or 1"),
        ("UDP4-LISTEN", "/dev/null", "takes one parameter"),
        ("UDP4-LISTEN:99999", "/dev/null", "out of range"),
        ("UDP4-LISTEN:5,bind=::1", "/dev/null", "is not an IPv4 address"),
        ("UDP4-LISTEN:5,range=nonsense", "/dev/null", "bad socat option range"),
        ("UDP4-LISTEN:5,fork=1", "/dev/null", "takes no value"),
        ("UDP4-LISTEN:5", "UDP4:127.0.0.1", "needs a host and a port"),
        ("UDP4-LISTEN:5", "STDIN", "STDIN"),
        ("UDP4-LISTEN:5", "out.log", 'unknown device/address "out.log"'),  # socat says so too (exit 1; ours 2)
        ("UDP4-LISTEN:nosuchsvc", "/dev/null", "no such UDP service"),
    ],
)
def test_unsupported_and_malformed_parts_are_named(first: str, second: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_socat(first, second)


def test_the_client_form_in_either_order() -> None:
    target = Target("relay", family=socket.AF_INET, host="127.0.0.1", port=53)
    assert parse_socat("-", "UDP4:127.0.0.1:53") == ClientPlan(target)
    # UDP-SENDTO is not connected: it sends with sendto and hears its peer only, as socat's
    assert parse_socat("UDP4-SENDTO:127.0.0.1:53", "STDIO") == ClientPlan(target, mode="sendto", stdio_first=False)


def test_ports_may_be_service_names_as_socat_takes_them() -> None:
    assert parse_socat("UDP4-LISTEN:ntp,fork", "/dev/null").endpoint.port == 123
    assert parse_socat("UDP6-RECVFROM:domain", "PIPE").endpoint.port == 53


def test_the_client_forms_directions_and_options() -> None:
    target = Target("relay", family=socket.AF_INET, host="127.0.0.1", port=53)
    assert parse_socat("STDIN", "UDP4:127.0.0.1:53", "u") == ClientPlan(target, send=True, receive=False)
    assert parse_socat("-", "UDP4:127.0.0.1:53", "u") == ClientPlan(target, send=True, receive=False)
    assert parse_socat("-", "UDP4:127.0.0.1:53", "U") == ClientPlan(target, send=False, receive=True)
    assert parse_socat("UDP4:127.0.0.1:53", "-", "u") == ClientPlan(target, send=False, receive=True,
                                                                     stdio_first=False)
    assert parse_socat("UDP4:127.0.0.1:53", "STDOUT") == ClientPlan(target, send=False, receive=True,
                                                                    stdio_first=False)
    assert parse_socat("-", "UDP4:127.0.0.1:53,sp=4000,reuseaddr").source == ("", 4000)
    assert parse_socat("-", "UDP4:127.0.0.1:53,bind=127.0.0.2").source == ("127.0.0.2", 0)
    assert parse_socat("-", "UDP4:127.0.0.1:53,bind=127.0.0.2:ntp").source == ("127.0.0.2", 123)
    assert parse_socat("-", "UDP6:[::1]:53,bind=[::1]:4000").source == ("::1", 4000)
    for second, message in (("UDP4:127.0.0.1:53,crlf", "unsupported socat option 'crlf'"),
                            ("UDP4:127.0.0.1:53,sp", "needs a value")):
        with pytest.raises(UsageError, match=message):
            parse_socat("-", second)
    with pytest.raises(UsageError, match="no direction"):
        parse_socat("STDIN", "UDP4:127.0.0.1:53", "U")


def test_group_and_broadcast_options_as_socat_writes_them() -> None:
    plan = parse_socat("UDP4-RECV:5000,ip-add-membership=239.1.1.1:lo", "-")
    assert isinstance(plan, SocatPlan) and plan.memberships == (Membership("239.1.1.1", "lo"),)
    plan = parse_socat("UDP4-RECVFROM:5000,ip-add-membership=239.1.1.1:127.0.0.1,fork", "PIPE")
    assert isinstance(plan, SocatPlan) and plan.memberships == (Membership("239.1.1.1", None, None, "127.0.0.1"),)
    plan = parse_socat("UDP4-RECV:5000,ip-add-source-membership=232.1.1.1:127.0.0.1:10.0.0.2", "-")
    assert isinstance(plan, SocatPlan) and plan.memberships == (Membership("232.1.1.1", None, "10.0.0.2", "127.0.0.1"),)
    plan = parse_socat("UDP6-RECV:5000,ipv6-join-group=[ff02::1:3]:lo", "-")
    assert isinstance(plan, SocatPlan) and plan.memberships == (Membership("ff02::1:3", "lo"),)
    plan = parse_socat("UDP6-RECV:5000,ipv6-join-group=ff02::1:3:lo", "-")
    assert isinstance(plan, SocatPlan) and plan.memberships == (Membership("ff02::1:3", "lo"),)
    client = parse_socat("-", "UDP4-DATAGRAM:10.0.0.255:5000,broadcast")
    assert isinstance(client, ClientPlan) and client.mode == "datagram"
    assert client.multicast == MulticastSend(broadcast=True)
    client = parse_socat("-", "UDP4-DATAGRAM:239.1.1.1:5000,ip-multicast-if=lo,ip-multicast-loop=0,ip-multicast-ttl=4")
    assert isinstance(client, ClientPlan) and client.multicast == MulticastSend("lo", False, 4)
    client = parse_socat("-", "UDP6-SENDTO:[ff02::1]:5000,ipv6-multicast-if=lo,ipv6-multicast-hops=2")
    assert isinstance(client, ClientPlan) and (client.mode, client.multicast) == ("sendto", MulticastSend("lo", None, 2))


@pytest.mark.parametrize("option, message", [
    ("ip-add-membership=10.0.0.1:lo", "not a multicast address"),
    ("ip-add-membership=239.1.1.1", "expected GROUP:INTERFACE"),
    ("ip-add-membership=239.1.1.1:nosuchif0", "no interface named"),
    ("ipv6-join-group=[ff02::1]:lo", "other family"),
    ("ip-add-membership=[ff02::1]:lo", "takes an IPv4 group"),
    ("ip-multicast-loop=2", "expected 0 or 1"),
    ("ip-multicast-ttl=300", "expected 0 to 255"),
    ("broadcast=yes", "takes no value"),
])
def test_bad_group_options_are_named(option: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_socat(f"UDP4-RECV:5000,{option}", "-")
