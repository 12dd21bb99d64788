"""Testing UDP ports honestly: the verdict rules (``machine``); the scanner and ``udpkit probe`` build on them."""

from udpkit.probe.machine import CLOSED, FILTERED, OPEN, OPEN_FILTERED, PortResult, ProbeMachine, Target

__all__ = ["CLOSED", "FILTERED", "OPEN", "OPEN_FILTERED", "PortResult", "ProbeMachine", "Target"]
