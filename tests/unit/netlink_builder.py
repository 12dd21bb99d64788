"""Builds sock_diag dump buffers the way the kernel lays them out, for decoder tests without sockets."""

from __future__ import annotations

import socket
import struct

from udpkit.inventory import _netlink as nl


def attr(kind: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def message(
    *,
    family: int = socket.AF_INET,
    state: int = 7,
    sport: int = 53,
    dport: int = 0,
    src: str | None = None,
    dst: str | None = None,
    ifindex: int = 0,
    cookie: int = 1,
    rq: int = 0,
    wq: int = 0,
    uid: int = 0,
    inode: int = 1000,
    attrs: bytes = b"",
    timer: int = 0,
    retrans: int = 0,
    expires: int = 0,
) -> bytes:
    src = src or ("127.0.0.1" if family == socket.AF_INET else "::1")
    dst = dst or ("0.0.0.0" if family == socket.AF_INET else "::")
    body = struct.pack(
        "=BBBB2s2s16s16sIQIIIII",
        family, state, timer, retrans, sport.to_bytes(2, "big"), dport.to_bytes(2, "big"),
        socket.inet_pton(family, src).ljust(16, b"\0"), socket.inet_pton(family, dst).ljust(16, b"\0"),
        ifindex, cookie, expires, rq, wq, uid, inode,
    ) + attrs
    return nl.NLMSGHDR.pack(16 + len(body), nl.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


def standard_attrs(family: int, *, v6only: int = 0, shutdown: int = 0, cgroup: int = 1,
                   skmem: tuple[int, ...] | None = None) -> bytes:
    """The attributes a 6.x kernel sends for a UDP socket (shutdown, cgroup, v6only for IPv6, skmem if asked)."""
    out = attr(nl.INET_DIAG_SHUTDOWN, bytes([shutdown]))
    if family == socket.AF_INET6:
        out += attr(nl.INET_DIAG_SKV6ONLY, bytes([v6only]))
    out += attr(nl.INET_DIAG_CGROUP_ID, struct.pack("=Q", cgroup))
    if skmem is not None:
        out += attr(nl.INET_DIAG_SKMEMINFO, struct.pack(f"={len(skmem)}I", *skmem))
    return out


def done() -> bytes:
    return nl.NLMSGHDR.pack(20, nl.NLMSG_DONE, 2, 1, 0) + b"\0\0\0\0"


def error(errno: int) -> bytes:
    return nl.NLMSGHDR.pack(36, nl.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -errno) + b"\0" * 16
