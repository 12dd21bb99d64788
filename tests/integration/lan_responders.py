"""Small stand-ins for the LAN services Debian has no lightweight daemon for, run inside a test's
namespace: an SSDP device (miniupnpd would need a router's setup), a NetBIOS name service (nmbd comes
with all of Samba) and an SNMP agent that answers broadcast requests (Debian's snmpd 5.9 answers from
the broadcast address itself, which the kernel refuses: "send response: Failure in sendto").

    python lan_responders.py IFACE NAME   (answers all three until killed; prints "ready")

Each answers from the host's own address (its socket is bound to the wildcard), as real devices do.
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import uuid


def ssdp_socket(iface: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 1900))
    index = socket.if_nametoindex(iface)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    struct.pack("=4s4si", socket.inet_aton("239.255.255.250"), b"\0" * 4, index))
    return sock


def ssdp_answer(name: str, address: str, request: bytes) -> bytes | None:
    if not request.startswith(b"M-SEARCH * HTTP/1.1") or b"ssdp:discover" not in request:
        return None
    return (f"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nEXT:\r\nLOCATION: http://{address}:49152/{name}.xml\r\n"
            f"SERVER: Linux/6.1 UPnP/1.1 {name}/1.0\r\nST: upnp:rootdevice\r\n"
            f"USN: uuid:{uuid.uuid5(uuid.NAMESPACE_DNS, name)}::upnp:rootdevice\r\n\r\n").encode()


def netbios_answer(name: str, request: bytes) -> bytes | None:
    if len(request) < 50 or request[12:14] != b"\x20C" or request[46:48] != b"\x00\x21":
        return None
    names = [(name.upper()[:15], 0x00, 0x0400), ("WORKGROUP", 0x00, 0x8400)]
    body = bytes([len(names)]) + b"".join(n.ljust(15).encode() + bytes([suffix]) + struct.pack("!H", flags)
                                          for n, suffix, flags in names)
    body += bytes.fromhex("02005e000153") + bytes(40)
    return (request[:2] + struct.pack("!HHHHH", 0x8400, 0, 1, 0, 0) + request[12:46]
            + struct.pack("!HHIH", 0x21, 1, 0, len(body)) + body)


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag, len(value)]) + value if len(value) < 128 else bytes([tag, 0x81, len(value)]) + value


def snmp_answer(name: str, request: bytes) -> bytes | None:
    at = request.find(b"\xa0")  # GetRequest-PDU
    if at < 0 or request[at + 2] != 0x02:
        return None
    id_len = request[at + 3]
    request_id = request[at + 4 : at + 4 + id_len]
    descr = f"{name} snmp responder (udpkit test lab)".encode()
    varbind = _tlv(0x30, _tlv(0x06, bytes.fromhex("2b06010201010100")) + _tlv(0x04, descr))
    pdu = _tlv(0xA2, _tlv(0x02, request_id) + b"\x02\x01\x00\x02\x01\x00" + _tlv(0x30, varbind))
    return _tlv(0x30, b"\x02\x01\x01" + _tlv(0x04, b"public") + pdu)


def main() -> None:
    iface, name = sys.argv[1], sys.argv[2]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        probe.connect(("10.255.255.255", 9))  # no packet: asks the routing table for our address
        address = probe.getsockname()[0]
    ssdp = ssdp_socket(iface)
    netbios = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    netbios.bind(("0.0.0.0", 137))
    snmp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    snmp.bind(("0.0.0.0", 161))
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([ssdp, netbios, snmp], [], [])
        for sock in ready:
            request, peer = sock.recvfrom(65535)
            if sock is ssdp:
                reply = ssdp_answer(name, address, request)
            elif sock is netbios:
                reply = netbios_answer(name, request)
            else:
                reply = snmp_answer(name, request)
            if reply is not None:
                sock.sendto(reply, peer)


if __name__ == "__main__":
    main()
