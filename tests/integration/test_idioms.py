"""The idioms of ``tests/data/idioms.txt`` — what people type with ss, socat, nc and nmap — each run with
the real tool and with udpkit on the same live setup, compared as the line says."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import end_group, need_root, need_tool, start_group

TABLE = Path(__file__).resolve().parents[1] / "data" / "idioms.txt"
PY = sys.executable


class Idiom(NamedTuple):
    compare: str
    real: str
    ours: str


def idioms() -> list[Idiom]:
    found = []
    for line in TABLE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        compare, real, ours = (part.strip() for part in line.split("|||"))
        found.append(Idiom(compare, real, ours.replace("{udpkit}", f"{PY} -m udpkit").replace("{py}", PY)))
    return found


@pytest.fixture(scope="module")
def setup() -> Iterator[str]:
    """A namespace holding an echo service on 7777, NTP on 1123 and a TCP listener on 8080."""
    need_root()
    need_tool("ip", "ss", "nc", "socat", "nmap")
    name = f"udpkit-idioms{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    prefix = ["ip", "netns", "exec", name]
    procs = [
        start_group([*prefix, PY, "-m", "udpkit", "listen", "7777", "--respond", "echo"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        start_group([*prefix, PY, "-m", "udpkit", "listen", "1123", "--respond", "ntp"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        start_group([*prefix, PY, "-c", "import socket,time\ns=socket.create_server(('0.0.0.0',8080))\ntime.sleep(600)"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        deadline = time.monotonic() + 15
        while True:
            listing = subprocess.run([*prefix, "ss", "-tuanH"], capture_output=True, text=True).stdout
            if all(f":{port} " in listing for port in (7777, 1123, 8080)) and listing.count(":7777 ") >= 2:
                break
            assert time.monotonic() < deadline, listing
            time.sleep(0.05)
        yield name
    finally:
        for proc in procs:
            end_group(proc)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def run(namespace: str, command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", namespace, "sh", "-c", command], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.parametrize("idiom", idioms(), ids=lambda i: i.real)
def test_an_idiom_does_what_the_real_tool_does(setup: str, idiom: Idiom, tmp_path: Path) -> None:
    real = run(setup, idiom.real, tmp_path)
    ours = run(setup, idiom.ours, tmp_path)
    if idiom.compare == "same":
        assert (ours.stdout, ours.returncode) == (real.stdout, real.returncode), ours.stderr
    elif idiom.compare == "same-err":
        assert (ours.stderr, ours.returncode) == (real.stderr, real.returncode)
    elif idiom.compare == "rc":
        assert ours.returncode == real.returncode, (real.stderr, ours.stderr)
    else:
        want_real, want_ours = (int(x) for x in idiom.compare.removeprefix("rc=").split("/"))
        assert (real.returncode, ours.returncode) == (want_real, want_ours), (real.stderr, ours.stderr)
        assert len(ours.stderr.splitlines()) == 1 and ours.stderr.startswith("udpkit")


def test_the_table_is_well_formed() -> None:
    table = idioms()
    assert len(table) >= 40
    for idiom in table:
        assert idiom.compare in ("same", "same-err", "rc") or idiom.compare.startswith("rc="), idiom
        assert "udpkit" in idiom.ours and "udpkit" not in idiom.real, idiom
