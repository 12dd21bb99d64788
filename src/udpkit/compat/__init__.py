"""Other tools' command lines, translated: socat's UDP addresses onto the listener (nc's flags come with the prober)."""

from udpkit.compat.socat import SocatPlan, Target, parse_socat

__all__ = ["SocatPlan", "Target", "parse_socat"]
