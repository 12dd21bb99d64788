"""Testing UDP ports honestly: the verdict rules (``machine``), the pace of rate-limited hosts
(``pacing``), the scanner that drives them (``scanner``) and the one-call API (``probe``).

The package is callable — ``udpkit.probe("::1", "123")`` is ``udpkit.probe.probe("::1", "123")`` —
so the name users reach for first does what they expect.
"""

import sys
import types
from typing import Any

from udpkit.probe.api import (DEFAULT_PORTS, check_options, check_sources, check_targets, probe, resolve, source_addresses,
                              top_ports)
from udpkit.probe.machine import (CLOSED, CONFLICT, FILTERED, OPEN, OPEN_FILTERED, PortResult, ProbeMachine, Reading,
                                  Target)
from udpkit.probe.scanner import scan

__all__ = ["CLOSED", "CONFLICT", "DEFAULT_PORTS", "FILTERED", "OPEN", "OPEN_FILTERED", "PortResult", "ProbeMachine",
           "Reading", "Target", "check_options", "check_sources", "check_targets", "probe", "resolve", "scan",
           "source_addresses", "top_ports"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> list[PortResult]:
        return probe(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
