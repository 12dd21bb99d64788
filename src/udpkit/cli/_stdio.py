"""The process's standard input as a descriptor, for the commands that send what is typed."""

from __future__ import annotations

import sys

__all__ = ["stdin_fd"]


def stdin_fd() -> int | None:
    """``sys.stdin``'s descriptor; ``None`` where there is none (closed, or replaced by an object)."""
    try:
        return sys.stdin.fileno() if sys.stdin is not None else None
    except (OSError, ValueError):
        return None
