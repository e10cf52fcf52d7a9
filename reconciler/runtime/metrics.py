"""Prometheus metrics of one daemon (SPEC X3), on a registry of its own so several
daemons in one test process don't share counters. Under ``reconcile daemon --workers
N`` each process writes multiprocess files (``PROMETHEUS_MULTIPROC_DIR``) and
:meth:`DaemonMetrics.render` serves their sum (gauges: the latest live value).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics import MetricWrapperBase

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# One value per gauge over all processes: the freshest of the live ones.
_GAUGE_MODE = "livemostrecent"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class DaemonMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.queue_depth = Gauge(
            "reconcile_outbox_messages", "Outbox messages by state.", ["state"],
            registry=self.registry, multiprocess_mode=_GAUGE_MODE)
        self.sends = Counter(
            "reconcile_sends", "Send attempts by outcome and server.",
            ["namespace", "server", "outcome"], registry=self.registry)
        self.send_seconds = Histogram(
            "reconcile_send_duration_seconds", "Transport time of one send.", ["server"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.delivery_seconds = Histogram(
            "reconcile_delivery_latency_seconds", "Accepted to delivered.",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.accepted = Counter(
            "reconcile_intake_accepted", "Notifications accepted into the outbox.",
            ["namespace"], registry=self.registry)
        self.server_up = Gauge(
            "reconcile_server_reachable", "1 when the last health probe succeeded.",
            ["namespace", "server"], registry=self.registry,
            multiprocess_mode=_GAUGE_MODE)
        self.config_revision = Gauge(
            "reconcile_config_revision", "Live config revision the daemon runs with.",
            registry=self.registry, multiprocess_mode=_GAUGE_MODE)

        self.sync_state = Gauge(
            "reconcile_sync_state", "1 for the continuous sync's current state.", ["state"],
            registry=self.registry, multiprocess_mode=_GAUGE_MODE)
        self.sync_outcomes = Counter(
            "reconcile_sync_outcomes", "Sync runs by outcome (SyncPhase).", ["state"],
            registry=self.registry)
        self.sync_drift = Gauge(
            "reconcile_sync_drifted_resources", "Resources changed outside git.",
            registry=self.registry, multiprocess_mode=_GAUGE_MODE)

    def labelled(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: labels() costs ~10 µs (argument checks,
        a lock), twice for every message sent."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def render(self) -> bytes:
        path = os.environ.get(MULTIPROC_ENV)
        if not path:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path)
        return generate_latest(merged)
