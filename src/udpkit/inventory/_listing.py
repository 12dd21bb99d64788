"""``list_udp_sockets()`` and ``list_tcp_sockets()``: one call over the netlink and /proc backends,
owners and filters."""

from __future__ import annotations

from _socket import AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP
from collections.abc import Callable, Collection, Sequence
from udpkit.errors import BackendUnavailable, UsageError
from udpkit.inventory import _netlink, _procfs
from udpkit.inventory._records import STATE_LABELS, Process, TcpSocket, UdpSocket
from udpkit.inventory._table import SocketTable

__all__ = ["Backend", "list_tcp_sockets", "list_udp_sockets", "scan_tcp_sockets", "scan_udp_sockets"]

TYPE_CHECKING = False  # typing is not imported at run time: see udpkit._typing
if TYPE_CHECKING:
    from typing import Any, Literal

    Backend = Literal["auto", "netlink", "proc"]
else:
    Backend = str  # for type checkers, the Literal of the three names

_ALL_STATES = frozenset(range(len(STATE_LABELS)))  # every sk_state (SocketState's values)


def _family_list(families: Collection[int] | None) -> list[int]:
    if families is None:
        return [AF_INET, AF_INET6]
    chosen = []
    for fam in (AF_INET, AF_INET6):
        if fam in families or {AF_INET: 4, AF_INET6: 6}[fam] in families:
            chosen.append(fam)
    unknown = set(families) - {4, 6, AF_INET, AF_INET6}
    if unknown:
        raise UsageError(f"unknown address family {sorted(unknown)[0]!r}: use 4, 6, AF_INET or AF_INET6")
    return chosen


def list_udp_sockets(
    *,
    families: Collection[int] | None = None,
    states: Collection[int] | None = None,
    processes: bool = False,
    memory: bool = True,
    where: Callable[[UdpSocket], bool] | str | Sequence[str] | None = None,
    backend: Backend = "auto",
) -> list[UdpSocket]:
    """Every UDP socket in this network namespace, as typed records, in the order ``ss`` lists them.

    ``families``: 4 and/or 6 (default both). ``states``: e.g. ``{SocketState.CLOSE}`` for unconnected
    ("listening") sockets, ``{SocketState.ESTABLISHED}`` for connected ones (default: all).
    ``processes``: fill ``UdpSocket.processes`` from ``/proc`` (others' processes need root).
    ``memory``: ask the kernel for ``SK_MEMINFO`` (``skmem`` and ``drops``).
    ``where``: an ss filter expression (``"sport = :123"``) or any predicate.
    ``backend``: ``"netlink"`` (sock_diag, as ss), ``"proc"`` (``/proc/net/udp``), or ``"auto"``:
    netlink, falling back to /proc where netlink is refused.
    """
    return list(
        scan_udp_sockets(
            families=families, states=states, processes=processes, memory=memory, where=where, backend=backend
        )
    )


def scan_udp_sockets(
    *,
    families: Collection[int] | None = None,
    states: Collection[int] | None = None,
    processes: bool = False,
    memory: bool = True,
    where: Callable[[UdpSocket], bool] | str | Sequence[str] | None = None,
    backend: Backend = "auto",
    owners: dict[int, tuple[Process, ...]] | None = None,
) -> SocketTable[UdpSocket]:
    """Like :func:`list_udp_sockets`, but as a :class:`SocketTable`: the same sockets held as columns,
    records built only when asked for. For bulk consumers (``udpkit ss`` renders 50,000 sockets from it).
    ``owners``: a :func:`socket_owners` map already read, so that several listings share one walk of
    ``/proc`` (it implies ``processes``)."""
    return _scan(UdpSocket, families, states, processes, memory, where, backend, False, owners)  # type: ignore[no-any-return]


def list_tcp_sockets(
    *,
    families: Collection[int] | None = None,
    states: Collection[int] | None = None,
    processes: bool = False,
    memory: bool = True,
    info: bool = False,
    where: Callable[[TcpSocket], bool] | str | Sequence[str] | None = None,
    backend: Backend = "auto",
) -> list[TcpSocket]:
    """Every TCP socket in this network namespace, as ``ss -t`` lists them (TIME-WAIT and SYN-RECV
    entries included when their states are asked for). Arguments as :func:`list_udp_sockets`;
    ``info``: ask for ``tcp_info`` and the congestion control (``ss -i``)."""
    return list(scan_tcp_sockets(families=families, states=states, processes=processes, memory=memory,
                                 info=info, where=where, backend=backend))


def scan_tcp_sockets(
    *,
    families: Collection[int] | None = None,
    states: Collection[int] | None = None,
    processes: bool = False,
    memory: bool = True,
    info: bool = False,
    where: Callable[[TcpSocket], bool] | str | Sequence[str] | None = None,
    backend: Backend = "auto",
    owners: dict[int, tuple[Process, ...]] | None = None,
) -> SocketTable[TcpSocket]:
    """:func:`list_tcp_sockets` as a columnar :class:`SocketTable` (``owners`` as in :func:`scan_udp_sockets`)."""
    return _scan(TcpSocket, families, states, processes, memory, where, backend, info, owners)  # type: ignore[no-any-return]


def _scan(
    record: Any,
    families: Collection[int] | None,
    states: Collection[int] | None,
    processes: bool,
    memory: bool,
    where: Any,
    backend: Backend,
    info: bool,
    owners: dict[int, tuple[Process, ...]] | None = None,
) -> Any:
    protocol = "udp" if record is UdpSocket else "tcp"
    if backend not in ("auto", "netlink", "proc"):
        raise UsageError(f"unknown backend {backend!r}: use auto, netlink or proc")
    predicate: Callable[[UdpSocket], bool] | None
    if where is None or callable(where):
        predicate = where
    else:
        from udpkit.inventory.filter import parse_filter

        predicate = parse_filter(where).matches
    wanted = _ALL_STATES if states is None else frozenset(states)
    fams = _family_list(families)
    batches: list[_netlink.RawBatch]
    if backend == "proc":
        batches = [_proc_batch(fams, wanted, protocol)]
    else:
        try:
            batches = _netlink_batches(fams, wanted, memory, protocol, info)
        except BackendUnavailable:
            if backend == "netlink":
                raise
            batches = [_proc_batch(fams, wanted, protocol)]
    if processes and owners is None:
        from udpkit.inventory._owners import socket_owners

        owners = socket_owners()
    table = SocketTable(batches, owners, record=record)
    return table.where(predicate) if predicate is not None else table


def _state_mask(states: frozenset[int]) -> int:
    mask = 0
    for state in states:
        mask |= 1 << state
    return mask


def _netlink_batches(
    fams: list[int], states: frozenset[int], memory: bool, protocol: str, info: bool
) -> list[_netlink.RawBatch]:
    """Each family's dump; with two, the second runs in a thread beside the first.

    Strategy: most of a large dump's time is the kernel's, inside ``recv`` — which releases the
    interpreter lock — so IPv6's dump proceeds on another core while IPv4's chunks are decoded here
    (measured at 50,000 sockets in ``bench/ss_bench.py``). ``_thread``, not ``threading``: the
    listing's start-up time counts, and this needs only a lock.
    """
    ext = (_netlink.EXT_SKMEMINFO if memory else 0) | (_netlink.EXT_TCP_INFO if info else 0)
    number = IPPROTO_UDP if protocol == "udp" else IPPROTO_TCP
    mask = _state_mask(states)
    if len(fams) < 2:
        return [batch for fam in fams for batch in _netlink.dump(fam, mask, ext, protocol=number)]
    import _thread

    results: list[list[_netlink.RawBatch] | BaseException] = []
    finished = _thread.allocate_lock()
    finished.acquire()

    def other() -> None:
        try:
            results.append(_netlink.dump(fams[1], mask, ext, protocol=number))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            results.append(exc)
        finally:
            finished.release()

    _thread.start_new_thread(other, ())
    try:
        first = _netlink.dump(fams[0], mask, ext, protocol=number)
    finally:
        finished.acquire()  # the thread always ends: dump() gives up after its timeout
    second = results[0]
    if isinstance(second, BaseException):
        raise second
    batches = first + second
    for fam in fams[2:]:
        batches.extend(_netlink.dump(fam, mask, ext, protocol=number))
    return batches


def _proc_batch(
    fams: list[int], states: frozenset[int], protocol: str
) -> _netlink.RawBatch:
    def read(fam: int) -> list[dict[str, object]]:
        return _procfs.read_proc_net_udp(fam) if protocol == "udp" else _procfs.read_proc_net(protocol, fam)

    rows = [row for fam in fams for row in read(fam) if row["state"] in states]
    names = set().union(*rows) if rows else set()
    return _netlink.RawBatch(len(rows), {name: [row.get(name) for row in rows] for name in names})
