"""The memory database: schema, tenancy on every query, keyword search, history."""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path

import msgspec
import pytest
from agent_helpers import ORG, work

from agents import MemoryStore, PipelineConfig
from agents.memory.base import record_changes
from agents.memory.episodic import EpisodicAgent


async def fill(store: MemoryStore) -> None:
    agent = EpisodicAgent(PipelineConfig(), store)
    items = [
        work("booked a table at the Italian place", "episodic", offset=1),
        work("asked about Italian wines", "episodic", offset=2),
        work("booked a flight to Porto", "episodic", offset=3, user="bob"),
        work("booked a hotel in Porto", "episodic", offset=4, organization_id="other-org"),
    ]
    async with store.transaction() as tx:
        results = await agent.apply(tx, items, 1)
        await record_changes(tx, [c for _, cs in results for c in cs], 1)


async def test_every_query_is_scoped_to_one_user(store: MemoryStore) -> None:
    await fill(store)
    alice = await store.list_memories(organization_id=ORG, user_id="alice")
    assert len(alice) == 2 and {m.user_id for m in alice} == {"alice"}
    assert await store.count(organization_id=ORG, user_id="bob") == 1
    assert await store.count(organization_id="other-org", user_id="alice") == 1
    bobs = (await store.list_memories(organization_id=ORG, user_id="bob"))[0]
    # Another user's memory is invisible, even by id.
    assert await store.get(organization_id=ORG, user_id="alice", memory_id=bobs.id) is None
    assert await store.history(organization_id=ORG, user_id="alice", memory_id=bobs.id) == []
    assert await store.keyword_search(organization_id=ORG, user_id="alice", text="Porto") == []


def test_tenancy_is_a_required_argument_of_every_query_function() -> None:
    for name in ("get", "list_memories", "count", "history", "keyword_search", "aggregates"):
        parameters = inspect.signature(getattr(MemoryStore, name)).parameters
        for field in ("organization_id", "user_id"):
            assert parameters[field].kind is inspect.Parameter.KEYWORD_ONLY, (name, field)
            assert parameters[field].default is inspect.Parameter.empty, (name, field)


async def test_keyword_search(store: MemoryStore) -> None:
    await fill(store)
    found = await store.keyword_search(organization_id=ORG, user_id="alice", text="italian")
    assert sorted(m.content for m in found) == [
        "asked about Italian wines",
        "booked a table at the Italian place",
    ]
    found = await store.keyword_search(
        organization_id=ORG, user_id="alice", text='booked "italian"*'
    )
    assert [m.content for m in found] == ["booked a table at the Italian place"]
    assert await store.keyword_search(organization_id=ORG, user_id="alice", text="   ") == []


async def test_search_follows_updates_and_deletes(store: MemoryStore) -> None:
    await fill(store)
    memory = (await store.keyword_search(organization_id=ORG, user_id="alice", text="wines"))[0]
    async with store.transaction() as tx:
        await tx.update_memory(
            msgspec.structs.replace(memory, content="asked about Spanish cheese", version=2)
        )
    assert await store.keyword_search(organization_id=ORG, user_id="alice", text="wines") == []
    assert len(await store.keyword_search(organization_id=ORG, user_id="alice", text="cheese")) == 1
    async with store.transaction() as tx:
        await tx.delete_memory(memory.id)
    assert await store.keyword_search(organization_id=ORG, user_id="alice", text="cheese") == []


async def test_touch_counts_accesses(store: MemoryStore) -> None:
    await fill(store)
    memory = (await store.list_memories(organization_id=ORG, user_id="alice"))[0]
    await store.get(organization_id=ORG, user_id="alice", memory_id=memory.id, touch=True)
    touched = await store.get(organization_id=ORG, user_id="alice", memory_id=memory.id, touch=True)
    assert touched is not None and touched.access_count == 2


async def test_a_failed_transaction_leaves_nothing(store: MemoryStore) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.add_outbox([("memory-updates", b"alice", b"{}", "k")])
            await tx.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
            raise RuntimeError("boom")
    assert await store.outbox_batch(10) == [] and store.outbox_count == 0
    assert await store.fetch("SELECT * FROM meta WHERE key = 'x'") == []


async def test_schema_columns(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "memory.sqlite3")
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "memory.sqlite3") as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(memories)")}
        tables = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert {
        "id",
        "organization_id",
        "user_id",
        "agent_id",
        "session_id",
        "memory_type",
        "content",
        "importance",
        "metadata",
        "hash",
        "created_at",
        "updated_at",
        "expires_at",
        "access_count",
        "version",
        "source_topic",
        "source_partition",
        "source_offset",
    } <= columns
    assert {
        "memory_history",
        "memories_fts",
        "applied",
        "consumer_offsets",
        "deferred",
        "outbox",
        "rejected",
    } <= tables
    assert journal == "wal"
