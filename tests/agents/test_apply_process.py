"""The apply process: agent batches committed by a child process, its failure modes, the
semantic agent's fact cache there, and the consumer's wait before it defers."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
from agent_helpers import ORG, chat, produce, query, read_json, work
from conftest import StartPipeline

from agents import MemoryStore, PipelineConfig, PipelineError
from agents.memory.base import Applied
from agents.memory.episodic import EpisodicAgent
from agents.pipeline.apply_process import ApplyRequest, _transaction
from agents.store.sqlite import Writes
from agents.work import work_encoder
from gateway.streamlog.embedded import EmbeddedLog

EVENTS = 300


def conversation(count: int, user: str = "alice") -> list[dict[str, object]]:
    """Plain messages, and every third a changing preference (a superseded fact)."""
    return [
        chat(f"My favourite colour is colour-{i}" if i % 3 == 0 else f"Note {i}", user=user)
        for i in range(count)
    ]


def contents(database: Path) -> list[tuple[str, str, int]]:
    return query(
        database, "SELECT memory_type, content, version FROM memories ORDER BY memory_type, content"
    )


@pytest.mark.parametrize("apply_process", [True, False])
async def test_both_writers_make_the_same_memories(
    log: EmbeddedLog, start_pipeline: StartPipeline, tmp_path: Path, apply_process: bool
) -> None:
    await produce(log, "chat-messages", conversation(EVENTS))
    pipeline = await start_pipeline(apply_process=apply_process)
    await pipeline.worker.wait_idle(30)
    if apply_process:
        assert pipeline.process is not None and pipeline.process.pid not in (None, os.getpid())
    else:
        assert pipeline.process is None
    database = tmp_path / "data" / "memory.sqlite3"
    facts = [c for c in contents(database) if c[0] == "semantic"]
    # One fact, superseded by every later statement (every third event from 0).
    assert facts == [("semantic", f"My favourite colour is colour-{EVENTS - 3}", EVENTS // 3)]
    assert len(contents(database)) == 1 + EVENTS - EVENTS // 3
    updates = await read_json(log, "memory-updates")
    assert len(updates) == EVENTS
    assert query(database, "SELECT count(*) FROM applied") == [(EVENTS,)]


async def test_a_killed_apply_process_stops_the_pipeline_and_a_restart_loses_nothing(
    log: EmbeddedLog, start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    await produce(log, "chat-messages", conversation(EVENTS))
    first = await start_pipeline()
    await first.worker.wait_idle(30)
    assert first.process is not None and first.process.pid is not None
    os.kill(first.process.pid, signal.SIGKILL)
    await produce(log, "chat-messages", conversation(EVENTS, user="bob"))
    with pytest.raises(PipelineError, match="apply process ended"):
        async with asyncio.timeout(10):
            await first.wait()
    await first.stop(5)

    second = await start_pipeline()
    await second.worker.wait_idle(30)
    database = tmp_path / "data" / "memory.sqlite3"
    for user in ("alice", "bob"):
        rows = query(database, "SELECT count(*) FROM memories WHERE user_id = ?", (user,))
        assert rows == [(1 + EVENTS - EVENTS // 3,)]
    updates = await read_json(log, "memory-updates")
    assert len(updates) == 2 * EVENTS
    assert len({u["id"] for u in updates}) == 2 * EVENTS  # memory:version:op, each once


async def test_the_fact_cache_sees_what_another_connection_changed(
    log: EmbeddedLog, start_pipeline: StartPipeline
) -> None:
    await produce(log, "chat-messages", [chat("I like green tea")])
    pipeline = await start_pipeline()
    await pipeline.worker.wait_idle(30)
    (fact,) = await pipeline.store.list_memories(
        organization_id=ORG, user_id="alice", memory_type="semantic"
    )
    # Deleted through the parent's connection: the child's cache still holds the fact.
    async with pipeline.store.transaction() as tx:
        await tx.delete_memory(fact.id)
    await produce(log, "chat-messages", [chat("I like green tea")])
    await pipeline.worker.wait_idle(30)
    again = await pipeline.store.list_memories(
        organization_id=ORG, user_id="alice", memory_type="semantic"
    )
    # A new fact, not a new version of the deleted one (which would update no row).
    assert [(m.content, m.version) for m in again] == [("I like green tea", 1)]
    assert again[0].id != fact.id


class FragileAgent(EpisodicAgent):
    def apply_sync(self, tx: Writes, items: Sequence[object], now: int) -> list[Applied]:
        raise ValueError("cannot handle this")


async def test_an_agent_failure_rolls_back_the_batch_but_commits_the_queued_writes(
    store: MemoryStore,
) -> None:
    db = sqlite3.connect(store.path, isolation_level=None)
    try:
        agent = FragileAgent(PipelineConfig(), store)
        items = [(work("a", "episodic", offset=0), None)]
        request = ApplyRequest(
            memory_type="episodic",
            items=work_encoder.encode(items),
            maybe=[],
            now=1,
            before=[(Writes.save_offsets, ("before", {("chat-messages", 0): 7}))],
            with_batch=[(Writes.save_offsets, ("with-batch", {("chat-messages", 0): 1}))],
            after=[(Writes.save_published, (42,))],
            prepared=None,
        )
        reply = _transaction(db, {"episodic": agent}, request)
    finally:
        db.close()
    assert reply[0] == "ok" and reply[1] == 0 and reply[3] is not None
    assert "cannot handle this" in reply[3]
    assert await store.offsets("before") == {("chat-messages", 0): 7}
    assert await store.offsets("with-batch") == {}
    assert await store.fetch("SELECT count(*) FROM memories") == [(0,)]
    assert await store.fetch("SELECT value FROM meta WHERE key = 'updates_published'") == [("42",)]


@pytest.mark.parametrize(("defer_wait_s", "deferred"), [(10.0, False), (0.0, True)])
async def test_a_full_queue_is_waited_for_before_it_is_deferred(
    log: EmbeddedLog, start_pipeline: StartPipeline, defer_wait_s: float, deferred: bool
) -> None:
    await produce(log, "chat-messages", [chat(f"Note {i}") for i in range(EVENTS)])
    pipeline = await start_pipeline(
        agent_queue_size=50, agent_batch=10, batch_records=20, defer_wait_s=defer_wait_s
    )
    await pipeline.worker.wait_idle(30)
    lane = pipeline.worker.lanes["episodic"]
    assert lane.stats.applied == EVENTS
    assert (lane.stats.deferred > 0) is deferred
    assert (pipeline.worker.stats.queue_waits > 0) is not deferred
