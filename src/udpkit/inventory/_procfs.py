"""The fallback backend: sockets parsed from ``/proc/net/udp{,6}`` (and ``/proc/net/tcp{,6}``).

Used where netlink sock_diag is refused (some containers). These files lack what only netlink
reports — the bound device, ``IPV6_V6ONLY``, the socket cookie, ``SK_MEMINFO`` — so those fields
are ``None``; and the kernel is slow to produce them at scale (see ``bench/ss_bench.py``).
"""

from __future__ import annotations

from _socket import AF_INET, AF_INET6
import struct
from collections.abc import Iterable, Iterator

from udpkit.errors import BackendUnavailable, ParseError
from udpkit.inventory._netlink import address_key

__all__ = ["decode_address", "parse_proc_net_udp", "read_proc_net", "read_proc_net_udp"]

_U32 = struct.Struct("<I")  # the kernel prints each address word with %08X of its host-order value


def decode_address(text: str) -> tuple[bytes, int]:
    """``"0100007F:0035"`` -> ``(b"\\x7f\\x00\\x00\\x01", 53)``; a 32-hex-digit IPv6 address gives 16 bytes."""
    addr, sep, port = text.partition(":")
    if not sep or len(addr) not in (8, 32) or not port:
        raise ParseError(f"bad /proc/net/udp address {text!r}")
    try:
        packed = b"".join(_U32.pack(int(addr[i : i + 8], 16)) for i in range(0, len(addr), 8))
        return packed, int(port, 16)
    except ValueError as exc:
        raise ParseError(f"bad /proc/net/udp address {text!r}") from exc


def parse_proc_net_udp(lines: Iterable[str], family: int, *, with_drops: bool = True) -> Iterator[dict[str, object]]:
    """Parse the lines of ``/proc/net/udp{,6}`` (header included) into raw socket rows.

    ``"   0: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 4585 2 0000000000000000 0"``
    -> family, state 7, src 127.0.0.1, sport 53, recv_q/send_q, uid, inode and drops.
    ``/proc/net/tcp{,6}`` has the same leading columns and no drops (``with_drops=False``).
    """
    it = iter(lines)
    next(it, None)  # the header line
    for line in it:
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 13:
            raise ParseError(f"short /proc/net/udp line: {line.strip()!r}")
        src, sport = decode_address(fields[1])
        dst, dport = decode_address(fields[2])
        if len(src) != (4 if family == AF_INET else 16) or len(dst) != len(src):
            raise ParseError(f"address of the wrong family in /proc/net/udp line: {line.strip()!r}")
        try:
            tx, _, rx = fields[4].partition(":")
            yield {
                "family": family, "state": int(fields[3], 16),
                "src": address_key(family, src.ljust(16, b"\0")), "sport": sport,
                "dst": address_key(family, dst.ljust(16, b"\0")), "dport": dport,
                "send_q": int(tx, 16), "recv_q": int(rx, 16),
                "uid": int(fields[7]), "inode": int(fields[9]),
                **({"drops": int(fields[12])} if with_drops else {}),
            }
        except ValueError as exc:
            raise ParseError(f"bad number in /proc/net/udp line: {line.strip()!r}") from exc


def read_proc_net_udp(family: int, proc: str = "/proc") -> list[dict[str, object]]:
    """Read and parse one family's file; a missing file (IPv6 disabled) is an empty list."""
    return read_proc_net("udp", family, proc)


def read_proc_net(protocol: str, family: int, proc: str = "/proc") -> list[dict[str, object]]:
    """``/proc/net/udp``, ``udp6``, ``tcp`` or ``tcp6`` parsed; a missing IPv6 file is an empty list."""
    name = protocol if family == AF_INET else protocol + "6"
    try:
        with open(f"{proc}/net/{name}", encoding="ascii") as fh:
            return list(parse_proc_net_udp(fh, family, with_drops=protocol == "udp"))
    except FileNotFoundError:
        if family == AF_INET6:
            return []
        raise BackendUnavailable(f"{proc}/net/{name} does not exist") from None
    except PermissionError as exc:
        raise BackendUnavailable(f"cannot read {proc}/net/{name}: {exc.strerror}") from exc
