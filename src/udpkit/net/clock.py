"""What the host's clock can tell an NTP server: how finely it can be read (the precision NTP
reports, as log2 seconds) and whether the kernel considers it synchronized (``adjtimex``)."""

from __future__ import annotations

import ctypes
import math
import struct
import time
from typing import NamedTuple

__all__ = ["ClockState", "clock_state", "measure_precision"]

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


class ClockState(NamedTuple):
    synchronized: bool
    max_error: float  # seconds, the kernel's bound on the clock's error
    est_error: float  # seconds


def measure_precision(samples: int = 2000) -> int:
    """log2 of the smallest step between two clock readings, as ntpd and chrony measure it: about
    -24 for a nanosecond clock read from Python in ~60 ns."""
    best = math.inf
    read = time.time_ns
    last = read()
    for _ in range(samples):
        now = read()
        if now > last:
            best = min(best, now - last)
        last = now
    return max(-32, min(0, math.floor(math.log2(best / 1e9)))) if best < math.inf else -20


def clock_state() -> ClockState | None:
    """The kernel's view of the system clock (``adjtimex`` without changing anything); ``None`` where
    it cannot be asked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)  # struct timex, modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    _modes, _offset, _freq, max_error, est_error, status = struct.unpack_from("=i4xqqqqi", buf.raw)
    synchronized = state != _TIME_ERROR and not status & _STA_UNSYNC
    return ClockState(synchronized, max_error / 1e6, est_error / 1e6)
