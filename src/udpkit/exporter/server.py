"""``udpkit exporter``'s HTTP side: ``/probe`` (blackbox_exporter's contract), ``/metrics``, ``/-/healthy``,
``/-/reload`` (and SIGHUP), and an index page of the modules and the last probes.

The exporter probes whatever a URL names, so it guards itself: targets outside the config's ``allow``
networks are refused (no ``allow``: any target — an SSRF risk on an exporter others can reach, as
with blackbox_exporter), broadcast and multicast targets are refused unless the module allows
them, probes run at most ``limits.concurrency`` at once and ``limits.per_target`` per target, and a
module with ``rate_limit`` answers 429 beyond it. A config that does not validate is refused at start
and on reload, and the old one stays in force.
"""

from __future__ import annotations

import html
import threading
import time
from collections import OrderedDict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from udpkit.errors import UsageError
from udpkit.exporter.config import Config, Module, parse_config
from udpkit.exporter.host import HostCollector
from udpkit.exporter.probers import Outcome, run_many, run_probe

__all__ = ["DEFAULT_CONFIG", "DEFAULT_PORT", "Exporter", "load_config"]

#: Outside 9100-9999 (fully allocated on Prometheus's default-port page since 2023) and not used
#: by a known exporter: 10123, for NTP's 123.
DEFAULT_PORT = 10123
#: The timeout offset blackbox_exporter uses: a probe ends this long before Prometheus gives up.
TIMEOUT_MARGIN = 0.5
DEFAULT_CONFIG: dict[str, Any] = {"modules": {
    "udp": {"prober": "udp", "timeout": "5s"},
    "ntp": {"prober": "ntp", "timeout": "5s"},
    "dns": {"prober": "dns", "timeout": "5s", "dns": {"query_name": ".", "query_type": "SOA"}},
    "echo": {"prober": "echo", "timeout": "5s"},
    "snmp": {"prober": "snmp", "timeout": "5s"},
}}


def load_config(path: str | None) -> Config:
    """The YAML file at ``path`` (``None``: the built-in modules) checked; one-line UsageError otherwise."""
    if path is None:
        return parse_config(DEFAULT_CONFIG)
    import yaml

    from udpkit.files import read_text

    text = read_text(path, "--config.file", 4 << 20)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise UsageError(f"{path}{where}: not YAML: {getattr(exc, 'problem', exc)}") from None
    try:
        return parse_config(document)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


class _Bucket:
    def __init__(self, rate: float) -> None:
        self.rate, self.tokens, self.at = rate, max(1.0, rate), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Exporter:
    """The exporter's state: the config (swapped whole on reload), the limits, the recent probes."""

    def __init__(self, config_path: str | None, *, max_sockets: int = 250) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.config_path = config_path
        self.config = load_config(config_path)
        self.registry = CollectorRegistry()
        self.registry.register(HostCollector(max_sockets))
        self.probes = Counter("udpkit_exporter_probes", "Probes run, by module and result", ["module", "result"],
                              registry=self.registry)
        self.durations = Histogram("udpkit_exporter_request_duration_seconds", "Time to answer a request",
                                   ["handler"], registry=self.registry)
        self.reload_ok = Gauge("udpkit_exporter_config_last_reload_successful",
                               "Whether the last configuration reload worked", registry=self.registry)
        self.reload_at = Gauge("udpkit_exporter_config_last_reload_success_timestamp_seconds",
                               "When the configuration was last loaded", registry=self.registry)
        self.reload_ok.set(1)
        self.reload_at.set_to_current_time()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.config.limits.concurrency)
        self._per_target: OrderedDict[str, threading.BoundedSemaphore] = OrderedDict()
        self._buckets: dict[str, _Bucket] = {}
        self.recent: deque[tuple[float, str, str, bool, Outcome]] = deque(maxlen=50)

    def reload(self) -> str | None:
        """Load the config again; the error (the old config stays) or ``None``."""
        try:
            config = load_config(self.config_path)
        except (UsageError, OSError) as exc:
            self.reload_ok.set(0)
            return str(exc)
        with self._lock:
            self.config = config
            self._buckets.clear()
        self.reload_ok.set(1)
        self.reload_at.set_to_current_time()
        return None

    def _target_slot(self, target: str) -> threading.BoundedSemaphore:
        with self._lock:
            slot = self._per_target.get(target)
            if slot is None:
                slot = self._per_target[target] = threading.BoundedSemaphore(self.config.limits.per_target)
                if len(self._per_target) > 10000:
                    self._per_target.popitem(last=False)
            self._per_target.move_to_end(target)
            return slot

    def probe(self, params: dict[str, list[str]], scrape_timeout: str | None) -> tuple[int, str, str]:
        """``/probe``: (HTTP status, body, content type)."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import GaugeMetricFamily

        config = self.config
        name = (params.get("module") or ["udp"])[0]
        module = config.modules.get(name)
        if module is None:
            return 400, f"Unknown module {name!r}\n", "text/plain"
        targets = params.get("target") or []
        if not targets and module.targets:
            target = f"{len(module.targets)} targets of {name}"
        elif len(targets) != 1 or not targets[0]:
            return 400, "Target parameter is missing\n", "text/plain"
        else:
            target = targets[0]
        timeout = module.timeout
        if scrape_timeout:
            try:
                timeout = min(timeout, max(0.1, float(scrape_timeout) - TIMEOUT_MARGIN))
            except ValueError:
                return 400, f"Bad X-Prometheus-Scrape-Timeout-Seconds {scrape_timeout!r}\n", "text/plain"
        if module.rate_limit is not None:
            with self._lock:
                bucket = self._buckets.setdefault(name, _Bucket(module.rate_limit))
                allowed = bucket.take()
            if not allowed:
                self.probes.labels(name, "rate_limited").inc()
                return 429, f"Module {name!r} is over its rate_limit of {module.rate_limit:g} probes a second\n", \
                    "text/plain"
        outcome = self._run(config, module, target if targets else None, timeout)
        self.probes.labels(name, outcome.result).inc()
        self.recent.append((time.time(), name, target, outcome.success, outcome))
        if (params.get("debug") or ["false"])[0] == "true":
            return 200, self._debug(name, target, outcome), "text/plain"
        registry = CollectorRegistry()
        families = []
        for metric, (text, samples) in outcome.metrics.items():
            labels = sorted({k for _v, lab in samples for k in lab})
            family = GaugeMetricFamily(metric, text, labels=labels)
            for value, lab in samples:
                family.add_metric([lab.get(k, "") for k in labels], value)
            families.append(family)
        registry.register(_Fixed(families))
        return 200, generate_latest(registry).decode(), "text/plain; version=0.0.4; charset=utf-8"

    def _run(self, config: Config, module: Module, target: str | None, timeout: float) -> Outcome:
        """One probe (``target``), or the module's ``targets:`` at once (``None``), within the limits."""
        deadline = time.monotonic() + timeout
        if target is None:
            if not self._slots.acquire(timeout=timeout):
                return Outcome(False, timeout, {}, ["No probe slot (limits.concurrency)"], "busy")
            try:
                return run_many(config, module, timeout)
            finally:
                self._slots.release()
        if not self._slots.acquire(timeout=timeout):
            return Outcome(False, timeout, {"probe_success": ("Displays whether or not the probe was a success",
                                                              [(0.0, {})])},
                           [f"No probe slot within {timeout:g}s (limits.concurrency)"], "busy")
        try:
            slot = self._target_slot(target)
            if not slot.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return Outcome(False, timeout, {"probe_success": ("Displays whether or not the probe was a success",
                                                                  [(0.0, {})])},
                               [f"No slot for {target} (limits.per_target)"], "busy")
            try:
                return run_probe(config, module, target, max(0.05, deadline - time.monotonic()))
            finally:
                slot.release()
        finally:
            self._slots.release()

    @staticmethod
    def _debug(name: str, target: str, outcome: Outcome) -> str:
        lines = ["Logs for the probe:"] + [f"  {line}" for line in outcome.log] + ["", "Metrics that would have been returned:"]
        for metric, (_text, samples) in outcome.metrics.items():
            for value, labels in samples:
                inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                lines.append(f"{metric}{{{inner}}} {value:g}" if inner else f"{metric} {value:g}")
        lines += ["", f"Module configuration: {name}", f"Target: {target}"]
        return "\n".join(lines) + "\n"

    def metrics(self) -> tuple[int, str, str]:
        from prometheus_client import generate_latest

        return 200, generate_latest(self.registry).decode(), "text/plain; version=0.0.4; charset=utf-8"

    def index(self) -> tuple[int, str, str]:
        rows = "".join(f"<li>{html.escape(n)} ({html.escape(m.prober)}, timeout {m.timeout:g}s)</li>"
                       for n, m in self.config.modules.items())
        recent = "".join(
            f"<tr><td>{time.strftime('%H:%M:%S', time.localtime(at))}</td><td>{html.escape(module)}</td>"
            f"<td>{html.escape(target)}</td><td>{'success' if ok else 'failure'}</td>"
            f"<td>{outcome.duration:.3f}s</td><td><a href='/probe?{html.escape(urlencode({'module': module, 'target': target, 'debug': 'true'}))}'>"
            f"debug</a></td></tr>"
            for at, module, target, ok, outcome in reversed(self.recent))
        body = (f"<html><head><title>udpkit exporter</title></head><body><h1>udpkit exporter</h1>"
                f"<p><a href='/metrics'>Metrics</a> · <a href='/-/healthy'>Health</a></p>"
                f"<h2>Modules</h2><ul>{rows}</ul><h2>Recent probes</h2><table><tr><th>When</th><th>Module</th>"
                f"<th>Target</th><th>Result</th><th>Took</th><th>Log</th></tr>{recent}</table></body></html>")
        return 200, body, "text/html; charset=utf-8"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "udpkit-exporter"

            def _send(self, status: int, body: str, kind: str) -> None:
                """Headers and body in one write: two small writes meet the client's delayed ACK (~40 ms)."""
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self._headers_buffer.append(b"\r\n" + data)  # type: ignore[attr-defined]
                self.flush_headers()

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlsplit(self.path)
                started = time.monotonic()
                try:
                    answer = self._answer(url.path, url.query)
                except Exception as exc:  # noqa: BLE001 - one bad request must not take the exporter down
                    self.log_error("error answering %s: %r", url.path, exc)
                    answer = (500, f"internal error: {type(exc).__name__}\n", "text/plain")
                exporter.durations.labels(url.path if url.path in ("/probe", "/metrics") else "other").observe(
                    time.monotonic() - started)
                self._send(*answer)

            def _answer(self, path: str, query: str) -> tuple[int, str, str]:
                if path == "/probe":
                    return exporter.probe(parse_qs(query), self.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
                if path == "/metrics":
                    return exporter.metrics()
                if path == "/-/healthy":
                    return 200, "Healthy\n", "text/plain"
                if path == "/":
                    return exporter.index()
                if path == "/-/reload":
                    return 405, "Only POST requests allowed\n", "text/plain"
                return 404, "Not found\n", "text/plain"

            def do_POST(self) -> None:  # noqa: N802
                if urlsplit(self.path).path != "/-/reload":
                    self._send(404, "Not found\n", "text/plain")
                    return
                error = exporter.reload()
                if error is None:
                    self._send(200, "OK\n", "text/plain")
                else:
                    self.log_error("error reloading config: %s", error)
                    self._send(500, f"failed to reload config: {error}\n", "text/plain")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                if args and str(args[0]).startswith("error"):
                    super().log_message(format, *args)

        return Handler

    def server(self, host: str, port: int) -> ThreadingHTTPServer:
        class Server(ThreadingHTTPServer):
            # Prometheus opens many scrapes at once; the default backlog of 5 drops the rest's SYNs,
            # and each dropped one costs its scrape a one-second retransmission.
            request_queue_size = 1024
            daemon_threads = True

        return Server((host, port), self.handler())


class _Fixed:
    """A collector that yields metric families made beforehand (one probe's)."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families
