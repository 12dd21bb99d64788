"""``/metrics``: the host's UDP state for Prometheus — the kernel's UDP and UDP-Lite counters of both
families, and gauges per listening or connected UDP socket from the netlink table, capped.

Collected at scrape time (a ``prometheus_client`` collector), so a value is the kernel's at that
instant. The counters are read from ``/proc/net/snmp`` and ``/proc/net/snmp6`` as node_exporter's
netstat collector reads them (``node_netstat_Udp_InDatagrams`` is our
``udpkit_udp_in_datagrams_total{protocol="udp",family="inet"}``).

Per-socket series cost the Prometheus server memory for every socket: at most ``max_sockets``
sockets get series of their own (those with the most queued bytes and drops first); the rest are
summed into one series whose ``process`` label says how many it holds, and
``udpkit_udp_sockets{series="own|aggregated"}`` says how many went where.

Owners (the ``process`` label) come from a walk of every process's descriptors, which costs more
than the netlink dump itself on a busy host; the walk is kept for ``OWNERS_TTL`` seconds, so a
socket opened since shows its owner at the next walk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["COUNTERS", "HostCollector", "OWNERS_TTL", "parse_snmp", "parse_snmp6"]

OWNERS_TTL = 15.0

#: The kernel's names -> ours (snake case), the same for both families and both protocols.
COUNTERS = {
    "InDatagrams": "in_datagrams", "NoPorts": "no_ports", "InErrors": "in_errors", "OutDatagrams": "out_datagrams",
    "RcvbufErrors": "rcvbuf_errors", "SndbufErrors": "sndbuf_errors", "InCsumErrors": "in_csum_errors",
    "IgnoredMulti": "ignored_multi", "MemErrors": "mem_errors",
}
_SNMP6 = re.compile(r"^(Udp6|UdpLite6)(\w+)\s+(\d+)$")


def parse_snmp(lines: Iterable[str]) -> dict[tuple[str, str], int]:
    """``/proc/net/snmp``'s ``Udp:`` and ``UdpLite:`` pairs of lines -> {(protocol, counter): value}."""
    out: dict[tuple[str, str], int] = {}
    names: dict[str, list[str]] = {}
    for line in lines:
        label, _, rest = line.partition(":")
        if label not in ("Udp", "UdpLite"):
            continue
        fields = rest.split()
        if label not in names:
            names[label] = fields
            continue
        protocol = "udp" if label == "Udp" else "udplite"
        for name, value in zip(names.pop(label), fields):
            if value.lstrip("-").isdigit():
                out[(protocol, name)] = int(value)
    return out


def parse_snmp6(lines: Iterable[str]) -> dict[tuple[str, str], int]:
    """``/proc/net/snmp6``'s ``Udp6InDatagrams 12`` lines -> {(protocol, counter): value}."""
    out: dict[tuple[str, str], int] = {}
    for line in lines:
        found = _SNMP6.match(line.strip())
        if found:
            out[("udp" if found.group(1) == "Udp6" else "udplite", found.group(2))] = int(found.group(3))
    return out


def _read(path: str) -> list[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.readlines()
    except OSError:
        return []


class HostCollector:
    """A ``prometheus_client`` collector of the host's UDP counters and sockets."""

    def __init__(self, max_sockets: int = 1000, proc: str = "/proc") -> None:
        self.max_sockets = max_sockets
        self.proc = proc
        self._owners: dict[int, Any] | None = None
        self._owners_at = 0.0

    def describe(self) -> list[Any]:
        return []  # collected fresh each scrape; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counters: dict[str, Any] = {}
        for family, values in (("inet", parse_snmp(_read(f"{self.proc}/net/snmp"))),
                               ("inet6", parse_snmp6(_read(f"{self.proc}/net/snmp6")))):
            for (protocol, name), value in sorted(values.items()):
                ours = COUNTERS.get(name)
                if ours is None:
                    continue
                metric = counters.get(ours)
                if metric is None:
                    metric = counters[ours] = CounterMetricFamily(
                        f"udpkit_udp_{ours}", f"The kernel's {name} counter (/proc/net/snmp, snmp6)",
                        labels=["protocol", "family"])
                metric.add_metric([protocol, family], value)
        yield from counters.values()
        yield from self._sockets(GaugeMetricFamily, CounterMetricFamily)

    def _sockets(self, gauge: Any, counter: Any) -> Iterator[Any]:
        import time

        from udpkit.inventory import SocketState, scan_udp_sockets, socket_owners

        now = time.monotonic()
        if self._owners is None or now - self._owners_at > OWNERS_TTL:
            self._owners, self._owners_at = socket_owners(), now
        table = scan_udp_sockets(states={SocketState.CLOSE, SocketState.ESTABLISHED}, memory=True,
                                 owners=self._owners)
        socks = sorted(table, key=lambda s: (-(s.recv_q + s.send_q), -(s.drops or 0), s.local_port))
        own, rest = socks[: self.max_sockets], socks[self.max_sockets:]
        labels = ["local_address", "local_port", "family", "state", "process"]
        recv = gauge("udpkit_udp_socket_receive_queue_bytes", "Bytes waiting in the socket's receive queue", labels=labels)
        send = gauge("udpkit_udp_socket_send_queue_bytes", "Bytes waiting in the socket's send queue", labels=labels)
        drops = counter("udpkit_udp_socket_drops", "Datagrams the kernel dropped for this socket (SK_MEMINFO)",
                        labels=labels)
        memory = gauge("udpkit_udp_socket_memory_bytes", "The socket's SK_MEMINFO values", labels=[*labels, "kind"])
        for sock in own:
            names = ",".join(sorted({p.name for p in sock.processes})) or ""
            values = [sock.local_ip, str(sock.local_port), "inet" if sock.family == 2 else "inet6", sock.state.label,
                      names]
            recv.add_metric(values, sock.recv_q)
            send.add_metric(values, sock.send_q)
            drops.add_metric(values, sock.drops or 0)
            if sock.skmem is not None:
                for kind in ("rmem_alloc", "rcvbuf", "wmem_alloc", "sndbuf", "wmem_queued"):
                    memory.add_metric([*values, kind], getattr(sock.skmem, kind))
        if rest:
            values = ["", "", "", "", f"(other {len(rest)} sockets)"]
            recv.add_metric(values, sum(s.recv_q for s in rest))
            send.add_metric(values, sum(s.send_q for s in rest))
            drops.add_metric(values, sum(s.drops or 0 for s in rest))
        count = gauge("udpkit_udp_sockets", "UDP sockets, with series of their own or summed into one (--max-sockets)",
                      labels=["series"])
        count.add_metric(["own"], len(own))
        count.add_metric(["aggregated"], len(rest))
        yield from (recv, send, drops, memory, count)
