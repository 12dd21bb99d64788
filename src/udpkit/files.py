"""Opening files the way a server run as root must: never through a symbolic link, never a FIFO or
a device where a file is meant, never more read into memory than a cap.

``read_text`` and ``read_bytes`` are for what a command is given to read (zone and hosts files, a
probe's payload): a regular file, at most ``limit`` bytes, each refusal one clear :class:`UsageError`. ``open_output`` is for recordings: the last path
component may not be a symbolic link (``O_NOFOLLOW``), a new file is created with ``O_EXCL`` (no race
can turn it into a link) and mode 0640 less the umask, and an existing regular file with other hard
links is refused, since writing it would write a file somebody else named.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from udpkit.errors import UdpkitError, UsageError

__all__ = ["MAX_CONFIG_BYTES", "open_output", "read_bytes", "read_text"]

#: The most a configuration file may hold (a zone of a few hundred thousand records).
MAX_CONFIG_BYTES = 16 << 20


def read_bytes(path: str, what: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; ``what`` names it in errors
    (``--payload-file``). A symbolic link, a FIFO, a device or a larger file is one ``UsageError``."""
    try:
        # O_NONBLOCK: opening a FIFO returns at once (and is then refused) instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{what} {path}: is a symbolic link; name the file itself") from None
        raise UsageError(f"{what} {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{what} {path}: not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{what} {path}: larger than {_size(limit)}")
    return data


def read_text(path: str, what: str, limit: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of the regular file ``path`` (see :func:`read_bytes`); ``what`` names it in errors."""
    data = read_bytes(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path}: not UTF-8 text (byte {exc.start})") from None


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"


def open_output(path: str, *, truncate: bool, must_exist: bool = False, mode: int = 0o640,
                append: bool = True, exclusive: bool = False) -> BinaryIO:
    """``path`` opened for writing, appended to (or emptied with ``truncate``); FIFOs and character
    devices such as ``/dev/null`` are taken as they are. ``must_exist``: never create it (socat's OPEN:
    without ``creat``); ``exclusive``: only create it (``creat,excl``); ``append`` ``False``: write from
    its start over what is there, as socat's OPEN: does without ``append``."""
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = -1
    try:
        if not must_exist:
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                if exclusive:
                    raise
                fd = -1
        if fd < 0:
            fd = os.open(path, flags | (os.O_APPEND if append and not truncate else 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UdpkitError(f"cannot open {path}: it is a symbolic link; name the file itself") from None
        if exc.errno == errno.ENXIO:
            raise UdpkitError(f"cannot open {path}: a FIFO with no reader") from None
        raise UdpkitError(f"cannot open {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            if info.st_nlink > 1:
                raise UdpkitError(f"cannot open {path}: it has {info.st_nlink} hard links; name a file of its own")
            if truncate:
                os.ftruncate(fd, 0)
            elif append:
                os.lseek(fd, 0, os.SEEK_END)
        elif not (stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode)):
            raise UdpkitError(f"cannot open {path}: not a file, FIFO or character device")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "ab" if append and not truncate else "wb")  # "a" would seek to the end
    except BaseException:
        os.close(fd)
        raise
