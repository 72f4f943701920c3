"""Prometheus metrics of one gateway instance (its own registry, so tests can run several)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, str], Any] = {}
        r = self.registry
        self.http_requests = Counter(
            "agentmem_http_requests_total",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.produced = Counter(
            "agentmem_records_produced_total", "Records durably written", ["topic"], registry=r
        )
        self.produce_latency = Histogram(
            "agentmem_produce_latency_seconds",
            "Time from produce call to durable commit",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.errors = Counter(
            "agentmem_errors_total", "Errors answered to clients by code", ["code"], registry=r
        )
        self.ws_connections = Gauge(
            "agentmem_ws_connections", "Open WebSocket sessions", registry=r
        )
        self.ws_frames_in = Counter(
            "agentmem_ws_frames_in_total", "Frames received by op", ["op"], registry=r
        )
        self.ws_frames_out = Counter(
            "agentmem_ws_frames_out_total", "Reply frames sent by op", ["op"], registry=r
        )
        self.ws_deliveries = Counter(
            "agentmem_ws_deliveries_total", "Event frames queued to subscribers", registry=r
        )
        self.ws_disconnects = Counter(
            "agentmem_ws_disconnects_total",
            "Sessions closed by the server, by close code",
            ["code"],
            registry=r,
        )
        self.ws_ack_latency = Histogram(
            "agentmem_ws_ack_latency_seconds",
            "Time from reading a publish to its durable ack",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.ws_send_queue = Gauge(
            "agentmem_ws_send_queue_frames", "Frames queued across all sessions", registry=r
        )
        self.produce_queue = Gauge(
            "agentmem_produce_queue_records", "Records waiting for a group commit", registry=r
        )

    def child(self, metric: Counter, label: str) -> Any:
        """``metric.labels(label)``, looked up once: label lookups are slow on hot paths."""
        key = (id(metric), label)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(label)
        return found
