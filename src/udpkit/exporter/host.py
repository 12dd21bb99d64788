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

import heapq
import re
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["COUNTERS", "DEFAULT_MAX_SOCKETS", "HostCollector", "OWNERS_TTL", "parse_snmp", "parse_snmp6"]

OWNERS_TTL = 15.0
#: Sockets with series of their own (7 series each); the rest are summed. A few hundred sockets worth
#: watching one by one is what a host has; 50,000 series per scrape would cost every Prometheus.
DEFAULT_MAX_SOCKETS = 250

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

    def __init__(self, max_sockets: int = DEFAULT_MAX_SOCKETS, proc: str = "/proc") -> None:
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
        # Rank by columns (no record per socket): the most queued bytes, then drops, keep their own series.
        recv_q, send_q, drops = table.column("recv_q"), table.column("send_q"), table.column("drops")
        weight = [(r + w, d or 0) for r, w, d in zip(recv_q, send_q, drops)]
        order = heapq.nlargest(self.max_sockets, range(len(table)), key=weight.__getitem__)
        labels = ["local_address", "local_port", "family", "state", "process"]
        recv = gauge("udpkit_udp_socket_receive_queue_bytes", "Bytes waiting in the socket's receive queue", labels=labels)
        send = gauge("udpkit_udp_socket_send_queue_bytes", "Bytes waiting in the socket's send queue", labels=labels)
        dropped = counter("udpkit_udp_socket_drops", "Datagrams the kernel dropped for this socket (SK_MEMINFO)",
                          labels=labels)
        memory = gauge("udpkit_udp_socket_memory_bytes", "The socket's SK_MEMINFO values", labels=[*labels, "kind"])
        ips, ports, families = table.column("local_ip"), table.column("local_port"), table.column("family")
        states, inodes = table.column("state"), table.column("inode")
        raw_memory = table.column("skmem") if order else []
        owners = self._owners or {}
        for index in order:
            procs = owners.get(inodes[index], ())
            values = [ips[index], str(ports[index]), "inet" if families[index] == 2 else "inet6", states[index].label,
                      ",".join(sorted({p.name for p in procs}))]
            recv.add_metric(values, recv_q[index])
            send.add_metric(values, send_q[index])
            dropped.add_metric(values, drops[index] or 0)
            skmem = raw_memory[index]
            if skmem is not None:
                for kind in ("rmem_alloc", "rcvbuf", "wmem_alloc", "sndbuf"):
                    memory.add_metric([*values, kind], getattr(skmem, kind))
        rest = len(table) - len(order)
        if rest:
            values = ["", "", "", "", f"(other {rest} sockets)"]
            chosen = set(order)
            recv.add_metric(values, sum(recv_q) - sum(recv_q[i] for i in chosen))
            send.add_metric(values, sum(send_q) - sum(send_q[i] for i in chosen))
            dropped.add_metric(values, sum(d or 0 for d in drops) - sum(drops[i] or 0 for i in chosen))
        count = gauge("udpkit_udp_sockets", "UDP sockets, with series of their own or summed into one (--max-sockets)",
                      labels=["series"])
        count.add_metric(["own"], len(order))
        count.add_metric(["aggregated"], rest)
        yield from (recv, send, dropped, memory, count)
