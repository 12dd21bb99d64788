"""Which processes hold which sockets: socket inodes mapped to (command, pid, fd) through ``/proc/PID/fd``.

The kernel does not say who owns a socket; like ``ss -p`` (and psutil) we read every process's fd
links once per listing. Processes we may not inspect, or that exit while we look, are skipped.
"""

from __future__ import annotations

import os

from udpkit.inventory._records import Process

__all__ = ["comm_from_stat", "socket_owners"]

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def comm_from_stat(stat: str) -> str:
    """``"1234 (socat) S 1 …"`` -> ``"socat"``: up to the first ``)``, exactly as ``ss`` reads it."""
    start = stat.find("(")
    if start < 0:
        return ""
    end = stat.find(")", start + 1)
    return stat[start + 1 : end if end >= 0 else len(stat)]


def socket_owners(proc: str = "/proc") -> dict[int, tuple[Process, ...]]:
    """Map every socket inode to the processes holding it, in the order ``ss -p`` prints them.

    Strategy: one ``listdir`` of ``/proc`` and, per process, one directory fd used with
    ``readlink(dir_fd=…)`` for each entry, so the kernel never re-walks ``/proc/PID/fd`` per link.
    ``ss`` chains entries at the head of a hash bucket, so for one inode the last one found is
    printed first; we keep that order.
    """
    found: dict[int, list[Process]] = {}
    readlink = os.readlink
    for pid_name in os.listdir(proc):
        if not pid_name.isdigit():
            continue
        try:
            dir_fd = os.open(f"{proc}/{pid_name}/fd", _O_DIR)
        except OSError:
            continue
        try:
            try:
                names = os.listdir(dir_fd)
            except OSError:
                continue
            comm: str | None = None
            pid = int(pid_name)
            for fd_name in names:
                try:
                    target = readlink(fd_name, dir_fd=dir_fd)
                except OSError:
                    continue
                if not target.startswith("socket:["):
                    continue
                if comm is None:
                    comm = _read_comm(proc, pid_name)
                found.setdefault(int(target[8:-1]), []).append(Process(comm, pid, int(fd_name)))
        finally:
            os.close(dir_fd)
    return {inode: tuple(reversed(entries)) for inode, entries in found.items()}


def _read_comm(proc: str, pid_name: str) -> str:
    try:
        with open(f"{proc}/{pid_name}/stat", encoding="utf-8", errors="replace") as fh:
            return comm_from_stat(fh.read(512))
    except OSError:
        return ""
