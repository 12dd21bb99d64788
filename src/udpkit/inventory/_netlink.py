"""Reading UDP and TCP sockets from the kernel over ``NETLINK_SOCK_DIAG``, the way ``ss`` does.

``dump()`` is the only I/O here: it sends one ``inet_diag_req_v2`` per address family and hands every
received buffer to ``decode_chunk()``, which is pure and returns the sockets as columns (one sequence
per field) so the caller can build records at C speed. See ``linux/inet_diag.h`` and
``linux/sock_diag.h`` for the layouts.
"""

from __future__ import annotations

# ``_socket``, the C module that ``socket`` wraps: ``socket`` imports ``enum`` and ``selectors`` and
# builds four IntEnum classes, 9 ms of ``udpkit ss``'s ~27 ms start; this module needs none of it.
import _socket
import errno as _errno
import os
import struct
import sys
from array import array
from collections.abc import Sequence
from operator import itemgetter

from udpkit.errors import BackendUnavailable, ParseError

__all__ = ["RawBatch", "address_key", "address_text", "build_request", "decode_chunk", "dump", "merge_batches"]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR = 2
NLMSG_DONE = 3

# enum inet_diag attribute types (linux/inet_diag.h); the request's idiag_ext bit for type T is 1 << (T - 1).
INET_DIAG_MEMINFO = 1
INET_DIAG_INFO = 2
INET_DIAG_VEGASINFO = 3
INET_DIAG_CONG = 4
INET_DIAG_DCTCPINFO = 9
INET_DIAG_BBRINFO = 16
INET_DIAG_SKMEMINFO = 7
INET_DIAG_SHUTDOWN = 8
INET_DIAG_SKV6ONLY = 11
INET_DIAG_MARK = 15
INET_DIAG_CGROUP_ID = 21
EXT_SKMEMINFO = 1 << (INET_DIAG_SKMEMINFO - 1)
#: What ``ss -i`` asks for: ``tcp_info``, the congestion control's own block and its name.
EXT_TCP_INFO = (1 << (INET_DIAG_INFO - 1)) | (1 << (INET_DIAG_VEGASINFO - 1)) | (1 << (INET_DIAG_CONG - 1))

# struct nlmsghdr: len, type, flags, seq, pid.
NLMSGHDR = struct.Struct("=IHHII")
# struct inet_diag_req_v2 (sock_diag.h, inet_diag.h): family, protocol, ext, pad, states, then
# struct inet_diag_sockid: sport, dport (big-endian), src[4], dst[4] (u32 each), if, cookie[2].
INET_DIAG_REQ_V2 = struct.Struct("=BBBxI2s2s16s16sI8s")
# struct inet_diag_msg after the nlmsghdr: family, state, timer, retrans, sockid, expires, rqueue,
# wqueue, uid, inode. The cookie's two u32 read as one little-endian u64 equal ss's cookie_sk_get().
INET_DIAG_MSG = struct.Struct("=BBBB2s2s16s16sIQIIIII")
MSG_FIXED = NLMSGHDR.size + INET_DIAG_MSG.size  # 88 bytes before the attributes
RTATTR = struct.Struct("=HH")

#: The fields of a decoded socket, in column order. Attribute columns may be absent from a batch.
FIXED_FIELDS = ("family", "state", "timer", "retrans", "sport", "dport", "src", "dst", "ifindex", "cookie",
                "expires", "recv_q", "send_q", "uid", "inode")
_ATTR_FIELDS = {
    INET_DIAG_SHUTDOWN: ("shutdown", "B", 1),
    INET_DIAG_SKV6ONLY: ("v6only", "B", 1),
    INET_DIAG_MARK: ("mark", "I", 4),
    INET_DIAG_CGROUP_ID: ("cgroup_id", "Q", 8),
}
# Attributes kept as their bytes: TCP's state blocks, decoded by the record layer.
_BLOB_ATTRS = {
    INET_DIAG_INFO: "tcp_info", INET_DIAG_CONG: "cong", INET_DIAG_VEGASINFO: "vegas",
    INET_DIAG_DCTCPINFO: "dctcp", INET_DIAG_BBRINFO: "bbr",
}


class RawBatch:
    """Sockets decoded from one netlink buffer, as columns: ``column(field)[i]`` is socket ``i``'s value.

    Addresses are in ``address_key()`` form, ports host-order ints, ``skmem`` the ``SK_MEMINFO``
    array as a tuple of ints. ``column()`` is ``None`` for an attribute the kernel did not send.
    """

    __slots__ = ("_columns", "n")

    def __init__(self, n: int, columns: dict[str, Sequence[object]]) -> None:
        self.n = n
        self._columns = columns

    def column(self, name: str) -> Sequence[object] | None:
        return self._columns.get(name)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._columns)


class _StridedBatch(RawBatch):
    """A buffer of n equal-layout messages; each column is cut out of it when first asked for.

    A listing rarely needs every field (``ss -uln`` needs 10 of 17), and each column not built
    is 50,000 Python objects not allocated.
    """

    __slots__ = ("_attrs", "_chunk", "_family", "_size", "_words")

    def __init__(self, chunk: bytes, n: int, size: int, family: int, attrs: dict[str, tuple[int, int]]) -> None:
        super().__init__(n, {})
        self._chunk = chunk
        self._size = size
        self._family = family
        self._attrs = attrs  # column name -> (data offset, data length)
        self._words = memoryview(chunk).cast("I")

    @property
    def names(self) -> frozenset[str]:
        return frozenset(FIXED_FIELDS) | frozenset(self._attrs)

    @property
    def layout(self) -> tuple[int, int, tuple[tuple[str, tuple[int, int]], ...]]:
        """Message size, family and attribute offsets: batches with equal layouts can be joined."""
        return self._size, self._family, tuple(sorted(self._attrs.items()))

    def _u32(self, offset: int) -> list[int]:
        return self._words[offset // 4 : self.n * self._size // 4 : self._size // 4].tolist()

    def _bytes(self, offset: int) -> bytes:
        return self._chunk[offset : self.n * self._size : self._size]

    def _same_v6(self, offset: int) -> bytes | None:
        """The IPv6 address at ``offset`` if every message has the same one (an unconnected socket's
        peer, ``::``): 16 strided byte slices counted in C, the low bytes (likeliest to differ) first,
        instead of a 16-byte ``bytes`` object a socket."""
        chunk, end, size = self._chunk, self.n * self._size, self._size
        for k in range(15, -1, -1):
            column = chunk[offset + k : end : size]
            if column.count(column[:1]) != len(column):
                return None
        return bytes(chunk[offset : offset + 16])

    def column(self, name: str) -> Sequence[object] | None:
        if name in _FIXED_U32:
            return self._u32(_FIXED_U32[name])
        if name in _FIXED_U8:
            return list(self._bytes(_FIXED_U8[name]))
        if name in ("sport", "dport"):
            off = 20 if name == "sport" else 22
            return _be16(self._bytes(off), self._bytes(off + 1))
        if name == "cookie":
            return _u64(self._u32(60), self._u32(64))
        if name in ("src", "dst"):
            off = 24 if name == "src" else 40
            if self._family == _socket.AF_INET:
                return self._u32(off)
            same = self._same_v6(off)
            if same is not None:
                return [same] * self.n
            unpack = _V6_ADDR.get((self._size, off))
            if unpack is None:
                unpack = _V6_ADDR[(self._size, off)] = struct.Struct(f"={off}x16s{self._size - off - 16}x")
            return list(map(_FIRST, unpack.iter_unpack(memoryview(self._chunk)[: self.n * self._size])))
        if name == "skmem_drops":  # SK_MEMINFO_DROPS alone: a strided slice, no tuple per socket
            found = self._attrs.get("skmem")
            if found is None or found[1] < 4 * (_SK_MEMINFO_DROPS + 1):
                return None
            return self._u32(found[0] + 4 * _SK_MEMINFO_DROPS)
        spec = self._attrs.get(name)
        if spec is None:
            return None
        off, length = spec
        if name in _BLOB_NAMES:
            chunk = self._chunk
            return [chunk[o : o + length] for o in range(off, self.n * self._size, self._size)]
        if name == "skmem":
            return list(zip(*(self._u32(off + 4 * k) for k in range(length // 4))))
        if length == 1:
            return list(self._bytes(off))
        if length == 4:
            return self._u32(off)
        return _u64(self._u32(off), self._u32(off + 4))


_U32 = struct.Struct("=I")
_FIRST = itemgetter(0)  # each unpacked 1-tuple's address, taken in C (a list comprehension's loop costs 60 % more)


def address_key(family: int, packed: bytes) -> int | bytes:
    """The column form of an address: IPv4 as its four bytes read as a native u32, IPv6 as 16 bytes.

    The fast decoder reads IPv4 addresses as a strided u32 column (cheaper than bytes per socket);
    both decoders use this form and ``address_text()`` turns it into text.
    """
    if family == _socket.AF_INET:
        return int(_U32.unpack_from(packed)[0])
    return bytes(packed[:16])


def address_text(key: int | bytes) -> str:
    """``address_key()``'s inverse, as text: ``16777343`` -> ``"127.0.0.1"`` on a little-endian host."""
    if isinstance(key, int):
        return _socket.inet_ntop(_socket.AF_INET, _U32.pack(key))
    return _socket.inet_ntop(_socket.AF_INET6, key)


def build_request(
    family: int, states: int, ext: int = 0, seq: int = 1, protocol: int = _socket.IPPROTO_UDP
) -> bytes:
    """A ``SOCK_DIAG_BY_FAMILY`` dump request for ``protocol`` sockets of ``family`` whose state bit is in ``states``."""
    body = INET_DIAG_REQ_V2.pack(family, protocol, ext, states, b"", b"", b"", b"", 0, b"\xff" * 8)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def dump(
    family: int, states: int, ext: int = 0, *, timeout: float = 5.0, protocol: int = _socket.IPPROTO_UDP
) -> list[RawBatch]:
    """Ask the kernel for every ``protocol`` socket of ``family`` in ``states``; raise BackendUnavailable if refused."""
    try:
        sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    except OSError as exc:
        raise BackendUnavailable(f"netlink sock_diag unavailable: {exc.strerror or exc}") from exc
    batches: list[RawBatch] = []
    try:
        sock.settimeout(timeout)
        try:
            sock.send(build_request(family, states, ext, protocol=protocol))
            while True:
                batch, status = decode_chunk(sock.recv(65536))
                batches.append(batch)
                if status is not None:
                    break
        except TimeoutError as exc:
            raise BackendUnavailable("netlink sock_diag did not answer") from exc
        except OSError as exc:
            raise BackendUnavailable(f"netlink sock_diag failed: {exc.strerror or exc}") from exc
    finally:
        sock.close()
    if status:
        raise BackendUnavailable(f"netlink sock_diag refused the dump: {os.strerror(status)}")
    return merge_batches(batches)


def merge_batches(batches: list[RawBatch]) -> list[RawBatch]:
    """Join consecutive buffers of the same message layout into one batch.

    The kernel hands a dump over in ~32 KiB buffers; once each is checked, one buffer per layout
    lets every column be a single strided slice over all of a family's sockets instead of 200.
    Empty batches (a buffer holding only ``NLMSG_DONE``) are dropped.
    """
    merged: list[RawBatch] = []
    run: list[_StridedBatch] = []

    def flush() -> None:
        if len(run) == 1:
            merged.append(run[0])
        elif run:
            first = run[0]
            data = b"".join(memoryview(b._chunk)[: b.n * b._size] for b in run)
            merged.append(_StridedBatch(data, sum(b.n for b in run), first._size, first._family, first._attrs))
        run.clear()

    for batch in batches:
        if not batch.n:
            continue
        if isinstance(batch, _StridedBatch) and (not run or run[0].layout == batch.layout):
            run.append(batch)
            continue
        flush()
        if isinstance(batch, _StridedBatch):
            run.append(batch)
        else:
            merged.append(batch)
    flush()
    return merged


def decode_chunk(chunk: bytes) -> tuple[RawBatch, int | None]:
    """Decode one buffer read from the sock_diag socket.

    Returns the sockets in it and a status: ``None`` while the dump goes on, ``0`` once
    ``NLMSG_DONE`` was seen, or a positive errno from ``NLMSG_ERROR``. Malformed input raises
    :class:`ParseError`.

    Strategy: the kernel sends each family's sockets with one fixed attribute layout, so a buffer is
    usually n equal-length messages (plus perhaps ``NLMSG_DONE``). When strided checks over the
    buffer prove that, every field is one strided slice of the buffer (``words[off::step]``), a
    column built in C with no Python loop per socket; anything irregular goes through the plain
    message-by-message walk, which is the reference the tests hold the fast path to.
    """
    fast = _decode_uniform(chunk)
    if fast is not None:
        return fast
    return decode_chunk_slow(chunk)


def _done_or_error(chunk: bytes, off: int) -> int | None:
    """If a message at ``off`` is DONE or ERROR, its status (0 or errno); else ``None``."""
    length, kind = NLMSGHDR.unpack_from(chunk, off)[:2]
    if kind == NLMSG_DONE:
        return 0
    if kind == NLMSG_ERROR:
        if length < NLMSGHDR.size + 4 or off + NLMSGHDR.size + 4 > len(chunk):
            raise ParseError("truncated NLMSG_ERROR from sock_diag")
        code = -struct.unpack_from("=i", chunk, off + NLMSGHDR.size)[0]
        return code if code > 0 else (_errno.EIO if code else 0)
    return None


_FIXED_U32 = {"ifindex": 56, "expires": 68, "recv_q": 72, "send_q": 76, "uid": 80, "inode": 84}
_FIXED_U8 = {"family": 16, "state": 17, "timer": 18, "retrans": 19}
_SK_MEMINFO_DROPS = 8
_BLOB_NAMES = frozenset(_BLOB_ATTRS.values())
_V6_ADDR: dict[tuple[int, int], struct.Struct] = {}


def _decode_uniform(chunk: bytes) -> tuple[RawBatch, int | None] | None:
    total = len(chunk)
    if total < MSG_FIXED or total % 4:
        return None
    size, kind = NLMSGHDR.unpack_from(chunk, 0)[:2]
    if kind != SOCK_DIAG_BY_FAMILY or size < MSG_FIXED or size % 4:
        return None
    n, tail = divmod(total, size)
    status = None
    if tail:
        if tail != NLMSGHDR.size + 4 or NLMSGHDR.unpack_from(chunk, n * size)[:2] != (tail, NLMSG_DONE):
            return None
        status = 0
    end = n * size
    words = memoryview(chunk).cast("I")
    step = size // 4

    def same_u32(offset: int) -> bool:
        """Whether the u32 at ``offset`` is equal in every message: one strided slice, no loop per socket."""
        return _same(words[offset // 4 : end // 4 : step].tolist())

    if not (same_u32(0) and same_u32(4) and _same(chunk[16:end:size])):
        return None
    family = chunk[16]
    if family not in (_socket.AF_INET, _socket.AF_INET6):
        return None
    attrs: dict[str, tuple[int, int]] = {}
    off = MSG_FIXED
    while off < size:
        alen, atype = RTATTR.unpack_from(chunk, off)
        if alen < 4 or off + alen > size or not same_u32(off):
            return None  # irregular: not every message has this attribute header here
        spec = _ATTR_FIELDS.get(atype)
        if spec is not None and spec[2] == alen - 4:
            attrs[spec[0]] = (off + 4, alen - 4)
        elif atype == INET_DIAG_SKMEMINFO and alen >= 8:
            attrs["skmem"] = (off + 4, (alen - 4) // 4 * 4)
        elif atype in _BLOB_ATTRS:
            attrs[_BLOB_ATTRS[atype]] = (off + 4, alen - 4)
        off += (alen + 3) & ~3
    return _StridedBatch(chunk, n, size, family, attrs), status


def _same(values: Sequence[int]) -> bool:
    """Whether every element equals the first (``count`` runs in C; building a set does not pay)."""
    return not values or values.count(values[0]) == len(values)


def _be16(high: bytes, low: bytes) -> list[int]:
    """A big-endian u16 column from its two byte columns, without a loop per socket."""
    wire = bytearray(2 * len(low))
    wire[0::2] = high
    wire[1::2] = low
    values = array("H", bytes(wire))
    if sys.byteorder == "little":
        values.byteswap()
    return values.tolist()


def _u64(low: list[int], high: list[int]) -> list[int]:
    return [lo | (hi << 32) for lo, hi in zip(low, high)] if any(high) else low


def decode_chunk_slow(chunk: bytes) -> tuple[RawBatch, int | None]:
    """Message-by-message decoding: the reference that the strided fast path must agree with."""
    rows: list[dict[str, object]] = []
    total = len(chunk)
    off = 0
    status = None
    while off + NLMSGHDR.size <= total:
        length, kind = NLMSGHDR.unpack_from(chunk, off)[:2]
        if length < NLMSGHDR.size or off + length > total:
            raise ParseError(f"sock_diag message at byte {off} claims {length} bytes of {total - off}")
        status = _done_or_error(chunk, off)
        if status is not None:
            break
        if kind == SOCK_DIAG_BY_FAMILY:
            rows.append(_decode_message(chunk, off, length))
        off += (length + 3) & ~3
    else:
        if off < total and chunk[off:].strip(b"\0"):
            raise ParseError(f"{total - off} stray bytes after the last sock_diag message")
    names = set(FIXED_FIELDS).union(*rows)
    columns: dict[str, Sequence[object]] = {name: [row.get(name) for row in rows] for name in names}
    return RawBatch(len(rows), columns), status


def _decode_message(chunk: bytes, off: int, length: int) -> dict[str, object]:
    if length < MSG_FIXED:
        raise ParseError(f"sock_diag message of {length} bytes is shorter than inet_diag_msg")
    (family, state, timer, retrans, sport, dport, src, dst, ifindex, cookie,
     expires, rq, wq, uid, inode) = INET_DIAG_MSG.unpack_from(chunk, off + NLMSGHDR.size)
    row: dict[str, object] = {
        "family": family, "state": state, "timer": timer, "retrans": retrans, "expires": expires,
        "sport": int.from_bytes(sport, "big"), "dport": int.from_bytes(dport, "big"),
        "src": address_key(family, src), "dst": address_key(family, dst), "ifindex": ifindex, "cookie": cookie,
        "recv_q": rq, "send_q": wq, "uid": uid, "inode": inode,
    }
    pos, end = off + MSG_FIXED, off + length
    while pos + RTATTR.size <= end:
        alen, atype = RTATTR.unpack_from(chunk, pos)
        if alen < RTATTR.size or pos + alen > end:
            raise ParseError(f"sock_diag attribute {atype} overruns its message")
        data = chunk[pos + 4 : pos + alen]
        spec = _ATTR_FIELDS.get(atype)
        if spec is not None and len(data) == spec[2]:
            row[spec[0]] = struct.unpack("=" + spec[1], data)[0]
        elif atype == INET_DIAG_SKMEMINFO and len(data) >= 4:
            row["skmem"] = struct.unpack(f"={len(data) // 4}I", data[: len(data) // 4 * 4])
        elif atype in _BLOB_ATTRS:
            row[_BLOB_ATTRS[atype]] = data
        pos += (alen + 3) & ~3
    return row
