"""How the memory database is written: the full-text index kept in step without triggers,
the history as the queue of memory updates, bookkeeping committed with the next
transaction, the recheck horizon, and the upgrade of a version 1 database."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from agent_helpers import ORG, chat, envelope, produce, query, read_json
from conftest import StartPipeline

from agents import MemoryStore
from agents.store.sqlite import Writes, now_ms
from agents.updates import OutboxPublisher
from agents.work import Source
from gateway.streamlog.embedded import EmbeddedLog


async def test_full_text_index_matches_the_memories_after_every_kind_of_change(
    log: EmbeddedLog, start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    await produce(
        log,
        "chat-messages",
        [
            chat("My name is Alice."),
            chat("My name is Alicia."),  # the core block's line is replaced
            chat("I like green tea"),
            chat("I really like green tea!"),  # supersedes the fact
            chat("Talked about the garden"),
            envelope("realtime_message", {"channel": "typing", "data": {"session_id": "s1"}}),
        ],
    )
    pipeline = await start_pipeline()
    await pipeline.worker.wait_idle(20)
    assert await pipeline.worker.expire_working(now_ms() + 10 * 3_600_000) == 1
    store = pipeline.store
    async with store.transaction() as tx:
        # Raises when the index and the memories table disagree (rank 1: compare the
        # index with the content of the external table).
        await tx.execute(
            "INSERT INTO memories_fts (memories_fts, rank) VALUES ('integrity-check', 1)"
        )
    search = store.keyword_search
    assert [m.content for m in await search(organization_id=ORG, user_id="alice", text="really")]
    assert await search(organization_id=ORG, user_id="alice", text="Alice") == []
    assert len(await search(organization_id=ORG, user_id="alice", text="Alicia")) == 1
    assert len(await search(organization_id=ORG, user_id="alice", text="garden")) == 1
    database = tmp_path / "data" / "memory.sqlite3"
    assert query(database, "SELECT name FROM sqlite_master WHERE type = 'trigger'") == []


async def test_the_published_position_is_saved_and_nothing_is_published_twice(
    log: EmbeddedLog, start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    await produce(log, "chat-messages", [chat(f"note {i}") for i in range(40)])
    first = await start_pipeline()
    await first.worker.wait_idle(10)
    await first.stop()
    database = tmp_path / "data" / "memory.sqlite3"
    head = query(database, "SELECT max(id) FROM memory_history")[0][0]
    assert head == 40
    assert query(database, "SELECT value FROM meta WHERE key = 'updates_published'") == [("40",)]
    second = await start_pipeline()
    await second.worker.wait_idle(10)
    assert second.worker.publisher.produced == 0
    assert len(await read_json(log, "memory-updates")) == 40


async def test_queued_bookkeeping_survives_a_failed_transaction(store: MemoryStore) -> None:
    store.later(Writes.execute, "INSERT INTO meta (key, value) VALUES ('queued', 'yes')")
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO meta (key, value) VALUES ('own', 'yes')")
            raise RuntimeError("boom")
    assert await store.fetch("SELECT key FROM meta WHERE key IN ('queued', 'own')") == []
    async with store.transaction():
        pass  # commits what was queued, with nothing of its own
    assert await store.fetch("SELECT key FROM meta WHERE key IN ('queued', 'own')") == [("queued",)]


async def test_recheck_horizon_covers_applied_and_deferred_sources(store: MemoryStore) -> None:
    async with store.transaction() as tx:
        await tx.mark_applied([(Source("chat-messages", 0, 7), None)], 1)
        await tx.defer([("semantic", Source("chat-messages", 0, 12), b"x")])
        await tx.mark_applied([(Source("user-events", 3, 2, 1), None)], 1)
    assert await store.recheck_horizon() == {("chat-messages", 0): 13, ("user-events", 3): 3}


def _make_version_1(path: Path) -> None:
    """Turn a new database back into the version 1 layout, with one memory update
    published (history id 1) and one still waiting in the outbox."""
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            DROP INDEX memories_fact_hash;
            CREATE INDEX memories_hash ON memories (organization_id, user_id, memory_type, hash);
            CREATE INDEX memory_history_tenant
                ON memory_history (organization_id, user_id, memory_id);
            ALTER TABLE memory_history DROP COLUMN agent_id;
            CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
                INSERT INTO memories_fts (rowid, content) VALUES (new.rowid, new.content); END;
            CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
                INSERT INTO memories_fts (memories_fts, rowid, content)
                VALUES ('delete', old.rowid, old.content); END;
            CREATE TRIGGER memories_fts_update AFTER UPDATE OF content ON memories BEGIN
                INSERT INTO memories_fts (memories_fts, rowid, content)
                VALUES ('delete', old.rowid, old.content);
                INSERT INTO memories_fts (rowid, content) VALUES (new.rowid, new.content); END;
            UPDATE meta SET value = '1' WHERE key = 'schema_version';
            DELETE FROM meta WHERE key = 'updates_published';
            INSERT INTO memory_history (memory_id, organization_id, user_id, memory_type,
                version, op, content, importance, metadata, hash, changed_at)
            VALUES ('mem_old', 'acme', 'alice', 'episodic', 1, 'created', 'old', 0.5, '{}',
                'h', 1);
            INSERT INTO outbox (topic, key, value, idempotency_key, created_at)
            VALUES ('memory-updates', CAST('alice' AS BLOB), CAST('{"waiting": true}' AS BLOB),
                'mem_waiting:1:created', 1);
            """
        )


async def test_a_version_1_database_is_upgraded_in_place(tmp_path: Path, log: EmbeddedLog) -> None:
    path = tmp_path / "memory.sqlite3"
    store = MemoryStore(path)
    await store.open()
    await store.close()
    _make_version_1(path)

    store = MemoryStore(path)
    await store.open()
    try:
        assert query(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [("2",)]
        assert query(path, "SELECT name FROM sqlite_master WHERE type = 'trigger'") == []
        columns = {row[1] for row in query(path, "PRAGMA table_info(memory_history)")}
        assert "agent_id" in columns
        # What was written before the upgrade was queued in the outbox: the history row is
        # not published again, the outbox row is.
        assert query(path, "SELECT value FROM meta WHERE key = 'updates_published'") == [("1",)]
        assert store.outbox_count == 1
        publisher = OutboxPublisher(log, store)
        await publisher.flush()
        assert [u for u in await read_json(log, "memory-updates")] == [{"waiting": True}]
    finally:
        await store.close()


async def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    store = MemoryStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError, match="schema version 99"):
        await MemoryStore(path).open()


async def test_the_outbox_publisher_stops_when_cancelled_as_it_is_woken(
    log: EmbeddedLog, store: MemoryStore
) -> None:
    # Stopping the pipeline cancels the publisher; an agent's commit may wake it in the
    # same pass of the loop. The cancellation must still end it, or the stop waits forever.
    publisher = OutboxPublisher(log, store)
    task = asyncio.create_task(publisher.run())
    while publisher.position is None:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    publisher.wake()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=3.0)
    assert done == {task} and task.cancelled()
