"""Start-up state is frozen out of garbage collection and young collections are rarer, in a
served gateway and by ``settle``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers import GatewayProcess


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path / "data").start()
    yield process
    process.stop()


def samples(url: str) -> dict[tuple[str, str], float]:
    text = httpx.get(url + "/metrics", timeout=5).text
    return {
        (sample.name, sample.labels.get("generation", "")): float(sample.value)
        for family in text_string_to_metric_families(text)
        if family.name.startswith("agentmem_gc")
        for sample in family.samples
    }


def test_a_served_gateway_freezes_its_start_up_state(gateway: GatewayProcess) -> None:
    seen = samples(gateway.url)
    # Modules, Starlette, qdrant-client's models and the services: tens of thousands.
    assert seen[("agentmem_gc_frozen_objects", "")] > 20_000
    for generation in "012":
        assert ("agentmem_gc_collections_total", generation) in seen
        assert ("agentmem_gc_longest_pause_seconds", generation) in seen
    # Young collections wait for 10,000 net allocations instead of CPython's 700.
    assert seen[("agentmem_gc_threshold", "0")] == 10_000
    assert seen[("agentmem_gc_threshold", "1")] == 10


# A fresh interpreter: freezing this test process would keep pytest's garbage forever.
SETTLE = """
import gc, json, weakref
from gateway import heap
from gateway.heap import HeapCollector
kept = [{"n": i, "tags": [i]} for i in range(100_000)]
before = len(gc.get_objects())
frozen = heap.settle()
after = len(gc.get_objects())
gc.collect()
families = {f.name: f for f in HeapCollector().collect()}
full = [s.value for s in families["agentmem_gc_collections"].samples
        if s.labels["generation"] == "2" and s.name.endswith("_total")]
# Garbage that only the collector can free (cycles) is still freed, by young collections.
class Node:
    pass
young = heap.PAUSES.count[0]
first = Node()
first.me = first
probe = weakref.ref(first)
del first
for _ in range(3 * heap.YOUNG_THRESHOLD):
    node = Node()
    node.me = node
print(json.dumps({
    "before": before, "frozen": frozen, "after": after, "full": full,
    "threshold": gc.get_threshold()[0], "young": heap.PAUSES.count[0] - young,
    "cycle_freed": probe() is None,
}))
"""


def test_settle_exempts_what_exists_from_later_collections() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SETTLE], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"] > 200_000
    assert result["frozen"] >= 200_000
    # What a full collection still traverses: only objects made after settle().
    assert result["after"] < 1_000
    assert result["full"] == [1]
    assert result["threshold"] == 10_000
    # 30,000 cycles, none freed by reference counting: a few young collections, not ~40.
    assert 1 <= result["young"] <= 6
    assert result["cycle_freed"]
