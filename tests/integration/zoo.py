"""A process that opens a varied set of UDP sockets, prints them as JSON, and holds them until killed.

Run by the integration tests (``python zoo.py [--device]``) so that the sockets belong to a child
process, as a real service's would: IPv4 and IPv6, wildcard and loopback, dual-stack and v6-only,
IPv4-mapped, device-bound (with ``--device``, needs root), unconnected and connected, one with
datagrams waiting in its receive queue, and one descriptor shared through ``dup``.
"""

import json
import os
import socket
import sys
import time


def main() -> None:
    socks = {}

    def udp(name, family, bind=None, connect=None, v6only=None, device=None):
        s = socket.socket(family, socket.SOCK_DGRAM)
        if v6only is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        if device:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        if bind is not None:
            s.bind(bind)
        if connect is not None:
            s.connect(connect)
        socks[name] = s
        return s

    v4 = udp("v4_loopback", socket.AF_INET, ("127.0.0.1", 0))
    udp("v4_wildcard", socket.AF_INET, ("0.0.0.0", 0))
    dual = udp("v6_dual_wildcard", socket.AF_INET6, ("::", 0), v6only=False)
    v6only = udp("v6_only_wildcard", socket.AF_INET6, ("::", 0), v6only=True)
    v6lo = udp("v6_loopback", socket.AF_INET6, ("::1", 0), v6only=True)
    udp("v4_connected", socket.AF_INET, connect=("127.0.0.1", v4.getsockname()[1]))
    udp("v6_connected", socket.AF_INET6, connect=("::1", v6lo.getsockname()[1]))
    udp("v4_mapped_connected", socket.AF_INET6, connect=("::ffff:127.0.0.1", v4.getsockname()[1]), v6only=False)
    sender = udp("v4_sender", socket.AF_INET, ("127.0.0.1", 0))
    for _ in range(3):
        sender.sendto(b"x" * 100, v4.getsockname()[:2])  # leaves bytes in v4_loopback's Recv-Q
    if "--device" in sys.argv:
        udp("v4_device", socket.AF_INET, ("0.0.0.0", 0), device="lo")
        udp("v6_device", socket.AF_INET6, ("::", 0), v6only=False, device="lo")
    dup_fd = os.dup(dual.fileno())  # the same socket under two descriptors
    info = {
        name: {"port": s.getsockname()[1], "fd": s.fileno(), "family": int(s.family)}
        for name, s in socks.items()
    }
    info["_dup_fd"] = dup_fd
    info["_v6only_port"] = v6only.getsockname()[1]
    print(json.dumps(info), flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
