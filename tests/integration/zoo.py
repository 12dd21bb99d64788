"""A process that opens a varied set of UDP sockets, prints them as JSON, and holds them until killed.

With ``--tcp`` it opens TCP sockets instead, in as many states as a test can make without a remote
host: listeners (one with a connection waiting to be accepted), an established pair with unread
bytes, one with keepalive on, CLOSE-WAIT and FIN-WAIT-2 halves, and a TIME-WAIT entry.

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


def tcp_main() -> None:
    socks = {}

    def listener(name, family, addr, v6only=None):
        s = socket.socket(family, socket.SOCK_STREAM)
        if v6only is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        s.bind((addr, 0))
        s.listen(8)
        socks[name] = s
        return s

    def pair(server, host):
        client = socket.create_connection((host, server.getsockname()[1]))
        accepted, _ = server.accept()
        return client, accepted

    v4 = listener("tcp_v4_loopback", socket.AF_INET, "127.0.0.1")
    listener("tcp_v6_dual_wildcard", socket.AF_INET6, "::", v6only=False)
    v6 = listener("tcp_v6_loopback", socket.AF_INET6, "::1", v6only=True)
    backlog = listener("tcp_v4_backlog", socket.AF_INET, "127.0.0.1")
    held = [socket.create_connection(("127.0.0.1", backlog.getsockname()[1]))]  # never accepted: Recv-Q 1
    client, accepted = pair(v4, "127.0.0.1")
    client.sendall(b"x" * 1000)  # unread: the accepted side's Recv-Q
    socks["tcp_v4_client"] = client
    held.append(accepted)
    client6, accepted6 = pair(v6, "::1")
    client6.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # a keepalive timer for -o
    socks["tcp_v6_keepalive"] = client6
    held.append(accepted6)
    closer, stays = pair(v4, "127.0.0.1")
    closer.shutdown(socket.SHUT_WR)  # closer: FIN-WAIT-2; stays: CLOSE-WAIT
    held += [closer, stays]
    gone, other = pair(v4, "127.0.0.1")
    gone.close()  # the active closer ends in TIME-WAIT once the other side closes too
    other.close()
    info = {name: {"port": s.getsockname()[1], "fd": s.fileno(), "family": int(s.family)}
            for name, s in socks.items()}
    time.sleep(0.2)
    print(json.dumps(info), flush=True)
    time.sleep(600)


def main() -> None:
    if "--tcp" in sys.argv:
        tcp_main()
        return
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
