"""``udpkit ss`` for TCP without sockets: which tables a command line selects, TCP's sock_diag fields,
the ``-o`` timer, ``-i``'s tcp_info text and ``-s``'s arithmetic, each as iproute2 ss 6.1 has them."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.netlink_builder import attr, done, message
from udpkit.cli._sstcp import bandwidth, tcp_info_text
from udpkit.cli.ss import ms_timer, parse_args, render_summary
from udpkit.inventory import CongestionInfo, SocketState, SocketTable, TcpInfo, TcpSocket
from udpkit.inventory import _netlink as nl
from udpkit.inventory.summary import parse_sockstat

_S = SocketState


def test_protocol_and_family_flags_select_tables_as_ss_does() -> None:
    assert parse_args(["-uln"]).protocols == ("udp",) and not parse_args(["-uln"]).netid
    assert parse_args(["-tuln"]).protocols == ("udp", "tcp")  # ss lists UDP before TCP
    assert parse_args(["-tuln"]).netid
    assert parse_args(["-tln"]).protocols == ("tcp",) and not parse_args(["-tln"]).netid
    # A family alone selects every inet table: UDP and TCP here, with the Netid column.
    for args in (["-f", "inet", "-an"], ["-4", "-ln"], ["-6"], ["-A", "inet"]):
        assert parse_args(args).protocols == ("udp", "tcp") and parse_args(args).netid, args
    assert parse_args(["-A", "tcp,udp"]).protocols == ("udp", "tcp")
    assert parse_args(["-4", "-t"]).protocols == ("tcp",) and not parse_args(["-4", "-t"]).netid
    # Nothing chosen: udpkit ss stays a UDP tool (ss would list every kind of socket).
    assert parse_args([]).protocols == ("udp",)


def test_default_states_follow_the_tables() -> None:
    conn = parse_args(["-t"]).states
    assert conn & (1 << _S.ESTABLISHED) and conn & (1 << _S.CLOSE_WAIT)
    assert not conn & ((1 << _S.LISTEN) | (1 << _S.TIME_WAIT) | (1 << _S.SYN_RECV) | (1 << _S.CLOSE))
    assert parse_args(["-u"]).states == 1 << _S.ESTABLISHED
    assert parse_args(["-tl"]).states == (1 << _S.LISTEN) | (1 << _S.CLOSE)


def test_e_shows_timers_and_s_alone_shows_only_the_summary() -> None:
    assert parse_args(["-te"]).timers
    assert parse_args(["-s"]).summary_only and parse_args(["-as"]).summary_only
    assert not parse_args(["-uas"]).summary_only and not parse_args(["-s", "sport = :53"]).summary_only


def test_timers_print_as_ss_prints_them() -> None:
    assert [ms_timer(ms) for ms in (0, 200, 1200, 15000, 59876, 117000, 725000, 3600000)] == [
        "", "200ms", "1.200ms", "15sec", "59sec", "1min57sec", "12min", "60min"]


def test_bandwidths_use_ss_suffixes_or_whole_bits() -> None:
    assert bandwidth(119156363636.0, False) == "119Gbps"[:-3] and bandwidth(35328000000.0, False) == "35.3G"
    assert bandwidth(0.0, False) == "0" and bandwidth(999.0, False) == "999" and bandwidth(1500.0, False) == "1.5k"
    assert bandwidth(119156363636.4, True) == "119156363636"


def test_a_tcp_message_carries_its_timer_and_tcp_info() -> None:
    info = bytearray(232)
    info[5] = 4 | 1  # wscale and timestamps negotiated
    info[6] = 0xA7  # snd_wscale 7, rcv_wscale 10
    struct.pack_into("=I", info, 8, 204000)  # rto
    struct.pack_into("=I", info, 68, 28)  # rtt (µs) -> 0.028 ms
    attrs = attr(nl.INET_DIAG_INFO, bytes(info)) + attr(nl.INET_DIAG_CONG, b"cubic\0")
    chunk = message(state=1, sport=22, dport=40000, dst="10.0.0.2", timer=2, retrans=0, expires=7_199_000,
                    attrs=attrs) + done()
    batch, status = nl.decode_chunk(chunk)
    slow, _ = nl.decode_chunk_slow(chunk)
    assert status == 0
    table: SocketTable[TcpSocket] = SocketTable([batch], record=TcpSocket)
    (sock,) = list(table)
    assert list(SocketTable([slow], record=TcpSocket)) == [sock]
    assert (sock.timer, sock.expires, sock.congestion) == (2, 7_199_000, "cubic")
    assert sock.info is not None and (sock.info.snd_wscale, sock.info.rcv_wscale, sock.info.rto) == (7, 10, 204000)
    assert tcp_info_text(sock, False, True) == " ts cubic wscale:7,10 rto:204 rtt:0.028/0 reordering:0"
    assert sock.to_json()["netid"] == "tcp" and sock.to_json()["timer"]["expires_ms"] == 7_199_000


def test_bbr_and_send_rate_as_ss_shows_them() -> None:
    info = TcpInfo.decode(b"")._replace(state=1, flags=1, snd_mss=32768, rtt=22, rttvar=11, snd_cwnd=10,
                                        reordering=3)
    sock = TcpSocket(socket.AF_INET, _S.ESTABLISHED, 0, 0, "127.0.0.1", 1, "127.0.0.1", 2, None, 1, 0, 1, None,
                     None, None, None, None, None, (), 0, 0, 0, info, "bbr",
                     CongestionInfo("bbr", (0, 0, 22, 0, 0)))
    assert tcp_info_text(sock, False, False) == (
        " bbr rtt:0.022/0.011 mss:32768 cwnd:10 bbr:(bw:0bps,mrtt:0.022) send 119Gbps app_limited")


def test_the_summary_is_ss_arithmetic_over_sockstat() -> None:
    counts = parse_sockstat([
        "sockets: used 10\n", "TCP: inuse 1 orphan 0 tw 8 alloc 1 mem 383\n", "UDP: inuse 2 mem 4\n",
        "UDPLITE: inuse 0\n", "RAW: inuse 0\n", "FRAG: inuse 0 memory 0\n",
        "TCP6: inuse 3\n", "UDP6: inuse 1\n", "RAW6: inuse 1\n", "FRAG6: inuse 0 memory 0\n",
    ])
    counts["tcp_estab"] = 0
    assert render_summary(counts) == (
        "Total: 10\n"
        "TCP:   9 (estab 0, closed 5, orphaned 0, timewait 8)\n"  # 1 - (1 + 3 - 8)
        "\n"
        "Transport Total     IP        IPv6\n"
        "RAW\t  1         0         1        \n"
        "UDP\t  3         2         1        \n"
        "TCP\t  4         1         3        \n"
        "INET\t  8         3         5        \n"
        "FRAG\t  0         0         0        \n"
        "\n"
    )


@given(st.binary(max_size=300))
def test_random_tcp_blocks_decode_or_are_refused_never_crash(data: bytes) -> None:
    info = TcpInfo.decode(data)
    assert len(info) == len(TcpInfo._fields)
    for kind in ("bbr", "vegas", "dctcp"):
        CongestionInfo.decode(kind, data)


@given(st.lists(st.text(max_size=60), max_size=12))
def test_any_sockstat_text_parses_to_counts(lines: list[str]) -> None:
    assert all(isinstance(v, int) for v in parse_sockstat(lines).values())
