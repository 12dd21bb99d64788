"""The ``ss`` filter language for UDP sockets: ``sport = :123``, ``dst [::1]``, ``not (dport != :53 or src 10/8)``.

``parse_filter()`` turns the words after the flags into a tree whose ``matches(sock)`` says whether a
:class:`~udpkit.inventory.UdpSocket` is selected. It follows iproute2's ``misc/ssfilter.y`` to the
letter, quirks included: ``and``/``or`` have no precedence (``a or b and c`` is ``(a or b) and c``),
two expressions side by side mean ``and``, ``<`` and ``>`` are strict, an IPv4 prefix also matches
IPv4-mapped IPv6 addresses, and ``src ::1`` is an error (write ``[::1]``), exactly as ``ss`` says.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

from udpkit.addr import udp_service_port
from udpkit.errors import UsageError
from udpkit.inventory._records import TcpSocket, UdpSocket
from udpkit.inventory._system import cgroup_id_for_path, ephemeral_port_range

__all__ = ["Filter", "HostCond", "Socket", "parse_filter", "tokenize"]

#: What a filter looks at: the fields UDP and TCP records share (ports, addresses, device, mark…).
Socket = UdpSocket | TcpSocket


class Filter(Protocol):
    """A node of a parsed filter."""

    def matches(self, sock: Socket) -> bool: ...


class Prefix(NamedTuple):
    """An address prefix: ``family``, the address as 16 bytes (IPv4 in the first 4) and its length in bits."""

    family: int
    packed: bytes
    bits: int

    def contains(self, family: int, packed: bytes) -> bool:
        """ss's ``inet2_addr_match``: same family and leading bits equal; IPv4 also matches ``::ffff:a.b.c.d``."""
        if family != self.family:
            if self.family == socket.AF_INET and family == socket.AF_INET6 and packed[:12] == _V4_MAPPED:
                packed = packed[12:]
            else:
                return False
        return _leading_bits(packed, self.bits) == _leading_bits(self.packed, self.bits)


_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


def _leading_bits(packed: bytes, bits: int) -> int:
    value = int.from_bytes(packed.ljust(16, b"\0"), "big")
    return value >> (128 - bits)


class HostCond(NamedTuple):
    """A parsed ``HOSTCOND``: an optional port (``None`` = any) and address prefixes (empty = any)."""

    port: int | None
    prefixes: tuple[Prefix, ...] = ()
    family: int | None = None

    def matches_end(self, family: int, ip: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if not self.prefixes:
            return True
        packed = socket.inet_pton(family, ip)
        return any(p.contains(family, packed) for p in self.prefixes)


class _Src(NamedTuple):
    cond: HostCond

    def matches(self, sock: Socket) -> bool:
        return self.cond.matches_end(sock.family, sock.local_ip, sock.local_port)


class _Dst(NamedTuple):
    cond: HostCond

    def matches(self, sock: Socket) -> bool:
        return self.cond.matches_end(sock.family, sock.peer_ip, sock.peer_port)


class _PortCompare(NamedTuple):
    """``sport >= N`` / ``sport <= N`` (ss's SSF_S_GE / SSF_S_LE); ``<`` and ``>`` are their negations."""

    local: bool
    at_least: bool
    port: int

    def matches(self, sock: Socket) -> bool:
        port = sock.local_port if self.local else sock.peer_port
        return port >= self.port if self.at_least else port <= self.port


class _Device(NamedTuple):
    name: str

    def matches(self, sock: Socket) -> bool:
        return sock.interface == self.name


class _Mark(NamedTuple):
    mark: int
    mask: int

    def matches(self, sock: Socket) -> bool:
        return ((sock.mark or 0) & self.mask) == self.mark


class _Cgroup(NamedTuple):
    cgroup_id: int

    def matches(self, sock: Socket) -> bool:
        return sock.cgroup_id == self.cgroup_id


class _AutoBound(NamedTuple):
    low: int
    high: int

    def matches(self, sock: Socket) -> bool:
        return self.low <= sock.local_port <= self.high


class _Not(NamedTuple):
    inner: Filter

    def matches(self, sock: Socket) -> bool:
        return not self.inner.matches(sock)


class _And(NamedTuple):
    left: Filter
    right: Filter

    def matches(self, sock: Socket) -> bool:
        return self.left.matches(sock) and self.right.matches(sock)


class _Or(NamedTuple):
    left: Filter
    right: Filter

    def matches(self, sock: Socket) -> bool:
        return self.left.matches(sock) or self.right.matches(sock)


class MatchAll(NamedTuple):
    """The empty filter."""

    def matches(self, sock: Socket) -> bool:
        return True


def tokenize(words: Iterable[str]) -> list[str]:
    """Split each word on blanks as ss's lexer does (``'sport = :53'`` is three tokens); ``\\`` escapes a character."""
    tokens: list[str] = []
    for word in words:
        current: list[str] = []
        chars = iter(word)
        pending = False
        for ch in chars:
            if ch == "\\":
                current.append(next(chars, ""))
                pending = True
            elif ch in " \t":
                if current or pending:
                    tokens.append("".join(current))
                current, pending = [], False
            else:
                current.append(ch)
        if current or pending:
            tokens.append("".join(current))
    return tokens


_OPS = {
    "!": "!", "not": "!",
    "&": "&", "&&": "&", "and": "&",
    "|": "|", "||": "|", "or": "|",
    "(": "(", ")": ")",
    ">=": "ge", "ge": "ge", "geq": "ge",
    "<=": "le", "le": "le", "leq": "le",
    "!=": "ne", "ne": "ne", "neq": "ne",
    "=": "=", "==": "=", "eq": "=",
    ">": ">", "gt": ">",
    "<": "<", "lt": "<",
}
_KEYWORDS = {"dst", "src", "dport", "sport", "dev", "fwmark", "cgroup", "autobound"}


class _Parser:
    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.families: set[int] = set()

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def kind(self, token: str | None) -> str | None:
        if token is None:
            return None
        return _OPS.get(token) or (token if token in _KEYWORDS else "word")

    def take(self) -> str:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def error(self, expected: str) -> UsageError:
        token = self.peek()
        where = f'at "{token}"' if token is not None else "at the end"
        return UsageError(f"bad filter: expected {expected} {where}")

    def exprlist(self, closing: bool) -> Filter:
        left = self.expr()
        while True:
            kind = self.kind(self.peek())
            if kind is None or (kind == ")" and closing):
                return left
            if kind == "|":
                self.take()
                left = _Or(left, self.expr())
            elif kind == "&":
                self.take()
                left = _And(left, self.expr())
            else:
                left = _And(left, self.expr())

    def expr(self) -> Filter:
        token = self.peek()
        kind = self.kind(token)
        if kind == "(":
            self.take()
            inner = self.exprlist(closing=True)
            if self.kind(self.peek()) != ")":
                raise self.error('")"')
            self.take()
            return inner
        if kind == "!":
            self.take()
            return _Not(self.expr())
        if kind in ("src", "dst"):
            self.take()
            if self.kind(self.peek()) == "=":
                self.take()
            cond = self.hostcond(is_port=False)
            return _Src(cond) if kind == "src" else _Dst(cond)
        if kind in ("sport", "dport"):
            self.take()
            return self.port_expr(local=kind == "sport")
        if kind in ("dev", "fwmark", "cgroup"):
            self.take()
            negate = False
            if self.kind(self.peek()) == "ne":
                negate = True
                self.take()
            elif self.kind(self.peek()) == "=":
                self.take()
            if self.kind(self.peek()) != "word":
                raise self.error(f"a value after {kind}")
            node = {"dev": _device, "fwmark": _mark, "cgroup": _cgroup}[kind](self.take())
            return _Not(node) if negate else node
        if kind == "autobound":
            self.take()
            return _AutoBound(*ephemeral_port_range())
        raise self.error("a condition (sport, dport, src, dst, dev, fwmark, cgroup, autobound, not, \"(\")")

    def port_expr(self, local: bool) -> Filter:
        op = self.kind(self.peek())
        if op in ("ge", "le", ">", "<", "=", "ne"):
            self.take()
        else:
            op = "="
        cond = self.hostcond(is_port=True)
        port = -1 if cond.port is None else cond.port
        if op == "ge":
            return _PortCompare(local, True, port)
        if op == "le":
            return _PortCompare(local, False, port)
        if op == ">":
            return _Not(_PortCompare(local, False, port))
        if op == "<":
            return _Not(_PortCompare(local, True, port))
        node: Filter = _Src(cond) if local else _Dst(cond)
        return _Not(node) if op == "ne" else node

    def hostcond(self, is_port: bool) -> HostCond:
        if self.kind(self.peek()) != "word":
            raise self.error("a port" if is_port else "an address")
        cond = parse_hostcond(self.take(), is_port=is_port)
        if cond.family is not None:
            self.families.add(cond.family)
        return cond


def parse_hostcond(text: str, *, is_port: bool) -> HostCond:
    """ss's ``parse_hostcond`` for inet: ``:53``, ``*:53``, ``127.0.0.1:53``, ``[::1]:123``, ``10.0.0.0/8``, a host name."""
    family: int | None = None
    addr = text
    if addr.startswith("inet:"):
        family, addr = socket.AF_INET, addr[5:]
    elif addr.startswith("inet6:"):
        family, addr = socket.AF_INET6, addr[6:]
    port_text: str | None
    if addr.startswith("["):
        addr, bracket, rest = addr[1:].partition("]")
        if not bracket:
            raise UsageError(f'bad filter: missing "]" in "{text}"')
        port_text = rest
    elif addr.startswith("*"):
        addr, port_text = "*", addr[1:]
    else:
        slash = addr.find("/")
        colon = addr.rfind(":", slash if slash >= 0 else 0)
        port_text = addr[colon:] if colon >= 0 else None
        if colon >= 0:
            addr = addr[:colon]
    if is_port:
        addr, port_text = "", text
    port = None
    if port_text:
        if port_text.startswith(":"):
            port_text = port_text[1:]
        elif not is_port:
            raise UsageError(f'bad filter: "{text}" is not an address')
        if port_text and port_text != "*":
            port = _parse_port(port_text)
    prefixes: tuple[Prefix, ...] = ()
    if not is_port and addr and addr != "*":
        prefixes = _parse_prefixes(addr, family)
    return HostCond(port, prefixes, family)


def _parse_port(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        port = udp_service_port(text)
        if port is None:
            raise UsageError(f'bad filter: "{text}" does not look like a port') from None
        return port
    if not 0 <= value <= 65535:
        raise UsageError(f'bad filter: port "{text}" is out of range 0..65535')
    return value


def _parse_prefixes(text: str, family: int | None) -> tuple[Prefix, ...]:
    host, slash, length = text.partition("/")
    if host in ("default", "any", "all") and not slash:
        return (Prefix(family or socket.AF_INET, b"\0" * 16, 0),)
    for fam in (socket.AF_INET, socket.AF_INET6):
        if family not in (None, fam):
            continue
        try:
            packed = socket.inet_pton(fam, host)
        except (OSError, ValueError):  # ValueError: a NUL in the word
            continue
        width = 32 if fam == socket.AF_INET else 128
        bits = width
        if slash:
            if not length.isdigit() or int(length) > width:
                raise UsageError(f'bad filter: bad prefix length in "{text}"')
            bits = int(length)
        return (Prefix(fam, packed.ljust(16, b"\0"), bits),)
    if slash:
        raise UsageError(f'bad filter: an inet prefix is expected rather than "{text}"')
    try:
        infos = socket.getaddrinfo(host, None, family or socket.AF_UNSPEC, socket.SOCK_DGRAM)
    except (OSError, ValueError):  # not resolvable; a NUL or a label IDNA refuses (UnicodeError)
        raise UsageError(f'bad filter: an inet prefix is expected rather than "{text}"') from None
    found: dict[tuple[int, bytes], Prefix] = {}
    for fam, _type, _proto, _name, sockaddr in infos:
        packed = socket.inet_pton(fam, str(sockaddr[0]))
        found[(fam, packed)] = Prefix(fam, packed.ljust(16, b"\0"), 32 if fam == socket.AF_INET else 128)
    return tuple(found.values())


def _device(text: str) -> Filter:
    try:
        socket.if_nametoindex(text)
        return _Device(text)
    except (OSError, ValueError):  # (ValueError: a NUL in the name)
        pass
    try:
        return _Device(socket.if_indextoname(int(text, 0)))
    except (ValueError, OSError, OverflowError):
        raise UsageError(f'bad filter: cannot parse device "{text}"') from None


def _mark(text: str) -> Filter:
    mark, slash, mask = text.partition("/")
    try:
        return _Mark(int(mark, 0), int(mask, 0) if slash else 0xFFFFFFFF)
    except ValueError:
        raise UsageError(f'bad filter: cannot parse mark "{text}"') from None


def _cgroup(text: str) -> Filter:
    cgroup_id = cgroup_id_for_path(text)
    if cgroup_id is None:
        raise UsageError(f'bad filter: cannot parse cgroup "{text}"')
    return _Cgroup(cgroup_id)


class ParsedFilter(NamedTuple):
    """A whole filter: the expression and the families an ``inet:``/``inet6:`` address restricted it to."""

    expr: Filter
    families: frozenset[int]

    def matches(self, sock: Socket) -> bool:
        if self.families and sock.family not in self.families:
            return False
        return self.expr.matches(sock)


def parse_filter(words: Iterable[str] | str) -> ParsedFilter:
    """Parse ss filter words (``["sport", "=", ":123"]`` or ``"sport = :123"``); raise UsageError if malformed."""
    tokens = tokenize([words] if isinstance(words, str) else words)
    parser = _Parser(tokens)
    if not tokens:
        return ParsedFilter(MatchAll(), frozenset())
    expr = parser.exprlist(closing=False)
    if parser.peek() is not None:
        raise parser.error("an operator or the end")
    return ParsedFilter(expr, frozenset(parser.families))
