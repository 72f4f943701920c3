"""Prometheus metrics of one gateway instance (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.produce_queue = Gauge(
            "agentmem_produce_queue_records", "Records waiting for a group commit", registry=r
        )
