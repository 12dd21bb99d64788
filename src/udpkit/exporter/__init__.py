"""``udpkit exporter``: UDP probes and the host's UDP state for Prometheus (blackbox_exporter's
``/probe`` contract; node_exporter-like counters, and per-socket gauges with a cardinality cap)."""

from udpkit.exporter.config import Config, Module, parse_config
from udpkit.exporter.probers import Outcome, run_probe
from udpkit.exporter.server import DEFAULT_PORT, Exporter, load_config

__all__ = ["Config", "DEFAULT_PORT", "Exporter", "Module", "Outcome", "load_config", "parse_config", "run_probe"]
