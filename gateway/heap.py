"""The garbage collector's view of a long-running server process.

Everything a process loads before it serves (modules, qdrant-client's pydantic models,
compiled SmartModules, topic specs, memories read at start-up) lives until it exits, yet
each of CPython's full collections traverses all of it again. With the memory service's
imports that is ~100 ms per full collection on the reference machine: an event-loop stall
that every publish in flight waits out (it set the p99 ack latency at 50 connections).
``settle()`` collects once after start-up and moves the survivors into the permanent
generation, so later collections look only at objects made while serving. Cyclic garbage
among frozen objects is never collected, which is why only start-up state is frozen.

``settle()`` also raises the young generation's threshold to ``YOUNG_THRESHOLD``. CPython
collects the young generation whenever tracked allocations outnumber deallocations by the
threshold (700 by default). A server's work in flight (publishes waiting for their commit,
with their frames, envelopes and callbacks) swings by thousands of objects between a commit
and its acks, all of it freed by reference counting, so the default threshold ran ~400
young and ~25 older collections a second at 50 connections, 5 % of the event loop, to find
almost nothing. Cyclic garbage is still found, after at most ``YOUNG_THRESHOLD`` net
allocations.

``HeapCollector`` reports the frozen objects, the thresholds, and collections and their
pauses by generation, in ``/metrics``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

import structlog
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = structlog.get_logger(__name__)

GENERATIONS = (0, 1, 2)

YOUNG_THRESHOLD = 10_000
"""Net allocations of tracked objects that start a young collection (CPython's default
is 700); the older generations keep their default ratios."""


class _Pauses:
    """Collections and their total and longest pause per generation, timed by a
    ``gc.callbacks`` hook (installed once per process)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self._started = 0.0
        self.installed = False

    def install(self) -> None:
        if not self.installed:
            gc.callbacks.append(self._hook)
            self.installed = True

    def _hook(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        pause = time.perf_counter() - self._started
        self.count[generation] += 1
        self.seconds[generation] += pause
        if pause > self.longest[generation]:
            self.longest[generation] = pause


PAUSES = _Pauses()


def freeze() -> int:
    """``settle()`` without its log line and metrics, for a child process that serves no
    metrics and whose output is not the server's log."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    return gc.get_freeze_count()


def settle() -> int:
    """Collect, then exempt every surviving object from later collections and raise the
    young generation's threshold; returns how many objects are frozen. Call it once the
    process has started and before it serves."""
    started = time.perf_counter()
    frozen = freeze()
    PAUSES.install()
    logger.info(
        "heap_settled",
        frozen_objects=frozen,
        ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return frozen


class HeapCollector(Collector):
    """``agentmem_gc_*`` metrics of this process, read at scrape time."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "agentmem_gc_frozen_objects",
            "Objects exempt from garbage collection (start-up state frozen by the server)",
            value=gc.get_freeze_count(),
        )
        if not PAUSES.installed:
            return
        threshold = GaugeMetricFamily(
            "agentmem_gc_threshold",
            "Net allocations that start a collection of the generation (for 1 and 2: "
            "collections of the younger one)",
            labels=["generation"],
        )
        for generation, value in zip(GENERATIONS, gc.get_threshold(), strict=True):
            threshold.add_metric([str(generation)], value)
        yield threshold
        count = CounterMetricFamily(
            "agentmem_gc_collections",
            "Garbage collections since the server settled, by generation",
            labels=["generation"],
        )
        seconds = CounterMetricFamily(
            "agentmem_gc_pause_seconds",
            "Time the process was paused in garbage collections, by generation",
            labels=["generation"],
        )
        longest = GaugeMetricFamily(
            "agentmem_gc_longest_pause_seconds",
            "The longest garbage collection pause since the server settled, by generation",
            labels=["generation"],
        )
        for generation in GENERATIONS:
            label = [str(generation)]
            count.add_metric(label, PAUSES.count[generation])
            seconds.add_metric(label, PAUSES.seconds[generation])
            longest.add_metric(label, PAUSES.longest[generation])
        yield count
        yield seconds
        yield longest
