"""socat's UDP address syntax (``UDP4-LISTEN:123,fork``, ``UDP6-LISTEN:123,ipv6only=1,fork``) mapped onto
a listener plan. Pure parsing: nothing is bound or resolved here.

Supported, as socat 1.7 reads them:

- first address: ``UDP4-LISTEN:PORT``, ``UDP6-LISTEN:PORT`` (dual-stack unless ``ipv6only=1``),
  ``UDP-LISTEN:PORT`` (IPv4, or IPv6 with ``pf=ip6``), ``UDP{,4,6}-RECVFROM:PORT`` (each datagram
  answered on its own), ``UDP{,4,6}-RECV:PORT`` (receive only);
- second address: ``/dev/null``, ``STDOUT`` (datagrams to standard output), ``STDERR``, ``STDIO`` or ``-`` (and
  what is read from standard input goes to the latest peer),
  a file path, ``OPEN:PATH`` (must exist) or ``CREATE:PATH`` (truncated), ``PIPE`` (socat's echo),
  and ``UDP{,4,6}:HOST:PORT`` or ``UDP{,4,6}-SENDTO:HOST:PORT`` (relay to an upstream);
- options ``fork``, ``ipv6only=0|1``, ``reuseaddr``, ``so-reuseport``/``reuseport``, ``bind=ADDR``,
  ``range=CIDR``, ``max-children=N``, ``rcvbuf=N``, ``su=USER``, ``pf=ip4|ip6``, ``so-bindtodevice=IF``,
  and the multicast and broadcast ones: ``ip-add-membership=GROUP:IFACE|IFADDR[:IFACE]``,
  ``ip-add-source-membership=GROUP:IFADDR:SOURCE``, ``ipv6-join-group=GROUP:IFACE``,
  ``ipv6-join-source-group=GROUP:IFACE:SOURCE``, ``ip-multicast-if``, ``ip-multicast-loop``,
  ``ip-multicast-ttl``, ``ipv6-multicast-if``, ``ipv6-multicast-loop``, ``ipv6-multicast-hops``, ``broadcast``.

And the client form, ``- UDP{,4,6}:HOST:PORT`` or ``UDP…:HOST:PORT STDIO``: standard input goes out as
datagrams and the replies come back on standard output. ``UDP:`` connects; ``UDP-SENDTO:`` sends to
its peer and hears it only; ``UDP-DATAGRAM:`` sends to any address (a group, a broadcast address)
and hears everyone, as socat's do.

Anything else is refused with a message naming the part we do not support.
"""

from __future__ import annotations

import ipaddress
import shlex
import socket
from typing import NamedTuple

from udpkit.addr import Endpoint, parse_ip, parse_port, udp_service_port
from udpkit.errors import UsageError
from udpkit.net.multicast import Membership, MulticastSend, parse_membership

__all__ = ["ClientPlan", "SocatPlan", "Target", "parse_socat"]

_WILDCARD = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}
_FLAGS = {"fork", "reuseaddr", "so-reuseaddr", "so-reuseport", "reuseport"}
_VALUED = {"ipv6only", "ipv6-v6only", "bind", "range", "max-children", "rcvbuf", "so-rcvbuf", "su", "su-d",
           "pf", "protocol-family", "so-bindtodevice", "bindtodevice", "if", "interface"}
# socat's multicast and broadcast options (xio-ip.c, xio-ip6.c, xio-socket.c), with their aliases.
_GROUP_OPTIONS = {
    "ip-add-membership": "join4", "add-membership": "join4", "ip-membership": "join4",
    "ip-add-source-membership": "source4", "source-membership": "source4",
    "ipv6-join-group": "join6", "ipv6-add-membership": "join6", "join-group": "join6",
    "ipv6-join-source-group": "source6", "join-source-group": "source6",
    "ip-multicast-if": "if", "multicast-if": "if", "ipv6-multicast-if": "if", "ipv6-multicast-interface": "if",
    "ip-multicast-loop": "loop", "multicast-loop": "loop", "ipv6-multicast-loop": "loop",
    "ip-multicast-ttl": "hops", "multicast-ttl": "hops", "ipv6-multicast-hops": "hops", "multicast-hops": "hops",
    "broadcast": "broadcast", "so-broadcast": "broadcast",
}


class Target(NamedTuple):
    """Where datagrams go: ``kind`` is discard, stdout (print), stdio (print, and send what is typed
    to the latest peer), file, echo, relay, exec (a program per session: ``argv``) or tcp (a TCP
    connection per session to ``host``:``port``)."""

    kind: str
    path: str | None = None
    truncate: bool = False
    must_exist: bool = False
    family: int | None = None
    host: str | None = None
    port: int | None = None
    append: bool = True
    exclusive: bool = False
    perm: int | None = None
    argv: tuple[str, ...] | None = None


class SocatPlan(NamedTuple):
    """A listener configuration equivalent to a socat command line."""

    endpoint: Endpoint
    mode: str  # "listen" (socat's UDP-LISTEN), "recvfrom" or "recv"
    fork: bool
    v6only: bool
    reuseaddr: bool
    reuseport: bool
    device: str | None
    rcvbuf: int | None
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None
    max_children: int | None
    user: str | None
    target: Target
    memberships: tuple[Membership, ...] = ()
    send: MulticastSend | None = None


def _split_outside_brackets(text: str, separator: str) -> list[str]:
    """``"UDP6:[::1]:53"`` split on ``":"`` -> ``["UDP6", "[::1]", "53"]``: brackets protect IPv6 literals."""
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        if ch == separator and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    return parts


def _split(address: str) -> tuple[str, list[str], list[str]]:
    """``UDP4-LISTEN:123,fork,range=10.0.0.0/8`` -> ("UDP4-LISTEN", ["123"], ["fork", "range=10.0.0.0/8"])."""
    head, *options = _split_outside_brackets(address, ",")
    kind, *params = _split_outside_brackets(head, ":")
    return kind, params, [o for o in options if o]


def _listen_kind(kind: str) -> tuple[str, int | None] | None:
    kind = kind.upper()
    for mode, suffix in (("listen", "-LISTEN"), ("recvfrom", "-RECVFROM"), ("recv", "-RECV")):
        for prefix, family in (("UDP4", socket.AF_INET), ("UDP6", socket.AF_INET6), ("UDP", None)):
            if kind == prefix + suffix:
                return mode, family
    return None


class ClientPlan(NamedTuple):
    """``socat - UDP4:HOST:PORT`` (either order): standard input out as datagrams, replies to standard
    output. ``send``/``receive``: the directions left (``-u``/``-U``, or ``STDIN``/``STDOUT``);
    ``source``: the client's own address (``bind=``, ``sourceport=``/``sp=``); ``to_stderr``: replies
    go to standard error (socat's ``STDERR`` address); ``mode``: ``connect``
    (``UDP:``), ``sendto`` (``UDP-SENDTO:``) or ``datagram`` (``UDP-DATAGRAM:``, answers from anyone);
    ``multicast``/``memberships``: the group and broadcast options; ``stdio_first``: standard input
    was the first address (it decides which way socat's ``-v`` arrows point)."""

    target: Target
    send: bool = True
    receive: bool = True
    source: tuple[str, int] | None = None
    reuseaddr: bool = False
    mode: str = "connect"
    multicast: MulticastSend | None = None
    memberships: tuple[Membership, ...] = ()
    stdio_first: bool = True
    to_stderr: bool = False


_STDIO = ("-", "STDIO", "STDIN", "STDOUT", "STDERR")
_CLIENT_OPTIONS = {"sp", "sourceport", "bind", "reuseaddr", "so-reuseaddr", *_GROUP_OPTIONS}


def parse_socat(first: str, second: str, direction: str | None = None) -> SocatPlan | ClientPlan:
    """Map ``socat FIRST SECOND`` onto a listener (or client) plan, or raise UsageError naming what is
    unsupported. ``direction``: ``"u"`` (``-u``, first to second only) or ``"U"`` (``-U``, the reverse)."""
    swapped = first.upper() in _STDIO
    if swapped:
        first, second = second, first
    kind, params, options = _split(first)
    if _listen_kind(kind) is None and second.upper() in _STDIO:
        target = _target(":".join([kind, *params]))
        if target.kind == "relay":
            return _client(target, options, second.upper(), direction, swapped, _client_mode(kind))
    listen = _listen_kind(kind)
    if listen is None:
        raise UsageError(f"unsupported socat address type {kind!r} as the first address"
                         " (udpkit socat listens: UDP4-LISTEN, UDP6-LISTEN, UDP-LISTEN, UDP*-RECVFROM, UDP*-RECV)")
    mode, family = listen
    if len(params) != 1:
        raise UsageError(f"{kind} takes one parameter, the port: {kind}:PORT")
    port = _port(params[0])
    group_options = [o for o in options if o.partition("=")[0].lower() in _GROUP_OPTIONS]
    opts = _options([o for o in options if o not in group_options])
    memberships, send = _group_options(group_options)
    pf = opts.get("pf") or opts.get("protocol-family")
    if pf is not None:
        pf_family = {"ip4": socket.AF_INET, "ipv4": socket.AF_INET, "ip6": socket.AF_INET6, "ipv6": socket.AF_INET6}.get(pf)
        if pf_family is None:
            raise UsageError(f"bad socat option pf={pf}: expected ip4 or ip6")
        if family is not None and pf_family != family:
            raise UsageError(f"pf={pf} contradicts {kind}")
        family = pf_family
    family = socket.AddressFamily(family or socket.AF_INET)  # socat 1.7's UDP-LISTEN is IPv4 unless pf=ip6
    for membership in memberships:
        if membership.family != family:
            raise UsageError(f"group {membership.group} is of the other family than {kind}"
                             f" (IPv{'4' if family == socket.AF_INET else '6'}): join it on a "
                             f"UDP{'6' if membership.family == socket.AF_INET6 else '4'} address")
    host = _WILDCARD[family]
    interface = None
    if "bind" in opts:
        bind_family, host, interface = parse_ip(opts["bind"].strip("[]"))
        if bind_family != family:
            raise UsageError(f"bind={opts['bind']} is not an {'IPv4' if family == socket.AF_INET else 'IPv6'} address")
    v6only_text = opts.get("ipv6only", opts.get("ipv6-v6only"))
    if v6only_text not in (None, "0", "1"):
        raise UsageError(f"bad socat option ipv6only={v6only_text}: expected 0 or 1")
    allow = None
    if "range" in opts:
        allow = tuple(_network(text) for text in opts["range"].split("|"))
    return SocatPlan(
        endpoint=Endpoint(host, port, family, interface),
        mode=mode,
        fork="fork" in opts,
        v6only=v6only_text == "1",
        reuseaddr="reuseaddr" in opts or "so-reuseaddr" in opts,
        reuseport="reuseport" in opts or "so-reuseport" in opts,
        device=opts.get("so-bindtodevice") or opts.get("bindtodevice") or opts.get("if") or opts.get("interface"),
        rcvbuf=_count("rcvbuf", opts.get("rcvbuf") or opts.get("so-rcvbuf")),
        allow=allow,
        max_children=_count("max-children", opts.get("max-children")),
        user=opts.get("su") or opts.get("su-d"),
        target=_one_way(_target(second), direction),
        memberships=memberships,
        send=send,
    )


def _one_way(target: Target, direction: str | None) -> Target:
    """``-u`` (first to second only): a listener's STDIO only prints, it reads nothing to send back."""
    if direction == "u" and target.kind == "stdio":
        return target._replace(kind="stdout")
    return target


def _client_mode(kind: str) -> str:
    upper = kind.upper()
    return "datagram" if upper.endswith("-DATAGRAM") else "sendto" if upper.endswith("-SENDTO") else "connect"


def _client(target: Target, options: list[str], stdio: str, direction: str | None, stdio_first: bool,
            mode: str = "connect") -> ClientPlan:
    """A client plan: which way data flows (socat's ``-u`` is first to second, ``-U`` the reverse;
    ``STDIN`` only reads, ``STDOUT`` only writes) and the client address's own options."""
    towards_udp = None if direction is None else (direction == "u") == stdio_first
    send = stdio not in ("STDOUT", "STDERR") and towards_udp is not False
    receive = stdio != "STDIN" and towards_udp is not True
    if not (send or receive):
        raise UsageError(f"{stdio} and {'-u' if direction == 'u' else '-U'} leave no direction to transfer")
    host, port, reuse = None, 0, False
    group_options = [o for o in options if o.partition("=")[0].lower() in _GROUP_OPTIONS]
    memberships, multicast = _group_options(group_options)
    if (memberships or multicast is not None) and mode == "connect":
        mode = "datagram"  # a group or broadcast option on UDP: socat sends with sendto, hears anyone
    for option in options:
        name, eq, value = option.partition("=")
        name = name.lower()
        if name not in _CLIENT_OPTIONS:
            raise UsageError(f"unsupported socat option {option!r} on a client address")
        if name in _GROUP_OPTIONS:
            continue
        if name in ("reuseaddr", "so-reuseaddr"):
            reuse = True
        elif not eq:
            raise UsageError(f"socat option {name} needs a value")
        elif name == "bind":
            bound, _colon, bound_port = value.rpartition(":") if value.count(":") == 1 or value.startswith("[") \
                else (value, "", "")
            host = (bound or value).strip("[]")
            parse_ip(host)  # a literal, as socat's bind takes here
            if bound_port:
                port = _port(bound_port)
        else:
            port = _port(value)
    source = None if host is None and not port else (host or "", port)
    return ClientPlan(target, send=send, receive=receive, source=source, reuseaddr=reuse, mode=mode,
                      multicast=multicast, memberships=memberships, stdio_first=stdio_first,
                      to_stderr=stdio == "STDERR")


def _group_options(options: list[str]) -> tuple[tuple[Membership, ...], MulticastSend | None]:
    """socat's multicast and broadcast options -> the groups to join and how to send to groups."""
    memberships: list[Membership] = []
    send: dict[str, object] = {}
    for option in options:
        name, eq, value = option.partition("=")
        kind = _GROUP_OPTIONS[name.lower()]
        if kind == "broadcast":
            if eq and value not in ("1", ""):
                raise UsageError(f"socat option {name} takes no value (or 1)")
            send["broadcast"] = True
            continue
        if not eq or not value:
            raise UsageError(f"socat option {name} needs a value")
        if kind in ("join4", "source4", "join6", "source6"):
            memberships.append(_membership(name, kind, value))
        elif kind == "if":
            send["interface"] = value.strip("[]")
        elif kind == "loop":
            if value not in ("0", "1"):
                raise UsageError(f"bad socat option {name}={value}: expected 0 or 1")
            send["loop"] = value == "1"
        else:
            if not value.isdigit() or int(value) > 255:
                raise UsageError(f"bad socat option {name}={value}: expected 0 to 255")
            send["hops"] = int(value)
    return tuple(memberships), MulticastSend(**send) if send else None  # type: ignore[arg-type]


def _membership(name: str, kind: str, value: str) -> Membership:
    """``239.1.1.1:eth0``, ``239.1.1.1:10.0.0.1``, ``239.1.1.1:10.0.0.1:eth0`` (IPv4),
    ``232.1.1.1:10.0.0.1:10.0.0.2`` (source-specific, IPv4), ``[ff02::1:3]:eth0`` (IPv6), as socat."""
    parts = _split_outside_brackets(value, ":") if kind in ("join4", "source4") or value.startswith("[") else None
    if parts is None:  # an unbracketed IPv6 group: the interface (and source) follow the last colons
        if kind == "source6":
            rest, _, source = value.rpartition(":")
            group, _, iface = rest.rpartition(":")
            parts = [group, iface, source]
        else:
            group, _, iface = value.rpartition(":")
            parts = [group, iface]
    parts = [p.strip("[]") for p in parts]
    want = 3 if kind in ("source4", "source6") else (2, 3)
    if (len(parts) != want) if isinstance(want, int) else (len(parts) not in want):
        raise UsageError(f"bad socat option {name}={value}: expected GROUP:INTERFACE"
                         f"{':SOURCE' if kind.startswith('source') else ''}")
    group = parse_membership(parts[0]).group
    family = "6" if ":" in group else "4"
    if family != kind[-1]:
        raise UsageError(f"socat option {name} takes an IPv{kind[-1]} group, not {group}")
    if kind == "source4":
        return Membership(group, None, parse_membership(f"{parts[2]}@{group}").source, parts[1])
    if kind == "source6":
        return parse_membership(f"{parts[2]}@{group}%{parts[1]}")
    interface: str | None = parts[-1]
    local = None
    if kind == "join4" and _is_ipv4(parts[1]):
        local = parts[1]
        interface = parts[2] if len(parts) == 3 else None
        if interface is not None:
            local = None  # socat: group:address:interface — the interface decides
    elif len(parts) == 3:
        raise UsageError(f"bad socat option {name}={value}: expected GROUP:INTERFACE")
    if interface is not None:
        parse_membership(f"{group}%{interface}")  # the interface must exist
    return Membership(group, interface, None, local)


def _is_ipv4(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, text)
    except OSError:
        return False
    return True


def _options(options: list[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for option in options:
        name, eq, value = option.partition("=")
        name = name.lower()
        if name in _FLAGS and not eq:
            parsed[name] = ""
        elif name in _VALUED and eq:
            parsed[name] = value
        elif name in _FLAGS or name in _VALUED:
            raise UsageError(f"socat option {name} {'takes no value' if name in _FLAGS else 'needs a value'}")
        else:
            raise UsageError(f"unsupported socat option {option!r}")
    return parsed


def _count(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"bad socat option {name}={text}: expected a positive number")
    return int(text)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """socat's ``range=``: ``10.0.0.0/8``, ``[::1/128]`` or ``10.0.0.0:255.0.0.0``."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    address, colon, mask = text.partition(":") if text.count(":") == 1 else (text, "", "")
    try:
        return ipaddress.ip_network(f"{address}/{mask}" if colon else text, strict=False)
    except ValueError:
        raise UsageError(f"bad socat option range={text}: expected ADDRESS/BITS or [IPV6/BITS]") from None


def _target(address: str) -> Target:
    upper = address.upper()
    if address.startswith(("/", "./", "../")) and address != "/dev/null":
        return Target("file", path=address)
    if address == "/dev/null":
        return Target("discard")
    if upper in ("STDOUT", "STDIO", "-", "STDIN", "STDERR"):
        if upper == "STDIN":
            raise UsageError("STDIN as the second address sends, it does not receive: udpkit socat supports STDOUT,"
                             " STDERR, STDIO, -")
        return Target({"STDOUT": "stdout", "STDERR": "stderr"}.get(upper, "stdio"))
    if upper == "PIPE":
        return Target("echo")
    kind, params, options = _split(address)
    kind_upper = kind.upper()
    if kind_upper in ("EXEC", "SYSTEM"):
        return _program(kind_upper, ":".join(params), options)
    if kind_upper in ("TCP", "TCP4", "TCP6", "TCP-CONNECT", "TCP4-CONNECT", "TCP6-CONNECT"):
        if options:
            raise UsageError(f"unsupported socat option {options[0]!r} on {kind}")
        if len(params) != 2 or not params[0]:
            raise UsageError(f"{kind} needs a host and a port: {kind}:HOST:PORT")
        family = {"4": socket.AF_INET, "6": socket.AF_INET6}.get(kind_upper[3:4])
        host = params[0][1:-1] if params[0].startswith("[") else params[0]
        return Target("tcp", family=family, host=host, port=_port(params[1], allow_zero=False, protocol="tcp"))
    if kind_upper in ("OPEN", "CREATE", "GOPEN"):
        if len(params) != 1 or not params[0]:
            raise UsageError(f"{kind} needs a path: {kind}:PATH")
        return _file(kind_upper, params[0], options)
    if options:
        raise UsageError(f"unsupported socat option {options[0]!r} on {kind}")
    for prefix, family in (("UDP4", socket.AF_INET), ("UDP6", socket.AF_INET6), ("UDP", None)):
        if kind_upper in (prefix, prefix + "-SENDTO", prefix + "-CONNECT", prefix + "-DATAGRAM"):
            if len(params) != 2 or not params[0]:
                raise UsageError(f"{kind} needs a host and a port: {kind}:HOST:PORT")
            host = params[0][1:-1] if params[0].startswith("[") else params[0]
            return Target("relay", family=family, host=host, port=_port(params[1], allow_zero=False))
    if ":" in address or address.isupper():
        raise UsageError(f"unsupported socat address type {kind!r} as the second address")
    # socat takes a file only as a path (with a slash) or with OPEN:/CREATE:/GOPEN:, as here
    raise UsageError(f'unknown device/address "{address}" (a file is OPEN:{address}, CREATE:{address} or ./{address})')


def _file(kind: str, path: str, options: list[str]) -> Target:
    """``OPEN:``/``GOPEN:``/``CREATE:`` and their options as socat reads them: ``creat`` (make it if
    missing; ``CREATE:`` and ``GOPEN:`` do), ``excl`` (only make it), ``trunc``, ``append`` (without
    it, ``OPEN:`` writes from the start over what is there), ``perm=MODE`` (octal, for a new file)."""
    chosen: dict[str, str] = {}
    for option in options:
        name, eq, value = option.partition("=")
        name = name.lower().replace("o-", "", 1) if name.lower().startswith("o-") else name.lower()
        if name in ("creat", "create", "excl", "trunc", "append") and not eq:
            chosen[{"create": "creat"}.get(name, name)] = ""
        elif name == "perm" and eq:
            chosen["perm"] = value
        else:
            raise UsageError(f"unsupported socat option {option!r} on {kind}")
    perm = None
    if "perm" in chosen:
        try:
            perm = int(chosen["perm"], 8)
        except ValueError:
            raise UsageError(f"bad socat option perm={chosen['perm']}: expected an octal mode such as 0640") from None
        if not 0 <= perm <= 0o7777:
            raise UsageError(f"bad socat option perm={chosen['perm']}: expected an octal mode such as 0640")
    create = kind != "OPEN" or "creat" in chosen
    return Target("file", path=path, truncate=kind == "CREATE" or "trunc" in chosen, must_exist=not create,
                  append=kind != "OPEN" or "append" in chosen, exclusive="excl" in chosen, perm=perm)


def _program(kind: str, command: str, options: list[str]) -> Target:
    """``EXEC:program args`` (split into words as a shell would, run without one) or ``SYSTEM:command``
    (run by ``/bin/sh -c``): a process per session, datagrams to its standard input, what it writes
    back as datagrams. socat's ``pty`` is refused by name: udpkit runs programs on pipes."""
    for option in options:
        name = option.partition("=")[0].lower()
        if name == "pty":
            raise UsageError(f"socat's pty option is not supported: udpkit socat runs {kind} programs on pipes")
        raise UsageError(f"unsupported socat option {option!r} on {kind}")
    if not command.strip():
        raise UsageError(f"{kind} needs a command: {kind}:COMMAND")
    if kind == "SYSTEM":
        return Target("exec", argv=("/bin/sh", "-c", command))
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise UsageError(f"EXEC:{command}: {exc}") from None
    return Target("exec", argv=argv)


def _port(text: str, *, allow_zero: bool = True, protocol: str = "udp") -> int:
    """A port as socat takes it: a number or a service name (``ntp``, ``domain``) of ``protocol``."""
    if text.isdigit() or not text:
        return parse_port(text, allow_zero=allow_zero)
    if protocol == "tcp":
        try:
            return socket.getservbyname(text, "tcp")
        except OSError:
            raise UsageError(f"bad port {text!r}: no such TCP service") from None
    port = udp_service_port(text)
    if port is None:
        raise UsageError(f"bad port {text!r}: no such UDP service (Servname not supported for ai_socktype)")
    return port
