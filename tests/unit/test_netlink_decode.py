"""Decoding sock_diag buffers: the strided fast path must agree with the message-by-message walk,
and malformed bytes must be a clean ParseError, never a crash."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.netlink_builder import attr, done, error, message, standard_attrs
from udpkit.errors import ParseError
from udpkit.inventory import _netlink as nl
from udpkit.inventory._table import SocketTable


def columns(batch: nl.RawBatch) -> dict[str, list[object]]:
    return {name: list(batch.column(name) or ()) for name in sorted(batch.names)}


def test_request_is_an_inet_diag_req_v2_dump_for_udp() -> None:
    req = nl.build_request(socket.AF_INET6, 1 << 7, nl.EXT_SKMEMINFO)
    length, kind, flags = struct.unpack_from("=IHH", req)
    assert (length, kind, flags) == (len(req), 20, 0x301) and len(req) == 72
    family, proto, ext, _pad, states = struct.unpack_from("=BBBBI", req, 16)
    assert (family, proto, ext, states) == (socket.AF_INET6, socket.IPPROTO_UDP, 1 << 6, 1 << 7)


def test_one_socket_decodes_to_its_fields() -> None:
    chunk = message(sport=123, rq=2496, uid=1000, inode=4585, cookie=(7 << 32) | 9, ifindex=1,
                    attrs=standard_attrs(socket.AF_INET, skmem=(2496, 212992, 0, 212992, 1600, 0, 0, 0, 3))) + done()
    batch, status = nl.decode_chunk(chunk)
    assert status == 0
    (sock,) = SocketTable([batch])
    assert (sock.local_ip, sock.local_port, sock.peer_ip, sock.peer_port) == ("127.0.0.1", 123, "0.0.0.0", 0)
    assert (sock.recv_q, sock.uid, sock.inode, sock.cookie, sock.interface) == (2496, 1000, 4585, (7 << 32) | 9, "lo")
    assert sock.state.label == "UNCONN" and sock.drops == 3 and sock.skmem is not None
    assert sock.cgroup_id == 1 and sock.shutdown == 0 and sock.ipv6only is None


def test_ipv6_sockets_carry_v6only() -> None:
    msgs = b"".join(message(family=socket.AF_INET6, sport=p, src="::", attrs=standard_attrs(socket.AF_INET6, v6only=p % 2))
                    for p in (10, 11))
    socks = list(SocketTable([nl.decode_chunk(msgs)[0]]))
    assert [(s.local_ip, s.ipv6only) for s in socks] == [("::", False), ("::", True)]


def test_uniform_buffers_take_the_fast_path_and_agree_with_the_walk() -> None:
    msgs = b"".join(message(sport=1000 + i, inode=i, rq=i * 7, attrs=standard_attrs(socket.AF_INET)) for i in range(50))
    fast = nl._decode_uniform(msgs + done())
    assert fast is not None and fast[1] == 0
    slow = nl.decode_chunk_slow(msgs + done())
    assert columns(fast[0]) == columns(slow[0])


def test_irregular_buffers_fall_back_to_the_walk() -> None:
    mixed = message(attrs=standard_attrs(socket.AF_INET)) + message(attrs=attr(nl.INET_DIAG_SHUTDOWN, b"\0") * 3)
    assert nl._decode_uniform(mixed) is None
    batch, status = nl.decode_chunk(mixed)
    assert status is None and batch.n == 2
    assert list(batch.column("cgroup_id") or ()) == [1, None]


def test_done_and_error_end_the_dump() -> None:
    assert nl.decode_chunk(done()) [1] == 0
    assert nl.decode_chunk(error(errno.EPERM))[1] == errno.EPERM


@pytest.mark.parametrize(
    "chunk",
    [
        struct.pack("=IHHII", 8, 20, 0, 0, 0),  # claims fewer bytes than a header
        struct.pack("=IHHII", 200, 20, 0, 0, 0) + b"\0" * 20,  # claims more than there is
        message()[:60],  # cut inside inet_diag_msg
        message(attrs=struct.pack("=HH", 40, 8)),  # attribute longer than its message
    ],
)
def test_malformed_buffers_are_parse_errors(chunk: bytes) -> None:
    with pytest.raises(ParseError):
        nl.decode_chunk(chunk)


@given(st.binary(max_size=600))
@settings(max_examples=400)
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    try:
        batch, _status = nl.decode_chunk(data)
    except ParseError:
        return
    list(SocketTable([batch]))


sock_fields = st.fixed_dictionaries({
    "state": st.sampled_from([1, 7]), "sport": st.integers(0, 65535), "dport": st.integers(0, 65535),
    "rq": st.integers(0, 2**32 - 1), "wq": st.integers(0, 2**32 - 1), "uid": st.integers(0, 2**32 - 1),
    "inode": st.integers(0, 2**32 - 1), "ifindex": st.integers(0, 3), "cookie": st.integers(0, 2**64 - 1),
    "src": st.ip_addresses(v=6).map(str), "dst": st.ip_addresses(v=6).map(str),
})


@given(st.lists(sock_fields, min_size=1, max_size=30), st.booleans(), st.booleans())
def test_fast_and_slow_decoders_agree_on_any_uniform_dump(socks: list[dict[str, object]], memory: bool, with_done: bool) -> None:
    skmem = (1, 2, 3, 4, 5, 6, 7, 8, 9) if memory else None
    chunk = b"".join(
        message(family=socket.AF_INET6, attrs=standard_attrs(socket.AF_INET6, skmem=skmem), **s)  # type: ignore[arg-type]
        for s in socks
    ) + (done() if with_done else b"")
    fast = nl._decode_uniform(chunk)
    assert fast is not None
    slow = nl.decode_chunk_slow(chunk)
    assert fast[1] == slow[1]
    assert columns(fast[0]) == columns(slow[0])
    assert list(SocketTable([fast[0]])) == list(SocketTable([slow[0]]))


@given(st.ip_addresses(v=6), st.integers(1, 40),
       st.one_of(st.none(), st.tuples(st.integers(0, 39), st.integers(0, 15))), st.sampled_from(["src", "dst"]))
def test_a_column_of_one_ipv6_address_is_one_value_and_agrees_with_the_walk(
        address: object, count: int, odd: tuple[int, int] | None, name: str) -> None:
    # An unconnected socket's peer is :: in every message: the fast path reads the column as one
    # value (16 byte columns counted, no bytes object a socket), and one byte that differs anywhere
    # (odd: which socket, which byte) sends it back to the value-per-socket path.
    packed = socket.inet_pton(socket.AF_INET6, str(address))
    addresses = [packed] * count
    if odd is not None and odd[0] < count:
        at, byte = odd
        addresses[at] = packed[:byte] + bytes([packed[byte] ^ 0x80]) + packed[byte + 1:]
    chunk = b"".join(
        message(family=socket.AF_INET6, sport=1, attrs=standard_attrs(socket.AF_INET6),
                **{name: socket.inet_ntop(socket.AF_INET6, a)})  # type: ignore[arg-type]
        for a in addresses)
    fast = nl._decode_uniform(chunk)
    assert fast is not None
    assert list(fast[0].column(name) or ()) == addresses == list(nl.decode_chunk_slow(chunk)[0].column(name) or ())
    assert list(SocketTable([fast[0]])) == list(SocketTable([nl.decode_chunk_slow(chunk)[0]]))


@given(st.lists(sock_fields, min_size=2, max_size=10), st.integers(0, 10**6), st.binary(min_size=1, max_size=4))
def test_corrupted_dumps_decode_like_the_walk_or_fail_cleanly(socks: list[dict[str, object]], where: int, junk: bytes) -> None:
    chunk = bytearray(b"".join(message(family=socket.AF_INET6, attrs=standard_attrs(socket.AF_INET6), **s) for s in socks))  # type: ignore[arg-type]
    pos = where % len(chunk)
    chunk[pos : pos + len(junk)] = junk
    try:
        slow = nl.decode_chunk_slow(bytes(chunk))
    except ParseError:
        slow = None
    try:
        fast = nl.decode_chunk(bytes(chunk))
    except ParseError:
        fast = None
    if slow is None or fast is None:
        assert slow is None and fast is None
    else:
        assert columns(fast[0]) == columns(slow[0])


def test_buffers_of_one_layout_merge_into_one_batch_with_the_same_sockets() -> None:
    v4 = [message(sport=p, inode=p, attrs=standard_attrs(socket.AF_INET)) for p in range(1, 7)]
    odd = message(sport=99, attrs=attr(nl.INET_DIAG_SHUTDOWN, b"\0") * 2)  # another layout
    chunks = [b"".join(v4[:3]), b"".join(v4[3:]), odd, done()]
    batches = [nl.decode_chunk(c)[0] for c in chunks]
    merged = nl.merge_batches(batches)
    assert [b.n for b in merged] == [6, 1]
    assert list(SocketTable(merged)) == list(SocketTable(batches))
    assert SocketTable(merged).column("local_port") == [1, 2, 3, 4, 5, 6, 99]
