"""nc's command line and decision rule, without sockets."""

from __future__ import annotations

import socket

import pytest

from udpkit.cli._getopt import getopt
from udpkit.compat.nc import NC_OPTIONS, NcPlan, parse_nc, succeeded_line, udptest
from udpkit.errors import UsageError


def plan(*argv: str) -> NcPlan:
    return parse_nc(*getopt(argv, NC_OPTIONS, {}))


def test_the_seed_command() -> None:
    p = plan("-4", "-u", "-vz", "127.0.0.1", "123")
    assert (p.family, p.verbose, p.scan, p.host, p.ports) == (socket.AF_INET, 1, True, "127.0.0.1", ("123",))


def test_ranges_lists_and_names_expand_as_nc_does() -> None:
    assert plan("-u", "h", "25-22", "53", "ntp").ports == ("22", "23", "24", "25", "53", "123")


def test_options_may_follow_the_operands() -> None:
    p = plan("127.0.0.1", "53", "-u", "-w", "2", "-n")
    assert (p.timeout, p.numeric, p.ports) == (2, True, ("53",))


def test_listen_forms() -> None:
    assert plan("-u", "-l", "9999").ports == ("9999",)
    p = plan("-u", "-l", "-s", "::1", "-p", "9998")
    assert (p.host, p.ports) == ("::1", ("9998",))
    assert plan("-ul", "127.0.0.1", "9997").host == "127.0.0.1"


@pytest.mark.parametrize("argv, message", [
    (["-u", "h", "0"], "port number too small: 0"),
    (["-u", "h", "65536"], "port number too large: 65536"),
    (["-u", "h", "nosuchservice"], 'service "nosuchservice" unknown'),
    (["-u", "-4", "-6", "h", "1"], "cannot use -4 and -6 together"),
    (["-z", "h", "1"], "only UDP is supported"),
    (["-u", "-w", "x", "h", "1"], "timeout invalid: x"),
])
def test_refusals(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        plan(*argv)


def test_udptest_writes_twice_then_once_a_second() -> None:
    writes, sleeps = [], []
    assert udptest(lambda: writes.append(1) is None, sleeps.append, None) is True
    assert (len(writes), sleeps) == (5, [1.0, 1.0, 1.0])
    assert udptest(lambda: True, lambda s: None, 0) is True


def test_udptest_fails_on_the_first_refused_write() -> None:
    answers = iter([True, True, False, True])
    assert udptest(lambda: next(answers), lambda s: None, 5) is False


def test_succeeded_line_names_host_address_and_service() -> None:
    assert succeeded_line("localhost", "9", "127.0.0.1", numeric=False) == \
        f"Connection to localhost (127.0.0.1) 9 port [udp/{socket.getservbyport(9, 'udp')}] succeeded!\n"
    assert succeeded_line("127.0.0.1", "9", "127.0.0.1", numeric=True) == \
        "Connection to 127.0.0.1 9 port [udp/*] succeeded!\n"
