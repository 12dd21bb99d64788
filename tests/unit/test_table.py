"""SocketTable: columns on demand, records on iteration, filtering and JSON."""

from __future__ import annotations

import json
import socket

import pytest

from tests.unit.netlink_builder import done, message, standard_attrs
from udpkit.inventory import SocketTable, UdpSocket
from udpkit.inventory import _netlink as nl


def sample() -> SocketTable:
    chunk = b"".join(message(sport=p, inode=p, attrs=standard_attrs(socket.AF_INET, skmem=(0,) * 9)) for p in (1, 2, 3))
    v6 = message(family=socket.AF_INET6, sport=4, inode=4, attrs=standard_attrs(socket.AF_INET6, v6only=1)) + done()
    return SocketTable([nl.decode_chunk(chunk)[0], nl.decode_chunk(v6)[0]])


def test_columns_records_and_indexing_agree() -> None:
    t = sample()
    assert len(t) == 4
    assert t.column("local_port") == [1, 2, 3, 4]
    assert [s.local_port for s in t] == [1, 2, 3, 4]
    assert t[-1].local_ip == "::1" and t[-1].ipv6only is True and t[0].ipv6only is None
    assert [s.drops for s in t] == [0, 0, 0, None]  # the IPv6 buffer carried no SK_MEMINFO
    assert [s.local_port for s in t[1:3]] == [2, 3]
    with pytest.raises(IndexError):
        t[4]
    with pytest.raises(KeyError):
        t.column("nope")


def test_numbers_are_the_enum_columns_values_without_the_enums() -> None:
    """``udpkit ss`` reads family and state as the kernel's numbers (it never imports ``socket`` or
    ``enum``); records and :meth:`SocketTable.column` still give ``AddressFamily`` and ``SocketState``."""
    from udpkit.inventory import SocketState

    for t in (sample(), sample().where(lambda s: True)):  # from the kernel's buffers, and from columns
        assert t.numbers("family") == [2, 2, 2, 10] and t.numbers("state") == [7, 7, 7, 7]
        assert t.column("family") == [socket.AF_INET] * 3 + [socket.AF_INET6]
        assert all(type(f) is socket.AddressFamily for f in t.column("family"))
        assert t.column("state") == [SocketState.CLOSE] * 4 and type(t.column("state")[0]) is SocketState
        assert [s.state.label for s in t] == ["UNCONN"] * 4
    assert SocketTable([]).numbers("state") == []
    with pytest.raises(KeyError):
        sample().numbers("local_port")


def test_state_numbers_labels_and_the_lazy_socket_state_agree() -> None:
    import udpkit
    from udpkit.inventory import SocketState, _records

    assert udpkit.SocketState is SocketState
    assert [(m.name, m.value, m.label) for m in SocketState] == [
        (name, getattr(_records, name), _records.STATE_LABELS[getattr(_records, name)]) for name in (
            "UNKNOWN", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
            "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING")]
    assert _records.state_label(SocketState.CLOSE) == "UNCONN" and _records.state_label(1) == "ESTAB"
    assert _records.state_label(12) == _records.state_label(-1) == "UNKNOWN"  # a newer kernel's state
    assert _records.state_label(None) == "UNKNOWN"  # (a record's, where the enum knew no member)
    with pytest.raises(AttributeError):
        udpkit.inventory.NoSuchName  # type: ignore[attr-defined]


def test_where_keeps_the_matching_sockets() -> None:
    t = sample().where(lambda s: s.local_port % 2 == 0)
    assert [s.local_port for s in t] == [2, 4]
    assert isinstance(t, SocketTable) and len(t) == 2


def test_json_has_the_fields_design_md_names() -> None:
    doc = json.loads(json.dumps([s.to_json() for s in sample()]))
    first = doc[0]
    for key in ("netid", "state", "recv_q", "send_q", "local", "peer", "inode", "uid", "ipv6only", "drops", "processes"):
        assert key in first
    assert first["local"] == {"address": "127.0.0.1", "port": 1, "interface": None}
    assert first["peer"] == {"address": "0.0.0.0", "port": 0}
    assert first["netid"] == "udp" and first["state"] == "UNCONN"
    assert isinstance(sample()[0], UdpSocket) and sample()[0].local.port == 1


def test_listing_falls_back_to_proc_where_netlink_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from udpkit.errors import BackendUnavailable
    from udpkit.inventory import _listing, scan_udp_sockets

    def refused(*args: object, **kwargs: object) -> list[nl.RawBatch]:
        raise BackendUnavailable("netlink sock_diag unavailable: Permission denied")

    proc_rows = [{"family": socket.AF_INET, "state": 7, "src": nl.address_key(socket.AF_INET, socket.inet_aton("127.0.0.1")),
                  "sport": 5353, "dst": 0, "dport": 0, "send_q": 0, "recv_q": 0, "uid": 0, "inode": 9, "drops": 0}]
    monkeypatch.setattr(_listing._netlink, "dump", refused)
    monkeypatch.setattr(_listing._procfs, "read_proc_net_udp", lambda fam: proc_rows if fam == socket.AF_INET else [])
    (sock,) = scan_udp_sockets(backend="auto")
    assert (sock.local_ip, sock.local_port, sock.cookie) == ("127.0.0.1", 5353, None)
    with pytest.raises(BackendUnavailable):
        scan_udp_sockets(backend="netlink")
