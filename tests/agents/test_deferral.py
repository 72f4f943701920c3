"""An overloaded agent: its items are deferred durably while the others go on, the
consumer slows down when the backlog is high, and nothing is lost or reordered."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent_helpers import ORG, chat, produce, query, read_json, work
from conftest import StartPipeline

from agents import MemoryStore, PipelineConfig
from agents.memory.base import Applied
from agents.memory.episodic import EpisodicAgent
from agents.pipeline.lanes import AgentLane
from agents.pipeline.progress import Progress
from agents.store.sqlite import Writes
from agents.work import MemoryWork
from gateway.streamlog.embedded import EmbeddedLog
from gateway.streamlog.interface import Record

FACTS = 150


def mixed(count: int) -> list[dict[str, Any]]:
    """One user's favourite colour changing ``count`` times, between plain messages."""
    events = []
    for i in range(count):
        events.append(chat(f"My favourite colour is colour-{i}"))
        events.append(chat(f"Book table {i}", user="bob"))
    return events


async def test_overloaded_agent_is_deferred_while_others_go_on(
    log: EmbeddedLog, start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    await produce(log, "chat-messages", mixed(FACTS))
    pipeline = await start_pipeline(agent_queue_sizes={"semantic": 1}, agent_batch=1)
    await pipeline.worker.wait_idle(30)
    lanes = pipeline.worker.lanes
    assert lanes["semantic"].stats.deferred > FACTS // 2
    assert lanes["episodic"].stats.deferred == 0
    # Applied in the order stated: the last statement wins, every one is a version.
    facts = await pipeline.store.list_memories(
        organization_id=ORG, user_id="alice", memory_type="semantic"
    )
    assert len(facts) == 1
    assert (facts[0].content, facts[0].version) == (
        f"My favourite colour is colour-{FACTS - 1}",
        FACTS,
    )
    history = await pipeline.store.history(
        organization_id=ORG, user_id="alice", memory_id=facts[0].id
    )
    assert [h.content for h in history] == [
        f"My favourite colour is colour-{i}" for i in range(FACTS)
    ]
    assert await pipeline.store.count(organization_id=ORG, user_id="bob") == FACTS
    database = tmp_path / "data" / "memory.sqlite3"
    assert query(database, "SELECT count(*) FROM deferred") == [(0,)]
    updates = await read_json(log, "memory-updates")
    assert len(updates) == 2 * FACTS and len({u["id"] for u in updates}) == 2 * FACTS


async def test_backpressure_bounds_the_backlog(
    log: EmbeddedLog, start_pipeline: StartPipeline
) -> None:
    await produce(log, "chat-messages", mixed(FACTS))
    pipeline = await start_pipeline(
        agent_queue_sizes={"semantic": 1}, agent_batch=1, deferred_high_water=20, batch_records=10
    )
    await pipeline.worker.wait_idle(30)
    assert pipeline.worker.stats.backpressure_waits > 0
    # The consumer stops before a batch at the high-water mark: at most one batch more.
    assert 20 <= pipeline.worker.lanes["semantic"].stats.max_backlog <= 20 + 10
    fact = (await pipeline.store.list_memories(organization_id=ORG, user_id="alice"))[0]
    assert fact.version == FACTS


async def test_deferred_items_survive_a_restart(
    log: EmbeddedLog, start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    await produce(log, "chat-messages", mixed(FACTS))
    first = await start_pipeline(agent_queue_sizes={"semantic": 1}, agent_batch=1)
    async with asyncio.timeout(30):
        while first.worker.lanes["semantic"].stats.deferred == 0:
            await asyncio.sleep(0.001)
    # A stop leaves the backlog deferred, however long it is given: draining it is the
    # next start's work.
    await first.stop(timeout=5)
    left = query(tmp_path / "data" / "memory.sqlite3", "SELECT count(*) FROM deferred")[0][0]
    assert left > FACTS // 2
    assert left == first.worker.lanes["semantic"].backlog
    second = await start_pipeline()
    assert second.worker.lanes["semantic"].backlog == left
    await second.worker.wait_idle(30)
    fact = (await second.store.list_memories(organization_id=ORG, user_id="alice"))[0]
    assert (fact.content, fact.version) == (f"My favourite colour is colour-{FACTS - 1}", FACTS)
    assert await second.store.count(organization_id=ORG, user_id="bob") == FACTS
    updates = await read_json(log, "memory-updates")
    assert len(updates) == 2 * FACTS and len({u["id"] for u in updates}) == 2 * FACTS


class FragileAgent(EpisodicAgent):
    """An agent with a defect: it cannot handle one particular text."""

    def apply_sync(self, tx: Writes, items: Sequence[MemoryWork], now: int) -> list[Applied]:
        if any(item.content == "boom" for item in items):
            raise ValueError("cannot handle boom")
        return super().apply_sync(tx, items, now)


async def test_an_item_the_agent_fails_on_is_rejected_and_the_rest_applied(
    store: MemoryStore,
) -> None:
    config = PipelineConfig()
    progress = Progress()
    progress.start("chat-messages", 0, 0)
    lane = AgentLane(FragileAgent(config, store), store, progress, config, on_commit=lambda: None)
    items = [work(text, "episodic", offset=i) for i, text in enumerate(["a", "boom", "c"])]
    progress.begin([Record("chat-messages", 0, i, 0, None, b"") for i in range(3)])
    for i in range(3):
        progress.settle("chat-messages", 0, i, 1)
    lane.put(items)
    runner = asyncio.create_task(lane.run())
    try:
        while lane.stats.applied + lane.stats.rejected < 3:
            await asyncio.sleep(0.01)
    finally:
        runner.cancel()
    assert (lane.stats.applied, lane.stats.rejected) == (2, 1)
    assert sorted(
        m.content for m in await store.list_memories(organization_id=ORG, user_id="alice")
    ) == ["a", "c"]
    rejected = await store.fetch('SELECT "offset", stage FROM rejected')
    assert rejected == [(1, "agent:episodic")]
    # All three are accounted for: the committed offset moved past them.
    assert await store.offsets("memory-pipeline") == {("chat-messages", 0): 3}
