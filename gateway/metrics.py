"""Prometheus metrics of one gateway instance (its own registry, so tests can run several).

Metrics touched once or more per WebSocket frame are ``LoopCounter`` and ``LoopHistogram``:
plain numbers updated without a lock, read when ``/metrics`` is scraped. They must only be
updated from the event loop's thread, which also serves the scrape; prometheus_client's own
metrics take a lock per update, a cost the hot paths paid several times per publish.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.heap import HeapCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class LoopCounter(Collector):
    """A counter with at most one label, for the event loop's thread only."""

    class Child:
        __slots__ = ("value",)

        def __init__(self) -> None:
            self.value = 0.0

        def inc(self, amount: float = 1) -> None:
            self.value += amount

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str] = (), *, registry: Any
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labels)
        self._children: dict[str, LoopCounter.Child] = {}
        self._unlabelled = self.Child()
        registry.register(self)

    def labels(self, value: str) -> LoopCounter.Child:
        """The child of one label value (the counter has exactly one label)."""
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self.Child()
        return child

    def inc(self, amount: float = 1) -> None:
        self._unlabelled.value += amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=list(self._labelnames))
        if self._labelnames:
            for value, child in self._children.items():
                family.add_metric([value], child.value)
        else:
            family.add_metric([], self._unlabelled.value)
        yield family


class ScrapedCounter(Collector):
    """A counter kept by another part (the stream log), read from ``source`` when
    ``/metrics`` is scraped; 0 until a source is set."""

    def __init__(self, name: str, documentation: str, *, registry: Any) -> None:
        self._name = name
        self._documentation = documentation
        self.source: Callable[[], float] | None = None
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        value = 0.0 if self.source is None else self.source()
        yield CounterMetricFamily(self._name, self._documentation, value=value)


class LoopHistogram(Collector):
    """A histogram without labels, for the event loop's thread only."""

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        registry: Any,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = list(buckets)
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[Metric]:
        cumulative: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip([*self._bounds, float("inf")], self._counts, strict=True):
            total += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
        family = HistogramMetricFamily(self._name, self._documentation)
        family.add_metric([], cumulative, sum_value=self._sum)
        yield family


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
        self.produced = LoopCounter(
            "agentmem_records_produced_total", "Records durably written", ["topic"], registry=r
        )
        self.produce_latency = Histogram(
            "agentmem_produce_latency_seconds",
            "Time from produce call to durable commit",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "agentmem_errors_total", "Errors answered to clients by code", ["code"], registry=r
        )
        self.ws_connections = Gauge(
            "agentmem_ws_connections", "Open WebSocket sessions", registry=r
        )
        self.ws_frames_in = LoopCounter(
            "agentmem_ws_frames_in_total", "Frames received by op", ["op"], registry=r
        )
        self.ws_frames_out = LoopCounter(
            "agentmem_ws_frames_out_total", "Reply frames sent by op", ["op"], registry=r
        )
        self.ws_deliveries = LoopCounter(
            "agentmem_ws_deliveries_total", "Event frames queued to subscribers", registry=r
        )
        self.ws_disconnects = Counter(
            "agentmem_ws_disconnects_total",
            "Sessions closed by the server, by close code",
            ["code"],
            registry=r,
        )
        self.ws_ack_latency = LoopHistogram(
            "agentmem_ws_ack_latency_seconds",
            "Time from reading a publish to its durable ack",
            registry=r,
        )
        self.ws_send_queue = Gauge(
            "agentmem_ws_send_queue_frames", "Frames queued across all sessions", registry=r
        )
        self.produce_queue = Gauge(
            "agentmem_produce_queue_records", "Records waiting for a group commit", registry=r
        )
        self.log_writer_restarts = Gauge(
            "agentmem_log_writer_restarts",
            "Times the log's commit process died and was replaced since start",
            registry=r,
        )
        self.log_group_commits = ScrapedCounter(
            "agentmem_log_group_commits",
            "Group commits of the stream log since start",
            registry=r,
        )
        self.log_committed_records = ScrapedCounter(
            "agentmem_log_committed_records",
            "Records answered by the stream log's group commits since start, duplicates included",
            registry=r,
        )
        r.register(HeapCollector())

    def child(self, metric: Counter | LoopCounter, label: str) -> Any:
        """``metric.labels(label)``, looked up once: label lookups are slow on hot paths."""
        key = (id(metric), label)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(label)
        return found
