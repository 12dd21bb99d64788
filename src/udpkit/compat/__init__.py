"""Other tools' command lines, translated: socat's UDP addresses onto the listener, netcat's UDP flags and
messages (``compat.nc``, imported by its command only)."""

from udpkit.compat.socat import ClientPlan, SocatPlan, Target, parse_socat

__all__ = ["ClientPlan", "SocatPlan", "Target", "parse_socat"]
