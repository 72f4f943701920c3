"""Prometheus metrics of the memory pipeline, in a registry the caller gives (the gateway's).

``PipelineMetrics(registry)`` registers:

- ``agentmem_memory_lag_records{topic, partition}`` (gauge): records in the log not yet
  durable in the pipeline (log end offset minus the committed watermark);
- ``agentmem_memory_records_total`` (counter): records consumed;
- ``agentmem_memory_processed_per_second`` (gauge): records consumed per second over the
  last sampling interval;
- ``agentmem_memory_items_total{memory_type}`` (counter): work items classified;
- ``agentmem_memory_applied_total{memory_type}`` (counter): items applied per agent;
- ``agentmem_memory_rejected_total`` (counter): records and items rejected;
- ``agentmem_memory_anomalies_total`` (counter): anomalies written to ``audit-logs``;
- ``agentmem_memory_updates_published_total`` (counter): outbox rows produced;
- ``agentmem_memory_deferred_items{memory_type}`` (gauge): items waiting in ``deferred``;
- ``agentmem_memory_queue_items{memory_type}`` (gauge): items in each agent's queue;
- ``agentmem_memory_outbox_rows`` (gauge): rows waiting to be produced;
- ``agentmem_memory_store_transaction_seconds`` (histogram): write transactions, BEGIN to
  COMMIT;
- ``agentmem_memory_vector_lag_changes`` (gauge): changes not yet in the vector index;
- ``agentmem_memory_vector_process_restarts`` (gauge): times Qdrant local mode's process
  was started again after it died;
- ``agentmem_memory_api_latency_seconds{operation}`` (histogram): memory API operations.

Counters and in-memory gauges are read from the worker when Prometheus scrapes
(``PipelineCollector``); lag needs the log's end offsets, which ``sample`` reads (the
gateway calls it every second). Nothing here slows the pipeline down: the only hook on a
hot path is one histogram observation per write transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agents.pipeline.worker import PipelineWorker

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0)


class PipelineCollector(Collector):
    """Reads the worker's counters and queues at scrape time."""

    def __init__(self, metrics: PipelineMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        worker = self.metrics.worker
        if worker is None:
            return
        stats = worker.stats
        records = CounterMetricFamily(
            "agentmem_memory_records", "Records the memory pipeline consumed"
        )
        records.add_metric([], stats.records)
        yield records
        items = CounterMetricFamily(
            "agentmem_memory_items", "Work items classified per memory type", labels=["memory_type"]
        )
        applied = CounterMetricFamily(
            "agentmem_memory_applied", "Items applied per memory agent", labels=["memory_type"]
        )
        deferred = GaugeMetricFamily(
            "agentmem_memory_deferred_items", "Items waiting in deferred", labels=["memory_type"]
        )
        queued = GaugeMetricFamily(
            "agentmem_memory_queue_items", "Items in each agent's queue", labels=["memory_type"]
        )
        rejected = stats.rejected
        for name, lane in worker.lanes.items():
            items.add_metric([name], stats.works.get(name, 0))
            applied.add_metric([name], lane.stats.applied)
            deferred.add_metric([name], lane.backlog + lane.loaded_deferred)
            queued.add_metric([name], len(lane.queue))
            rejected += lane.stats.rejected
        yield items
        yield applied
        yield deferred
        yield queued
        rejected_family = CounterMetricFamily(
            "agentmem_memory_rejected", "Records and items rejected by the memory pipeline"
        )
        rejected_family.add_metric([], rejected)
        yield rejected_family
        anomalies = CounterMetricFamily(
            "agentmem_memory_anomalies", "Anomalies written to audit-logs"
        )
        anomalies.add_metric([], stats.anomalies)
        yield anomalies
        published = CounterMetricFamily(
            "agentmem_memory_updates_published", "Outbox rows produced to the log"
        )
        published.add_metric([], worker.publisher.produced)
        yield published
        outbox = GaugeMetricFamily("agentmem_memory_outbox_rows", "Rows waiting in the outbox")
        outbox.add_metric([], worker.store.outbox_count)
        yield outbox
        lag = GaugeMetricFamily(
            "agentmem_memory_lag_records",
            "Records in the log not yet durable in the memory pipeline",
            labels=["topic", "partition"],
        )
        marks = worker.progress.watermarks()
        for (topic, partition), end in sorted(self.metrics.end_offsets.items()):
            mark = marks.get((topic, partition), 0)
            lag.add_metric([topic, str(partition)], max(0, end - mark))
        yield lag


class PipelineMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.worker: PipelineWorker | None = None
        self.end_offsets: dict[tuple[str, int], int] = {}
        self._last: tuple[float, int] | None = None
        self.processed_per_second = Gauge(
            "agentmem_memory_processed_per_second",
            "Records consumed per second over the last sampling interval",
            registry=registry,
        )
        self.store_transaction = Histogram(
            "agentmem_memory_store_transaction_seconds",
            "Memory database write transactions, BEGIN to COMMIT",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.vector_lag = Gauge(
            "agentmem_memory_vector_lag_changes",
            "Memory changes not yet in the vector index",
            registry=registry,
        )
        self.vector_process_restarts = Gauge(
            "agentmem_memory_vector_process_restarts",
            "Times Qdrant local mode's process was started again after it died",
            registry=registry,
        )
        self.api_latency = Histogram(
            "agentmem_memory_api_latency_seconds",
            "Memory API operations",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        registry.register(PipelineCollector(self))

    def attach(self, worker: PipelineWorker) -> None:
        """Report this worker (and time its store's write transactions)."""
        self.worker = worker
        worker.store.on_transaction = self.store_transaction.observe

    async def sample(self) -> None:
        """Read the log's end offsets and the consumption rate (call it every second)."""
        worker = self.worker
        if worker is None:
            return
        ends: dict[tuple[str, int], int] = {}
        for topic in worker.config.topics:
            description = await worker.log.describe_topic(topic)
            for info in description.partitions:
                ends[(topic, info.partition)] = info.end_offset
        self.end_offsets = ends
        now = time.monotonic()
        if self._last is not None and now > self._last[0]:
            rate = (worker.stats.records - self._last[1]) / (now - self._last[0])
            self.processed_per_second.set(max(0.0, rate))
        self._last = (now, worker.stats.records)
