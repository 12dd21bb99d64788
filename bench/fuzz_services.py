#!/usr/bin/env python3
"""The long fuzz run: random and mutated datagrams into every responder and every probe recogniser,
far beyond the test suite's few thousand cases. Reports any exception (with the datagram in hex) and
any reply longer than its request (amplification) or than the DNS client's limit, and any answer the
DNS responder gives from its kept answers or templates that differs from dnspython's own.

    .venv/bin/python bench/fuzz_services.py [--cases 1000000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from pathlib import Path

import dns.message

from udpkit.addr import Endpoint
from udpkit.services.classic import Daytime, Discard, Echo, Time
from udpkit.services.dns import DnsResponder, load_zone
from udpkit.services.ntp import NtpResponder
from udpkit.services.registry import PROBES, probe_for

ZONE = Path(__file__).resolve().parent.parent / "tests" / "data" / "example.zone"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    peer = Endpoint("192.0.2.9", 40000, 2)
    responders = {"ntp": NtpResponder(), "dns": DnsResponder([load_zone(ZONE)]), "echo": Echo(),
                  "discard": Discard(), "daytime": Daytime(), "time": Time()}
    probes = [p for p in (probe_for(name, 1) for name in PROBES) if p is not None]
    seeds = [p.build(0.0) for p in probes] + [dns.message.make_query("www.example.test", "A").to_wire()]
    seeds = [s for s in seeds if s]
    # the same zone answered with kept answers and templates, and by dnspython alone: equal, byte for byte
    kept, fresh = DnsResponder([load_zone(ZONE)], rate_limit=0), DnsResponder([load_zone(ZONE)], rate_limit=0, cache=0)
    seeds += [dns.message.make_query(f"{label}.example.test", "A").to_wire() for label in ("nope", "hostmaster", "ns1")]
    problems = 0
    started = time.monotonic()
    for case in range(args.cases):
        if case % 2:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 6)):
                choice = rng.random()
                if choice < 0.6 and data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
                elif choice < 0.8:
                    data = data[: rng.randrange(len(data) + 1)]
                else:
                    data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
            datagram = bytes(data)
        else:
            datagram = rng.randbytes(rng.randint(0, 700))
        for name, responder in responders.items():
            try:
                reply = responder.handle(datagram, peer, 1_795_810_393.0)
            except Exception:  # noqa: BLE001 - this is what we are looking for
                problems += 1
                print(f"{name} raised on {datagram.hex()}\n{traceback.format_exc()}", file=sys.stderr)
                continue
            if name in ("ntp", "dns") and isinstance(reply, bytes) and len(reply) > max(len(datagram), 512 if name == "dns" else 0):
                problems += 1
                print(f"{name} amplified {len(datagram)} -> {len(reply)} bytes: {datagram.hex()}", file=sys.stderr)
        try:
            if kept.handle(datagram, peer, 0.0) != fresh.handle(datagram, peer, 0.0):
                problems += 1
                print(f"dns kept/template answer differs from dnspython's for {datagram.hex()}", file=sys.stderr)
        except Exception:  # noqa: BLE001
            problems += 1
            print(f"dns raised on {datagram.hex()}\n{traceback.format_exc()}", file=sys.stderr)
        for probe in probes:
            try:
                probe.classify(datagram, 1_795_810_393.0)
            except Exception:  # noqa: BLE001
                problems += 1
                print(f"{probe.name} classify raised on {datagram.hex()}\n{traceback.format_exc()}", file=sys.stderr)
    took = time.monotonic() - started
    print(f"{args.cases} datagrams into {len(responders)} responders and {len(probes)} recognisers in {took:.1f} s: "
          f"{problems} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
