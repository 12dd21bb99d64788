"""socat's ``-v`` and ``-x`` traffic dumps, formatted as socat 1.7.4 writes them to standard error.

Each block starts with a header: ``> `` for data moving from the first address to the second,
``< `` for the reverse, the local time to the microsecond (socat prints the microseconds with nine
digits, ``.000385870``, and so do we), and the block's byte range in that direction::

    > 2026/11/29 18:52:10.000385870  length=6 from=0 to=5

``-v`` then writes the data as text (``\\r``, ``\\a``, ``\\b``, ``\\v``, ``\\f`` and ``\\\\`` escaped, other
unprintable bytes as ``.``); ``-x`` as hex; both: 16-byte rows of hex and text, ending at each
newline, then ``--``. Pure formatting: the caller writes the text where it wants.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TrafficDump"]

_ESCAPES = {7: "\\a", 8: "\\b", 9: "\t", 10: "\n", 11: "\\v", 12: "\\f", 13: "\\r", 92: "\\\\"}
_TEXT = [_ESCAPES.get(c, chr(c) if 32 <= c < 127 else ".") for c in range(256)]
_SHOWN = [chr(c) if 32 <= c < 127 else "." for c in range(256)]


class TrafficDump:
    """The dump of one transfer (socat counts ``from``/``to`` per direction, per process — so a
    forked session starts again at 0: keep one TrafficDump per session)."""

    def __init__(self, text: bool, hexdump: bool, clock: Callable[[], float] = time.time) -> None:
        self.text, self.hexdump = text, hexdump
        self._clock = clock
        self._done = [0, 0]  # bytes so far: first-to-second, second-to-first

    def block(self, data: bytes, right_to_left: bool, now: float | None = None) -> str:
        """The dump of ``data`` moving one way; empty when neither ``-v`` nor ``-x`` was asked for."""
        if not (self.text or self.hexdump) or not data:
            return ""
        when = self._clock() if now is None else now
        start = self._done[right_to_left]
        self._done[right_to_left] += len(data)
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(when))
        micros = int(round((when % 1) * 1e6)) % 1_000_000
        header = (f"{'<' if right_to_left else '>'} {stamp}.{micros:09d}  length={len(data)} "
                  f"from={start} to={start + len(data) - 1}\n")
        if self.text and self.hexdump:
            return header + _rows(data) + "--\n"
        if self.text:
            return header + "".join(_TEXT[c] for c in data)
        return header + "".join(f" {c:02x}" for c in data) + "\n"


def _rows(data: bytes) -> str:
    """socat's ``-x -v`` rows: up to 16 bytes, cut after each newline, hex padded to 16 columns."""
    out = []
    pos = 0
    while pos < len(data):
        row = data[pos : pos + 16]
        cut = row.find(b"\n")
        if cut >= 0:
            row = row[: cut + 1]
        pos += len(row)
        hexes = "".join(f" {c:02x}" for c in row) + "   " * (16 - len(row))
        out.append(f"{hexes}  {''.join(_SHOWN[c] for c in row)}\n")
    return "".join(out)
