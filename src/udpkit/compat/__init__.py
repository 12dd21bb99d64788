"""Other tools' command lines, translated: socat's UDP addresses onto the listener (nc's flags come with the prober)."""

from udpkit.compat.socat import ClientPlan, SocatPlan, Target, parse_socat

__all__ = ["ClientPlan", "SocatPlan", "Target", "parse_socat"]
