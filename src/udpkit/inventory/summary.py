"""The numbers behind ``ss -s``: the kernel's socket counts from ``/proc/net/sockstat{,6}`` and ``snmp``.

ss does not count sockets for its summary; it reads what the kernel already counts. This module
reads the same files the same way (the first number after each label), so ``udpkit ss -s`` shows
what ``ss -s`` shows at the same instant, and a library caller gets the counts as a dict.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["parse_sockstat", "read_summary"]

# sockstat line label -> the names of the numbers it holds, in order (ss's get_sockstat_line).
_LABELS = {
    "sockets:": ("sockets",),
    "TCP:": ("tcp4_inuse", "tcp_orphan", "tcp_tw", "tcp_alloc", "tcp_mem"),
    "UDP:": ("udp4",),
    "RAW:": ("raw4",),
    "FRAG:": ("frag4", "frag4_mem"),
    "TCP6:": ("tcp6_inuse",),
    "UDP6:": ("udp6",),
    "RAW6:": ("raw6",),
    "FRAG6:": ("frag6", "frag6_mem"),
}


def parse_sockstat(lines: Iterable[str]) -> dict[str, int]:
    """``"TCP: inuse 1 orphan 0 tw 8 alloc 1 mem 383"`` -> ``{"tcp4_inuse": 1, "tcp_orphan": 0, …}``.

    Each label's numbers are the values that follow its keywords; unknown lines and unreadable
    numbers are skipped, as ss's ``sscanf`` leaves them at zero.
    """
    found: dict[str, int] = {}
    for line in lines:
        label, _, rest = line.partition(" ")
        names = _LABELS.get(label)
        if names is None:
            continue
        values = rest.split()[1::2]
        for name, value in zip(names, values):
            if value.isdigit():
                found[name] = int(value)
    return found


def _snmp_value(lines: Iterable[str], group: str, key: str) -> int | None:
    """A counter from ``/proc/net/snmp``, whose groups come as a line of names then a line of values."""
    names: list[str] | None = None
    for line in lines:
        if not line.startswith(group):
            names = None
            continue
        if names is None:
            names = line.split()
            continue
        values = line.split()
        if key in names and len(values) == len(names):
            try:
                return int(values[names.index(key)])
            except ValueError:
                return None
        names = None
    return None


def read_summary(proc: str = "/proc") -> dict[str, int]:
    """The counts ``ss -s`` prints; files that cannot be read count as zeros, as in ss."""
    summary: dict[str, int] = {}
    for name in ("sockstat", "sockstat6"):
        try:
            with open(f"{proc}/net/{name}", encoding="ascii") as fh:
                summary.update(parse_sockstat(fh))
        except OSError:
            continue
    try:
        with open(f"{proc}/net/snmp", encoding="ascii") as fh:
            estab = _snmp_value(fh, "Tcp:", "CurrEstab")
    except OSError:
        estab = None
    summary["tcp_estab"] = estab or 0
    return summary
