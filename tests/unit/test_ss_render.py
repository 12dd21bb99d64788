"""ss's table layout on hand-made sockets: widths from the longest field, right-aligned addresses,
the State column hidden for one state, and ss's quirks ("PortProcess", the unmeasured last field)."""

from __future__ import annotations

import socket
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpkit.cli import _sstable
from udpkit.cli._sstable import SS_COLUMNS, Column, _widths
from udpkit.cli.ss import _AddrText, _ByIp, _address_fields, parse_args, render_text
from udpkit.inventory import Process, SocketState, SocketTable, UdpSocket


def udp(local: str, lport: int, peer: str = "", pport: int = 0, *, v6only: bool | None = None,
        device: str | None = None, rq: int = 0, procs: tuple[Process, ...] = ()) -> UdpSocket:
    family = socket.AF_INET6 if ":" in local else socket.AF_INET
    peer = peer or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    state = SocketState.ESTABLISHED if pport else SocketState.CLOSE
    return UdpSocket(family, state, rq, 0, local, lport, peer, pport, device, 11, 0, 1, v6only, 0, None, None,
                     None, 0, procs)


def table(*socks: UdpSocket) -> SocketTable:
    columns = {name: [getattr(s, name) for s in socks] for name in UdpSocket._fields}
    return SocketTable([], columns=columns, n=len(socks))  # type: ignore[arg-type]


def text(args: list[str], *socks: UdpSocket) -> list[str]:
    return render_text(table(*socks), parse_args(args)).splitlines()


def test_the_tutorials_ipv4_view() -> None:
    assert text(["-4", "-uln"], udp("0.0.0.0", 123)) == [
        "State  Recv-Q Send-Q Local Address:Port Peer Address:PortProcess",
        "UNCONN 0      0            0.0.0.0:123       0.0.0.0:*          ",
    ]


# Each socket and its line; the one bound to a device sends the whole table down the lookup by
# (family, ip, v6only, device) a socket, and without it the lookup is by the address's text alone.
WILDCARDS = [
    (udp("127.0.0.1", 40123, rq=2496), "UNCONN 2496   0               127.0.0.1:40123            0.0.0.0:*          "),
    (udp("::", 40124, v6only=False), "UNCONN 0      0                       *:40124                  *:*          "),
    (udp("::", 123, v6only=True), "UNCONN 0      0                    [::]:123                 [::]:*          "),
    (udp("::", 40127, v6only=False, device="lo"),
     "UNCONN 0      0                    *%lo:40127                  *:*          "),
    (udp("::ffff:127.0.0.1", 53868, "::ffff:127.0.0.1", 53),
     "ESTAB  0      0      [::ffff:127.0.0.1]:53868 [::ffff:127.0.0.1]:53         "),
]


@pytest.mark.parametrize("with_device", [True, False], ids=["a socket bound to a device", "none"])
def test_addresses_are_right_aligned_and_ipv6_wildcards_follow_v6only(with_device: bool) -> None:
    chosen = [(sock, line) for sock, line in WILDCARDS if with_device or sock.interface is None]
    assert text(["-uan"], *(sock for sock, _line in chosen)) == [
        # "PortProcess": the peer port column is exactly as wide as its header, and ss puts no
        # delimiter before Process.
        "State  Recv-Q Send-Q      Local Address:Port        Peer Address:PortProcess",
        *(line for _sock, line in chosen),
    ]


ADDRESSES = st.sampled_from(["0.0.0.0", "127.0.0.1", "10.0.0.1", "::", "::1", "fe80::1", "::ffff:127.0.0.1"])


@given(st.lists(st.tuples(ADDRESSES, st.sampled_from([None, False, True]), st.sampled_from([None, None, "lo"])),
                max_size=40))
def test_address_fields_are_the_per_socket_lookups_and_leave_the_same_texts_to_measure(
        socks: list[tuple[str, bool | None, str | None]]) -> None:
    families = [socket.AF_INET6 if ":" in ip else socket.AF_INET for ip, _v6, _dev in socks]
    ips = [ip for ip, _v6, _dev in socks]
    v6only = [v6 if ":" in ip else None for ip, v6, _dev in socks]
    devices = [dev for _ip, _v6, dev in socks]
    each, fields = _AddrText(), _AddrText()
    expected = list(map(each.__getitem__, zip(families, ips, v6only, devices)))
    assert _address_fields(_ByIp(fields), families, ips, v6only, devices) == expected
    assert set(fields.values()) == set(each.values())  # the widths come from these


def test_one_state_hides_the_state_column_like_ss() -> None:
    assert text(["-un"], udp("127.0.0.1", 5000, "127.0.0.1", 53))[0].startswith("Recv-Q Send-Q")
    assert text(["-uan"], udp("127.0.0.1", 5000, "127.0.0.1", 53))[0].startswith("State")


def test_service_names_without_n() -> None:
    assert "0.0.0.0:ntp" in text(["-ul"], udp("0.0.0.0", 123))[1]


def test_the_last_lines_process_field_does_not_widen_its_column() -> None:
    p1 = (Process("socat", 10, 3),)
    p2 = (Process("socat", 10, 12),)
    one = text(["-ulnp"], udp("0.0.0.0", 123, procs=p1))
    assert one[0].endswith("PortProcess")  # ss measures a field only when it moves past it
    two = text(["-ulnp"], udp("0.0.0.0", 123, procs=p1), udp("0.0.0.0", 124, procs=p2))
    assert two[0].endswith("Process" + " " * (len(' users:(("socat",pid=10,fd=3))') - len("Process")))
    assert two[2].endswith("fd=12))")


def test_no_header_and_empty_listings() -> None:
    assert text(["-ulnH"], udp("0.0.0.0", 9)) == ["UNCONN 0      0      0.0.0.0:9 0.0.0.0:*"]
    assert text(["-uln"]) == ["State Recv-Q Send-Q Local Address:Port Peer Address:PortProcess"]


def test_terminal_width_is_shared_out_between_columns() -> None:
    lengths = [6, 6, 6, 14, 5, 13, 5, 7]
    compact = _widths(SS_COLUMNS, lengths, None)
    assert compact == [6, 7, 7, 15, 5, 14, 5, 7]
    wide = _widths(SS_COLUMNS, lengths, 100)
    assert sum(wide) == 100 and all(w >= c for w, c in zip(wide, compact))


LAYOUT = [Column("State", " ", False), Column("Local Address:", " ", True), Column("Port", "", False),
          Column("Process", "", False)]
FIELDS = st.tuples(st.sampled_from(["UNCONN", "ESTAB"]), st.sampled_from(["*:", "127.0.0.1:", "[::1]:", "%s:"]),
                   st.integers(0, 65535), st.sampled_from(["", " users:((\"a%d\",pid=1,fd=3))"]))


LAYOUTS = ["C", "Python"] if _sstable._lines is not None else ["Python"]


@pytest.mark.parametrize("layout", LAYOUTS)
@given(rows=st.lists(FIELDS, max_size=12), block=st.integers(1, 4), header=st.booleans(),
       constant=st.lists(st.booleans(), min_size=4, max_size=4))
def test_blocks_hold_the_lines_formatted_one_by_one(layout: str, rows: list[tuple[str, str, int, str]], block: int,
                                                    header: bool, constant: list[bool]) -> None:
    """Whatever the block size, and whether the C extension or Python lays them out (one ``%`` over
    the line format repeated), the lines are each field padded to its column (addresses on the
    left), constant columns written once."""
    columns = [list(col) for col in zip(*rows)] if rows else [[] for _ in LAYOUT]
    constant = [flag and len(set(col)) == 1 for flag, col in zip(constant, columns)]
    lengths = [max([len(str(f)) for f in col] + [len(c.header) if header else 0]) for col, c in zip(columns, LAYOUT)]
    widths = _widths(LAYOUT, lengths, None)
    expected = []
    for row in ([tuple(c.header for c in LAYOUT)] if header else []) + rows:
        line = ""
        for i, (c, width, value) in enumerate(zip(LAYOUT, widths, row)):
            inner = max(width - len(c.delimiter), 0) if i else width
            line += (c.delimiter if i else "") + (str(value).rjust(inner) if c.right else str(value).ljust(inner))
        expected.append(line + "\n")
    port_width = max(map(len, map(str, columns[2])), default=0)
    lines = _sstable._lines if layout == "C" else None
    with patch.object(_sstable, "BLOCK", block), patch.object(_sstable, "_lines", lines):
        blocks = list(_sstable.render_blocks(LAYOUT, columns, header=header, screen=None, constant=constant,
                                             max_len=[None, None, port_width, None]))
    assert "".join(blocks) == "".join(expected)
    assert all(b.count("\n") <= block for b in blocks[1 if header else 0:])


ANY_FIELD = st.one_of(st.text(max_size=8), st.integers(-(2**70), 2**70), st.none(), st.booleans(),
                      st.sampled_from(["*:", "[::]:", "ntp", "é", " users:((\"x\",pid=1,fd=3))"]))


@pytest.mark.skipif(_sstable._lines is None, reason="the optional C extension was not built (no C compiler)")
@given(st.lists(st.lists(ANY_FIELD, min_size=3, max_size=3), max_size=10),
       st.lists(st.integers(0, 12), min_size=3, max_size=3), st.lists(st.booleans(), min_size=3, max_size=3),
       st.lists(st.text(max_size=3), min_size=4, max_size=4))
def test_the_c_lines_are_the_python_format_or_decline(rows: list[list[object]], widths: list[int], rights: list[bool],
                                                      segments: list[str]) -> None:
    """Any field at all: the C layout writes exactly what ``%*s``/``%-*s`` would, or returns None
    (text outside ASCII, None, a bool, an int past 64 bits) for Python to format the block."""
    assert _sstable._lines is not None
    columns = tuple([row[i] for row in rows] for i in range(3))
    got = _sstable._lines(tuple(segments), columns, tuple(widths), tuple(rights), 0, len(rows))
    expected = "".join(
        "".join(seg + ("%*s" if right else "%-*s") % (width, value)
                for seg, value, width, right in zip(segments, row, widths, rights)) + segments[3]
        for row in rows)
    plain = all(type(v) is int and -(2**63) <= v < 2**63 or type(v) is str and v.isascii()
                for row in rows for v in row) and all(s.isascii() for s in segments)
    assert got == (expected if plain else None)
