"""``SocketTable``: a listing held as columns, turned into :class:`UdpSocket` (or :class:`TcpSocket`)
records only on demand.

A listing of 50,000 sockets is decoded column by column at C speed; building 50,000 records costs
more than that (~0.7 µs each). ``udpkit ss`` renders straight from the columns it needs; a library
caller iterating the table gets records, built in one ``map`` over the columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain, repeat
from udpkit.inventory import _netlink
from udpkit.inventory._records import CongestionInfo, Process, SkMem, TcpInfo, TcpSocket, UdpSocket
from udpkit.inventory._system import interface_name

__all__ = ["FIELDS", "SocketTable"]

FIELDS = UdpSocket._fields
TYPE_CHECKING = False  # typing is not imported at run time: see udpkit._typing
if TYPE_CHECKING:
    from typing import Any, Generic, TypeVar, overload

    Record = TypeVar("Record", UdpSocket, TcpSocket)
else:
    from udpkit._typing import Generic, overload

    Record = object
_V6ONLY = {0: False, 1: True}
_NETIDS = {UdpSocket: "udp", TcpSocket: "tcp"}


class _IpText(dict[object, str]):
    """Address key (see ``_netlink.address_key``) -> text, computed once per distinct address."""

    def __missing__(self, key: int | bytes) -> str:
        text = self[key] = _netlink.address_text(key)
        return text


class _IfName(dict["int | None", "str | None"]):
    """Interface index -> name, asked of the kernel once per distinct index."""

    def __missing__(self, index: int | None) -> str | None:
        name = self[index] = interface_name(index or 0)
        return name


def _members(name: str) -> dict[int, Any]:
    """The kernel's numbers for ``family`` or ``state`` -> their enum members, imported here, when a
    caller asks for that column: ``udpkit ss`` reads :meth:`SocketTable.numbers` and never pays for
    ``socket`` and ``enum`` (~9 ms of a start)."""
    if name == "family":
        from socket import AF_INET, AF_INET6

        return {AF_INET.value: AF_INET, AF_INET6.value: AF_INET6}
    from udpkit.inventory._state import SocketState

    return dict(SocketState._value2member_map_)


def _skmem(raw: tuple[int, ...] | None) -> SkMem | None:
    """The ``SK_MEMINFO`` array -> SkMem; old kernels send 7 or 8 values, newer ones may send more."""
    if raw is None or len(raw) < 7:
        return None
    return SkMem(*raw[:9])


def _cc_info(raw: tuple[str, bytes] | None) -> CongestionInfo | None:
    return CongestionInfo.decode(*raw) if raw is not None else None


class SocketTable(Sequence[Record], Generic[Record]):
    """Sockets of one protocol as columns. ``table.column("local_port")`` is one field for every
    socket; ``table[i]`` and iteration give records (:class:`UdpSocket` by default, :class:`TcpSocket`
    for a TCP listing); ``table.where(pred)`` filters.

    A column is decoded from the kernel's buffers and converted (address to text, index to device
    name…) the first time it is asked for, and kept.
    """

    __slots__ = ("_batches", "_columns", "_fields", "_n", "_owners", "record")

    def __init__(
        self,
        batches: Sequence[_netlink.RawBatch],
        owners: dict[int, tuple[Process, ...]] | None = None,
        *,
        columns: dict[str, list[Any]] | None = None,
        n: int | None = None,
        record: type[Record] = UdpSocket,  # type: ignore[assignment]
    ) -> None:
        self._batches = list(batches)
        self._n = sum(b.n for b in self._batches) if n is None else n
        self._owners = owners
        self._columns: dict[str, list[Any]] = dict(columns or {})
        self.record: type[Record] = record
        self._fields: tuple[str, ...] = record._fields

    @property
    def netid(self) -> str:
        """``"udp"`` or ``"tcp"``: ss's Netid column for every socket here."""
        return _NETIDS[self.record]

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"<SocketTable of {self._n} {self.netid.upper()} sockets>"

    def column(self, name: str) -> list[Any]:
        """Field ``name`` (one of the record's fields) of every socket, converted once and kept."""
        found = self._columns.get(name)
        if found is None:
            found = self._columns[name] = self._convert(name)
        return found

    def numbers(self, name: str) -> list[int]:
        """``family`` or ``state`` as the kernel's numbers (``AF_INET`` is 2, ``CLOSE`` 7), not as
        :meth:`column`'s ``AddressFamily`` and ``SocketState`` members: for callers that only compare
        or look them up, without importing ``socket`` and ``enum``."""
        if name not in ("family", "state"):
            raise KeyError(f"no numbers for column {name!r}: only family and state have them")
        key = f"{name}#"
        found = self._columns.get(key)
        if found is None:
            if self._batches or not self._n:
                found = list(self._raw(name) or ())
            else:  # a table made from columns, as :meth:`where` makes: its members are the numbers
                found = self.column(name)
            self._columns[key] = found
        return found

    def _raw(self, name: str) -> Iterable[Any] | None:
        """One raw column across the batches (single use); ``None`` if no batch has it."""
        parts = [(b.column(name), b.n) for b in self._batches]
        if all(values is None for values, _n in parts):
            return None
        if len(parts) == 1:
            return parts[0][0]
        return chain.from_iterable(values if values is not None else repeat(None, n) for values, n in parts)

    def _each(self, name: str, convert: Callable[[Any], Any]) -> list[Any] | None:
        """Raw column ``name`` converted value by value (``None`` if no batch has it), a batch whose
        values are all one (a family, UNCONN, an unconnected socket's peer, as a rule) converted once:
        counting equal values runs in C; a lookup per socket does not."""
        parts = [(b.column(name), b.n) for b in self._batches]
        if all(values is None for values, _n in parts):
            return None
        out: list[Any] = []
        for values, n in parts:
            if values is None:
                out.extend(repeat(convert(None), n))
            elif n and values.count(values[0]) == n:
                out.extend(repeat(convert(values[0]), n))
            else:
                out.extend(map(convert, values))
        return out

    def _convert(self, name: str) -> list[Any]:
        n = self._n
        raw = self._raw
        if name in ("family", "state"):
            return self._each(name, _members(name).get) or []
        if name in ("local_ip", "peer_ip"):
            return self._each("src" if name == "local_ip" else "dst", _IpText().__getitem__) or []
        if name in ("local_port", "peer_port"):
            return list(raw("sport" if name == "local_port" else "dport") or ())
        if name == "interface":
            values = raw("ifindex")
            if values is None:
                return [None] * n
            indexes = list(values)
            if indexes.count(0) == n:  # no socket bound to a device, as a rule: no lookup per socket
                return [None] * n
            return list(map(_IfName().__getitem__, indexes))
        if name == "ipv6only":
            return self._each("v6only", _V6ONLY.get) or [None] * n
        if name == "skmem":
            values = raw("skmem")
            return list(map(_skmem, values)) if values is not None else [None] * n
        if name == "drops":
            if "skmem" not in self._columns and all(isinstance(b, _netlink._StridedBatch) for b in self._batches):
                fast = raw("skmem_drops")  # the one value, not the whole SK_MEMINFO per socket
                if fast is not None and all(b.column("skmem_drops") is not None for b in self._batches):
                    return list(fast)
            if raw("skmem") is not None:
                return [m.drops if isinstance(m, SkMem) else None for m in self.column("skmem")]
            return list(raw("drops") or [None] * n)
        if name == "processes":
            if self._owners is None:
                return [()] * n
            return list(map(self._owners.get, self.column("inode"), repeat((), n)))
        if name == "info":
            values = raw("tcp_info")
            return [TcpInfo.decode(v) if v is not None else None for v in values] if values is not None else [None] * n
        if name == "congestion":
            values = raw("cong")
            return [bytes(v).split(b"\0", 1)[0].decode("ascii", "replace") if v is not None else None
                    for v in values] if values is not None else [None] * n
        if name == "cc_info":
            found: list[Any] = [None] * n
            for kind in ("vegas", "dctcp", "bbr"):
                values = raw(kind)
                if values is not None:
                    found = [(kind, v) if v is not None else old for v, old in zip(values, found)]
            return list(map(_cc_info, found))
        if name in ("timer", "retrans", "expires"):
            return list(raw(name) or [0] * n)
        if name in self._fields:
            values = raw(name)
            return list(values) if values is not None else [None] * n
        raise KeyError(f"no such column: {name!r} (columns: {', '.join(self._fields)})")

    def __iter__(self) -> Iterator[Record]:
        # tuple.__new__(record, row) per socket, called from C (map over two iterables)
        rows = zip(*(self.column(name) for name in self._fields))
        return map(tuple.__new__, repeat(self.record), rows)

    @overload
    def __getitem__(self, index: int) -> Record: ...
    @overload
    def __getitem__(self, index: slice) -> SocketTable[Record]: ...
    def __getitem__(self, index: int | slice) -> Record | SocketTable[Record]:
        if isinstance(index, slice):
            return self._subset(range(self._n)[index])
        if not -self._n <= index < self._n:
            raise IndexError("SocketTable index out of range")
        return tuple.__new__(self.record, [self.column(name)[index] for name in self._fields])

    def where(self, predicate: Callable[[Record], bool]) -> SocketTable[Record]:
        """The sockets for which ``predicate(record)`` is true, as a new table."""
        return self._subset([i for i, sock in enumerate(self) if predicate(sock)])

    def _subset(self, keep: Sequence[int]) -> SocketTable[Record]:
        columns = {name: [self.column(name)[i] for i in keep] for name in self._fields}
        return SocketTable([], self._owners, columns=columns, n=len(keep), record=self.record)
