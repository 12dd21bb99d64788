"""Where received datagrams are recorded (``--out FILE|-`` with ``--format``): text, hex, jsonl, raw or pcap.

Recording never stops the service. Records are gathered in a buffer of the sink's own and written
at each ``flush()``; when the file refuses them (a full disk, an I/O error, a closed pipe) the sink
stops recording with one warning (:attr:`Sink.failure`), cuts a regular file back to the end of the
last flush that was written whole — so a pcap stays readable and a JSON-lines file has whole lines —
and counts what it recorded and what it could not.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from udpkit.addr import Endpoint
from udpkit.errors import UsageError
from udpkit.listen import pcap

__all__ = ["BATCH_FORMATS", "FORMATS", "Sink", "decimal_time", "format_fields", "format_record"]

FORMATS = ("text", "hex", "jsonl", "raw", "pcap")
#: The formats the C batch writes itself (``Batch.record``), byte for byte as :meth:`Sink.write_records`.
BATCH_FORMATS = frozenset({"raw", "pcap", "jsonl"})


_second: list[object] = [None, ""]  # the last whole second formatted, and its text


def _when(timestamp: float) -> str:
    """``1700000000.25`` -> ``"2023-11-14T22:13:20.250000Z"``; the date part is formatted once per second."""
    whole = int(timestamp)
    if _second[0] != whole:
        _second[0], _second[1] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    micros = min(int(round((timestamp - whole) * 1e6)), 999_999)
    return f"{_second[1]}.{micros:06d}Z"


def decimal_time(when: float) -> str:
    """A JSON line's ``time``: the seconds with nine decimals, the nanoseconds of the pcap record
    of the same datagram (:func:`pcap.split_time`). Strategy: ``repr`` of the float took 450 ns a
    datagram here (the shortest decimal that reads back, found digit by digit), as much as the
    rest of the line; integers are written at once."""
    seconds, nanos = pcap.split_time(when)
    return f"{seconds}.{nanos:09d}"


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def format_record(fmt: str, timestamp: float, peer: Endpoint, local: Endpoint, data: bytes) -> bytes:
    """One datagram in ``fmt`` (pure): what ``Sink.write`` appends to the file."""
    return format_fields(fmt, timestamp, peer.ip, peer.port, local.ip, local.port, data)


def format_fields(fmt: str, timestamp: float, peer_ip: str, peer_port: int, local_ip: str, local_port: int,
                  data: bytes) -> bytes:
    """``format_record`` on plain fields (the listener's recording loop builds no Endpoint)."""
    if fmt == "raw":
        return data
    if fmt == "pcap":
        return pcap.record(timestamp, pcap.ip_udp_packet(peer_ip, peer_port, local_ip, local_port, data))
    if fmt == "jsonl":
        # Addresses are inet_ntop text and ports numbers: nothing here needs JSON escaping.
        return (f'{{"time":{decimal_time(timestamp)},"peer":{{"address":"{peer_ip}","port":{peer_port}}},'
                f'"local":{{"address":"{local_ip}","port":{local_port}}},"bytes":{len(data)},'
                f'"data_hex":"{data.hex()}"}}\n').encode()
    head = f"{_when(timestamp)} {_hostport(peer_ip, peer_port)} -> {_hostport(local_ip, local_port)} {len(data)} bytes"
    if fmt == "hex":
        lines = [head]
        for offset in range(0, len(data), 16):
            chunk = data[offset : offset + 16]
            text = chunk.decode("latin-1").translate(_PRINTABLE)
            lines.append(f"  {offset:04x}  {chunk.hex(' '):<47}  {text}")
        return ("\n".join(lines) + "\n").encode()
    escaped = data.decode("latin-1").encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'{head}: "{escaped}"\n'.encode()


_PRINTABLE = {b: (chr(b) if 32 <= b < 127 else ".") for b in range(256)}


class Sink:
    """Appends every datagram to a binary stream in one format; the caller owns opening and closing.

    ``recorded`` and ``not_recorded`` count datagrams; ``failure`` is ``None`` or why recording stopped.
    """

    #: Buffered bytes that make a ``write`` flush at once (the listener flushes by :meth:`flush_if_due`).
    FLUSH_AT = 1 << 20
    #: :meth:`flush_if_due`: how long a record may wait for others to share its write (a reader of
    #: the file sees each within this), and how many bytes are written at once however recent.
    HOLD = 0.05
    WRITE_AT = 1 << 16

    def __init__(self, stream: BinaryIO | None, fmt: str) -> None:
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
        self.format = fmt
        self.recorded = 0
        self.not_recorded = 0
        self.failure: str | None = None
        self._buffer = bytearray()
        self._pending = 0  # records in the buffer
        self._packets = pcap.PacketBuilder() if fmt == "pcap" else None
        self.stream: BinaryIO | None = None
        self._fd: int | None = None
        self._end: int | None = None
        self._held_since: float | None = None  # when flush_if_due first saw the buffer hold something
        if fmt == "pcap":
            self._buffer += pcap.file_header()
        if stream is not None:
            self.attach(stream)

    def attach(self, stream: BinaryIO) -> None:
        """Write to ``stream`` from now on (a sink may be made before its file is opened: a server
        that drops root opens its recording afterwards, as the user it runs as)."""
        self.stream = stream
        self._fd, self._end = self._descriptor(stream)

    @staticmethod
    def _descriptor(stream: BinaryIO) -> tuple[int | None, int | None]:
        """The stream's descriptor (written with ``os.write``) and, for a regular file, where the
        whole records end (the length to cut back to); ``(None, None)`` for an in-memory stream."""
        try:
            fd = stream.fileno()
        except (OSError, ValueError, AttributeError):
            return None, None
        try:
            stream.flush()
            end = os.lseek(fd, 0, os.SEEK_CUR) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except OSError:
            end = None
        return fd, end

    @property
    def write_raw(self) -> Any:
        """The raw format's per-datagram call for the listener's fastest loop: the buffer's own
        ``extend`` (one C call per datagram); count the records with :meth:`wrote`."""
        return self._buffer.extend

    def wrote(self, records: int) -> None:
        """``records`` datagrams went through :attr:`write_raw`."""
        self._pending += records
        if self.failure is not None:
            self._drop_buffer()
        elif len(self._buffer) >= self.FLUSH_AT:
            self.flush()

    def write(self, timestamp: float, peer: Endpoint, local: Endpoint, data: bytes) -> None:
        self.write_fields(timestamp, peer.ip, peer.port, local.ip, local.port, data)

    def write_fields(self, timestamp: float, peer_ip: str, peer_port: int, local_ip: str, local_port: int,
                     data: bytes) -> None:
        """``write`` without Endpoint objects, for the listener's recording loop."""
        if self.failure is not None:
            self.not_recorded += 1
            return
        if self._packets is not None:
            self._buffer += pcap.record(timestamp, self._packets.packet(_bare(peer_ip), peer_port, _bare(local_ip),
                                                                       local_port, data))
        else:
            self._buffer += format_fields(self.format, timestamp, peer_ip, peer_port, local_ip, local_port, data)
        self._pending += 1
        if len(self._buffer) >= self.FLUSH_AT:
            self.flush()

    def write_records(self, datagrams: list[Any], local_ip: str, local_port: int, default_time: float) -> None:
        """A batch of received datagrams (:class:`udpkit.net.rx.Datagram`) sent to ``local_ip:local_port``
        (or each record's own destination), formatted a batch at a time: pcap's headers in one
        pass (:meth:`pcap.PacketBuilder.records`), JSON lines encoded once for the batch."""
        if self.failure is not None:
            self.not_recorded += len(datagrams)
            return
        if self._packets is not None:
            self._buffer += self._packets.records(datagrams, local_ip, local_port, default_time)
        elif self.format == "jsonl":
            self._buffer += "".join([
                f'{{"time":{decimal_time(default_time if stamp is None else stamp)},"peer":{{"address":"{peer[0]}",'
                f'"port":{peer[1]}}},"local":{{"address":"{local or local_ip}","port":{local_port}}},'
                f'"bytes":{len(data)},"data_hex":"{data.hex()}"}}\n'
                for data, peer, local, stamp, *_rest in datagrams]).encode()
        else:
            for data, peer, local, stamp, *_rest in datagrams:
                self._buffer += format_fields(self.format, default_time if stamp is None else stamp, peer[0], peer[1],
                                              local or local_ip, local_port, data)
        self._pending += len(datagrams)
        if len(self._buffer) >= self.FLUSH_AT:
            self.flush()

    def take_batch(self, record: Callable[..., tuple[int, int, list[Any]]], fd: int, local_ip: str,
                   local_port: int, most: int, default_time: float) -> tuple[int, int, list[Any]]:
        """One read of ``fd`` by the C batch's ``record`` (a format of :data:`BATCH_FORMATS`): the
        datagrams formatted straight into this sink's buffer, the bytes :meth:`write_records` would
        append, with no Python object per datagram; (datagrams, bytes, senders) as ``Batch.tally``
        gives them. At most ``most`` are recorded (the rest of the batch is read and left out).

        Strategy: with a competing load on its core, a recorder that made a record object and
        formatted it in Python kept 0.64-0.72x the datagrams discard did (``--busy stress-ng``);
        the records' cost is then what decides. After a failure they are counted as not recorded."""
        n, nbytes, senders = record(fd, self.format, self._buffer, local_ip, local_port, most, default_time)
        self.wrote(n)
        return n, nbytes, senders

    def flush_if_due(self, now: float) -> float | None:
        """The listener's write after each wake-up (``now``: ``time.monotonic()``): the buffer is
        written when it holds :attr:`WRITE_AT` bytes or has held something for :attr:`HOLD`
        seconds; otherwise the time by which it is due (the listener wakes for it), or ``None``
        when nothing waits.

        Strategy: a write per wake-up cost a ``write`` system call for every few datagrams when a
        stream arrived in short bursts (a competing load on the core: 6 datagrams a wake-up,
        ``bench/listen_bench.py --busy stress-ng``), most of what a recorder paid beyond discard.
        Like tcpdump writing a file, it buffers; unlike it, never longer than HOLD."""
        if not self._buffer or self.failure is not None or self.stream is None:
            self._held_since = None
            return None
        if self._held_since is None:
            self._held_since = now
        due = self._held_since + self.HOLD
        if len(self._buffer) >= self.WRITE_AT or now >= due:
            self.flush()
            return None
        return due

    def flush(self) -> None:
        """Write what is buffered; on failure stop recording (see the module docstring)."""
        if self.failure is not None or not self._buffer or self.stream is None:
            return
        view = memoryview(self._buffer)
        try:
            if self._fd is None:
                self.stream.write(view)
                self.stream.flush()
            else:
                while view:
                    view = view[os.write(self._fd, view):]
        except OSError as exc:
            view.release()
            self._fail(exc)
            return
        view.release()
        if self._end is not None:
            self._end += len(self._buffer)
        self.recorded += self._pending
        self._pending = 0
        self._buffer.clear()
        self._held_since = None

    def _fail(self, exc: OSError) -> None:
        self.failure = exc.strerror or str(exc)
        self._drop_buffer()
        if self._fd is not None and self._end is not None:
            try:
                os.ftruncate(self._fd, self._end)  # back to the last whole record
            except OSError:
                pass

    def _drop_buffer(self) -> None:
        self.not_recorded += self._pending
        self._pending = 0
        self._buffer.clear()


def _bare(ip: str) -> str:
    """``fe80::1%eth0`` -> ``fe80::1``: a packet header has no room for the scope."""
    return ip.partition("%")[0]
