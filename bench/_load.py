"""The competing loads every benchmark can run beside it (``--busy [KIND]``).

A user's machine is rarely idle, and a ratio that holds only on a quiet one does not hold; the
issues that set the targets name two loads, ``stress-ng --cpu 1`` and a busy loop on the other
core. The benchmarks pin their servers to core 0 and their clients (where they pin them) to
core 1, so the kinds differ in whom they take time from:

- ``loop`` (a bare ``--busy``): a Python busy loop the scheduler places where it likes, as the
  figures before 7 December were measured;
- ``other-core``: the same loop pinned to core 1;
- ``stress-ng``: ``stress-ng --cpu 1``, a worker of its own, not pinned.

The load runs in a session of its own and is ended with its whole process group, so that
``stress-ng``'s worker ends with it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys

LOADS = {
    "loop": [sys.executable, "-c", "while True: pass"],
    "other-core": ["taskset", "-c", "1", sys.executable, "-c", "while True: pass"],
    "stress-ng": ["stress-ng", "--cpu", "1", "--quiet"],
}


def add_busy_option(parser: argparse.ArgumentParser) -> None:
    """``--busy [KIND]``: a bare ``--busy`` is the unpinned loop, as the option always meant. A kind
    whose tool is missing is refused as the arguments are read (argparse's one line and exit 2),
    before the benchmark has made anything it would have to clean up."""
    parser.add_argument("--busy", nargs="?", const="loop", type=_installed, metavar="{" + ",".join(LOADS) + "}",
                        help="keep a competing load running: a busy loop (loop, the default), the same"
                             " pinned to core 1 (other-core), or stress-ng --cpu 1")


def _installed(kind: str) -> str:
    if kind not in LOADS:
        raise argparse.ArgumentTypeError(f"{kind!r} is not one of {', '.join(LOADS)}")
    if shutil.which(LOADS[kind][0]) is None:
        raise argparse.ArgumentTypeError(f"{kind} needs {LOADS[kind][0]}, which is not installed")
    return kind


def start_load(kind: str | None) -> subprocess.Popen[bytes] | None:
    """Start the load ``kind`` names (nothing for None), for the caller to end with
    :func:`stop_load` in a ``finally``."""
    return subprocess.Popen(LOADS[kind], start_new_session=True, stdout=subprocess.DEVNULL) if kind else None


def stop_load(load: subprocess.Popen[bytes] | None) -> None:
    """End a load and every process it started (its session's group)."""
    if load is not None:
        os.killpg(load.pid, signal.SIGKILL)
        load.wait()


def describe(kind: str | None) -> str:
    """The load's command line as a benchmark's heading ends with it ("" without one)."""
    return "; a competing load: " + " ".join(LOADS[kind]) if kind else ""
