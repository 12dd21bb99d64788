"""``SocketTable``: a listing held as columns, turned into :class:`UdpSocket` records only on demand.

A listing of 50,000 sockets is decoded column by column at C speed; building 50,000 records costs
more than that (~0.7 µs each). ``udpkit ss`` renders straight from the columns it needs; a library
caller iterating the table gets records, built in one ``map`` over the columns.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from itertools import chain, repeat
from typing import Any, overload

from udpkit.inventory import _netlink
from udpkit.inventory._records import Process, SkMem, SocketState, UdpSocket
from udpkit.inventory._system import interface_name

__all__ = ["FIELDS", "SocketTable"]

FIELDS = UdpSocket._fields
_FAMILIES = {socket.AF_INET.value: socket.AF_INET, socket.AF_INET6.value: socket.AF_INET6}
_STATES = dict(SocketState._value2member_map_)
_V6ONLY = {0: False, 1: True}
_record = partial(tuple.__new__, UdpSocket)


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


def _skmem(raw: tuple[int, ...] | None) -> SkMem | None:
    """The ``SK_MEMINFO`` array -> SkMem; old kernels send 7 or 8 values, newer ones may send more."""
    if raw is None or len(raw) < 7:
        return None
    return SkMem(*raw[:9])


class SocketTable(Sequence[UdpSocket]):
    """UDP sockets as columns. ``table.column("local_port")`` is one field for every socket;
    ``table[i]`` and iteration give :class:`UdpSocket` records; ``table.where(pred)`` filters.

    A column is decoded from the kernel's buffers and converted (address to text, index to device
    name…) the first time it is asked for, and kept.
    """

    __slots__ = ("_batches", "_columns", "_n", "_owners")

    def __init__(
        self,
        batches: Sequence[_netlink.RawBatch],
        owners: dict[int, tuple[Process, ...]] | None = None,
        *,
        columns: dict[str, list[Any]] | None = None,
        n: int | None = None,
    ) -> None:
        self._batches = list(batches)
        self._n = sum(b.n for b in self._batches) if n is None else n
        self._owners = owners
        self._columns: dict[str, list[Any]] = dict(columns or {})

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"<SocketTable of {self._n} UDP sockets>"

    def column(self, name: str) -> list[Any]:
        """Field ``name`` (one of ``UdpSocket._fields``) of every socket, converted once and kept."""
        found = self._columns.get(name)
        if found is None:
            found = self._columns[name] = self._convert(name)
        return found

    def _raw(self, name: str) -> Iterable[Any] | None:
        """One raw column across the batches (single use); ``None`` if no batch has it."""
        parts = [(b.column(name), b.n) for b in self._batches]
        if all(values is None for values, _n in parts):
            return None
        if len(parts) == 1:
            return parts[0][0]
        return chain.from_iterable(values if values is not None else repeat(None, n) for values, n in parts)

    def _convert(self, name: str) -> list[Any]:
        n = self._n
        raw = self._raw
        if name == "family":
            return list(map(_FAMILIES.get, raw("family") or ()))
        if name == "state":
            return list(map(_STATES.get, raw("state") or ()))
        if name in ("local_ip", "peer_ip"):
            return list(map(_IpText().__getitem__, raw("src" if name == "local_ip" else "dst") or ()))
        if name in ("local_port", "peer_port"):
            return list(raw("sport" if name == "local_port" else "dport") or ())
        if name == "interface":
            values = raw("ifindex")
            return list(map(_IfName().__getitem__, values)) if values is not None else [None] * n
        if name == "ipv6only":
            values = raw("v6only")
            return list(map(_V6ONLY.get, values)) if values is not None else [None] * n
        if name == "skmem":
            values = raw("skmem")
            return list(map(_skmem, values)) if values is not None else [None] * n
        if name == "drops":
            if raw("skmem") is not None:
                return [m.drops if isinstance(m, SkMem) else None for m in self.column("skmem")]
            return list(raw("drops") or [None] * n)
        if name == "processes":
            if self._owners is None:
                return [()] * n
            return list(map(self._owners.get, self.column("inode"), repeat((), n)))
        if name in FIELDS:
            values = raw(name)
            return list(values) if values is not None else [None] * n
        raise KeyError(f"no such column: {name!r} (columns: {', '.join(FIELDS)})")

    def __iter__(self) -> Iterator[UdpSocket]:
        return map(_record, zip(*(self.column(name) for name in FIELDS)))

    @overload
    def __getitem__(self, index: int) -> UdpSocket: ...
    @overload
    def __getitem__(self, index: slice) -> SocketTable: ...
    def __getitem__(self, index: int | slice) -> UdpSocket | SocketTable:
        if isinstance(index, slice):
            return self._subset(range(self._n)[index])
        if not -self._n <= index < self._n:
            raise IndexError("SocketTable index out of range")
        return _record(self.column(name)[index] for name in FIELDS)

    def where(self, predicate: Callable[[UdpSocket], bool]) -> SocketTable:
        """The sockets for which ``predicate(record)`` is true, as a new table."""
        return self._subset([i for i, sock in enumerate(self) if predicate(sock)])

    def _subset(self, keep: Sequence[int]) -> SocketTable:
        columns = {name: [self.column(name)[i] for i in keep] for name in FIELDS}
        return SocketTable([], self._owners, columns=columns, n=len(keep))
