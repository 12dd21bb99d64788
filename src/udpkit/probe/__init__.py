"""Testing UDP ports honestly: the verdict rules (``machine``) and the scanner that drives them (``scanner``)."""

from udpkit.probe.machine import CLOSED, FILTERED, OPEN, OPEN_FILTERED, PortResult, ProbeMachine, Target
from udpkit.probe.scanner import scan

__all__ = ["CLOSED", "FILTERED", "OPEN", "OPEN_FILTERED", "PortResult", "ProbeMachine", "Target", "scan"]
