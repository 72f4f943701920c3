"""Each memory agent on a real memory database, driven with classified items."""

from __future__ import annotations

import json
from collections.abc import Sequence

import msgspec
import pytest
from agent_helpers import ORG, work

from agents import BlockTooLarge, MemoryStore, PipelineConfig, UnknownBlock
from agents.memory.base import MemoryAgent, record_changes
from agents.memory.core import CoreAgent
from agents.memory.episodic import EpisodicAgent
from agents.memory.procedural import ProceduralAgent
from agents.memory.semantic import SemanticAgent
from agents.memory.working import WorkingAgent
from agents.store.sqlite import Change, now_ms
from agents.updates import OutboxRow, history_update_row
from agents.work import MemoryWork

NOW = 1_763_000_100_000


async def apply(store: MemoryStore, agent: MemoryAgent, *items: MemoryWork) -> list[Change]:
    async with store.transaction() as tx:
        results = await agent.apply(tx, items, NOW)
        changes = [c for _, cs in results for c in cs]
        await record_changes(tx, changes, NOW)
    return changes


def ops(changes: Sequence[Change]) -> list[tuple[str, str]]:
    return [(c.op, c.memory.memory_type) for c in changes]


# -- episodic ----------------------------------------------------------------------------------


async def test_episodic_keeps_every_experience_with_its_time(store: MemoryStore) -> None:
    agent = EpisodicAgent(PipelineConfig(), store)
    changes = await apply(
        store,
        agent,
        *(work(f"opened page {i}", "episodic", offset=i) for i in range(3)),
        work("opened page 0", "episodic", offset=9),
    )
    assert ops(changes) == [("created", "episodic")] * 4
    memories = await store.list_memories(organization_id=ORG, user_id="alice")
    assert len(memories) == 4  # the same words twice are two experiences
    assert sorted(m.event_time for m in memories) == [1_763_000_000_000 + i for i in (0, 1, 2, 9)]
    assert all(m.source is not None and m.source.topic == "chat-messages" for m in memories)


# -- semantic ----------------------------------------------------------------------------------


async def test_semantic_exact_duplicate_reinforces(store: MemoryStore) -> None:
    agent = SemanticAgent(PipelineConfig(), store)
    first = await apply(store, agent, work("I like green tea", offset=1))
    again = await apply(store, agent, work("i like  GREEN tea!", offset=2, importance=0.9))
    assert ops(first) == [("created", "semantic")] and ops(again) == [("updated", "semantic")]
    memory = again[0].memory
    assert memory.id == first[0].memory.id
    assert (memory.version, memory.metadata["mentions"], memory.importance) == (2, 2, 0.9)
    assert memory.content == "I like green tea"  # the stored wording stays
    assert await store.count(organization_id=ORG, user_id="alice") == 1


async def test_semantic_near_duplicate_supersedes_and_keeps_history(store: MemoryStore) -> None:
    agent = SemanticAgent(PipelineConfig(), store)
    created = await apply(store, agent, work("I am allergic to peanuts", offset=1))
    merged = await apply(store, agent, work("I am allergic to peanuts and shellfish", offset=2))
    assert ops(merged) == [("updated", "semantic")]
    memory = merged[0].memory
    assert memory.id == created[0].memory.id
    assert memory.content == "I am allergic to peanuts and shellfish"
    assert memory.metadata["superseded_by"] == "similarity"
    assert memory.metadata["similarity"] >= 0.75
    history = await store.history(organization_id=ORG, user_id="alice", memory_id=memory.id)
    assert [(h.version, h.op, h.content) for h in history] == [
        (1, "created", "I am allergic to peanuts"),
        (2, "updated", "I am allergic to peanuts and shellfish"),
    ]
    assert history[0].source is not None and history[0].source.offset == 1


async def test_semantic_different_facts_stay_apart(store: MemoryStore) -> None:
    agent = SemanticAgent(PipelineConfig(), store)
    facts = [
        "I like tea",
        "I like coffee",
        "I prefer window seats",
        "I have a dog named Rex",
        "I work at Globex",
    ]
    changes = await apply(store, agent, *(work(f, offset=i) for i, f in enumerate(facts)))
    assert ops(changes) == [("created", "semantic")] * len(facts)


async def test_semantic_same_subject_supersedes(store: MemoryStore) -> None:
    agent = SemanticAgent(PipelineConfig(), store)
    await apply(
        store, agent, work("My favourite colour is blue", offset=1, subject="favourite colour")
    )
    await apply(store, agent, work("I like hiking", offset=2))
    changed = await apply(
        store, agent, work("My favourite colour is now green", offset=3, subject="favourite colour")
    )
    assert ops(changed) == [("updated", "semantic")]
    assert changed[0].memory.metadata["superseded_by"] == "subject"
    contents = {m.content for m in await store.list_memories(organization_id=ORG, user_id="alice")}
    assert contents == {"My favourite colour is now green", "I like hiking"}


async def test_semantic_is_per_user(store: MemoryStore) -> None:
    agent = SemanticAgent(PipelineConfig(), store)
    await apply(
        store,
        agent,
        work("I like green tea", offset=1),
        work("I like green tea", offset=2, user="bob"),
    )
    assert await store.count(organization_id=ORG, user_id="alice") == 1
    assert await store.count(organization_id=ORG, user_id="bob") == 1


async def test_semantic_threshold_is_configurable(store: MemoryStore) -> None:
    strict = SemanticAgent(PipelineConfig(semantic_threshold=0.99), store)
    await apply(store, strict, work("I am allergic to peanuts", offset=1))
    changes = await apply(store, strict, work("I am allergic to peanuts and shellfish", offset=2))
    assert ops(changes) == [("created", "semantic")]


# -- core --------------------------------------------------------------------------------------


def core_agent(store: MemoryStore, limit: int = 60) -> CoreAgent:
    config = PipelineConfig(core_blocks={"human": limit, "persona": 100})
    return CoreAgent(config, store, SemanticAgent(config, store))


async def test_core_block_lines_replace_by_subject(store: MemoryStore) -> None:
    agent = core_agent(store, limit=200)
    await apply(store, agent, work("name: Alice", "core", offset=1, subject="name", block="human"))
    await apply(store, agent, work("role: nurse", "core", offset=2, subject="role", block="human"))
    changes = await apply(
        store, agent, work("name: Alicia", "core", offset=3, subject="name", block="human")
    )
    assert ops(changes) == [("updated", "core")]
    block = await agent.block(organization_id=ORG, user_id="alice", block="human")
    assert block is not None
    assert (block.content, block.version) == ("name: Alicia\nrole: nurse", 3)
    assert block.metadata["block"] == "human" and block.metadata["limit"] == 200
    # The same line again changes nothing.
    assert (
        await apply(
            store, agent, work("role: nurse", "core", offset=4, subject="role", block="human")
        )
        == []
    )


async def test_core_block_limit_moves_oldest_lines_to_semantic(store: MemoryStore) -> None:
    agent = core_agent(store, limit=40)
    await apply(store, agent, work("name: Alice", "core", offset=1, subject="name", block="human"))
    await apply(
        store, agent, work("role: data scientist", "core", offset=2, subject="role", block="human")
    )
    changes = await apply(
        store, agent, work("location: Lisbon", "core", offset=3, subject="location", block="human")
    )
    assert ops(changes) == [("updated", "core"), ("created", "semantic")]
    block = await agent.block(organization_id=ORG, user_id="alice", block="human")
    assert block is not None and len(block.content) <= 40
    assert block.content == "role: data scientist\nlocation: Lisbon"
    facts = await store.list_memories(organization_id=ORG, user_id="alice", memory_type="semantic")
    assert [(f.content, f.subject, f.metadata["evicted_from_block"]) for f in facts] == [
        ("name: Alice", "name", "human")
    ]


async def test_core_line_longer_than_the_block_becomes_a_fact(store: MemoryStore) -> None:
    agent = core_agent(store, limit=20)
    changes = await apply(
        store,
        agent,
        work(
            "role: principal site reliability engineer",
            "core",
            offset=1,
            subject="role",
            block="human",
        ),
    )
    assert ops(changes) == [("created", "semantic")]
    assert await agent.block(organization_id=ORG, user_id="alice", block="human") is None


async def test_core_editing_api(store: MemoryStore) -> None:
    agent = core_agent(store, limit=40)
    await agent.upsert_line(
        organization_id=ORG, user_id="alice", block="human", text="name: Alice", subject="name"
    )
    await agent.upsert_line(
        organization_id=ORG, user_id="alice", block="human", text="likes: jazz", subject="likes"
    )
    await agent.remove_line(organization_id=ORG, user_id="alice", block="human", subject="likes")
    block = await agent.block(organization_id=ORG, user_id="alice", block="human")
    assert block is not None and (block.content, block.version) == ("name: Alice", 3)
    await agent.replace_block(
        organization_id=ORG, user_id="alice", block="persona", content="tone: warm\nBe brief"
    )
    persona = await agent.block(organization_id=ORG, user_id="alice", block="persona")
    assert persona is not None and persona.metadata["lines"] == [
        {"text": "tone: warm", "subject": "tone"},
        {"text": "Be brief", "subject": None},
    ]
    with pytest.raises(BlockTooLarge, match="limit 40"):
        await agent.upsert_line(organization_id=ORG, user_id="alice", block="human", text="x" * 41)
    with pytest.raises(BlockTooLarge, match="limit 40"):
        await agent.replace_block(
            organization_id=ORG, user_id="alice", block="human", content="y" * 41
        )
    with pytest.raises(UnknownBlock, match="configured blocks: human, persona"):
        await agent.upsert_line(organization_id=ORG, user_id="alice", block="nope", text="z")
    # Edits are published like any change, and kept in the history.
    history = await store.history(organization_id=ORG, user_id="alice", memory_id=block.id)
    assert [h.op for h in history] == ["created", "updated", "updated"]
    rows = await pending_updates(store)
    assert [json.loads(r[2])["payload"]["op"] for r in rows] == [
        "created",
        "updated",
        "updated",
        "created",
    ]


async def test_core_api_eviction_goes_to_semantic_without_a_source(store: MemoryStore) -> None:
    agent = core_agent(store, limit=30)
    await agent.upsert_line(
        organization_id=ORG, user_id="alice", block="human", text="name: Alice", subject="name"
    )
    changes = await agent.upsert_line(
        organization_id=ORG,
        user_id="alice",
        block="human",
        text="city: Porto and Lisbon",
        subject="city",
    )
    assert ops(changes) == [("updated", "core"), ("created", "semantic")]
    assert changes[1].memory.source is None and changes[1].memory.content == "name: Alice"


# -- working -----------------------------------------------------------------------------------


async def test_working_memories_expire_after_their_ttl(store: MemoryStore) -> None:
    agent = WorkingAgent(PipelineConfig(working_ttl_s=60), store)
    start = 1_763_000_000_000
    await apply(
        store,
        agent,
        work("typing", "working", offset=1, session_id="s1", timestamp=start),
        work("cursor", "working", offset=2, session_id="s1", timestamp=start + 30_000),
        work("short", "working", offset=3, session_id="s1", timestamp=start, ttl_s=5),
    )
    memories = await store.list_memories(
        organization_id=ORG, user_id="alice", memory_type="working"
    )
    assert {m.content: m.expires_at for m in memories} == {
        "typing": start + 60_000,
        "cursor": start + 90_000,
        "short": start + 5_000,
    }
    async with store.transaction() as tx:
        assert await agent.expire(tx, start + 4_999) == []
        expired = await agent.expire(tx, start + 60_000)
        await record_changes(tx, expired, NOW)
    assert sorted(c.memory.content for c in expired) == ["short", "typing"]
    assert all(c.op == "expired" and c.memory.metadata["expired_by"] == "ttl" for c in expired)
    left = await store.list_memories(organization_id=ORG, user_id="alice", memory_type="working")
    assert [m.content for m in left] == ["cursor"]
    # Nothing silently lost: the last version is in the history with the expiry.
    history = await store.history(
        organization_id=ORG, user_id="alice", memory_id=expired[0].memory.id
    )
    assert [h.op for h in history] == ["created", "expired"]


async def test_working_memories_are_bounded_per_session(store: MemoryStore) -> None:
    agent = WorkingAgent(PipelineConfig(working_max_per_session=3), store)
    changes = await apply(
        store,
        agent,
        *(
            work(f"step {i}", "working", offset=i, session_id="s1", timestamp=1_000 + i)
            for i in range(5)
        ),
        work("other session", "working", offset=9, session_id="s2"),
    )
    assert [c.memory.content for c in changes if c.op == "expired"] == ["step 0", "step 1"]
    kept = await store.list_memories(organization_id=ORG, user_id="alice", session_id="s1")
    assert sorted(m.content for m in kept) == ["step 2", "step 3", "step 4"]


# -- procedural --------------------------------------------------------------------------------


def step(
    name: str, offset: int, session: str = "s1", agent: str = "planner", success: bool = True
) -> MemoryWork:
    return work(
        f"{name}",
        "procedural",
        offset=offset,
        action=name,
        agent_id=agent,
        session_id=session,
        success=success,
    )


async def test_procedural_session_sequence(store: MemoryStore) -> None:
    agent = ProceduralAgent(PipelineConfig(), store)
    changes = await apply(
        store,
        agent,
        step("search", 1),
        step("select", 2),
        step("pay", 3, success=False),
        step("pay", 4),
    )
    sequence = [c.memory for c in changes if c.memory.metadata["kind"] == "sequence"]
    assert [m.version for m in sequence] == [1, 2, 3, 4]
    assert (
        sequence[-1].content
        == "Steps of agent planner in session s1:\n1. search\n2. select\n3. pay (failed)\n4. pay"
    )
    assert sequence[-1].agent_id == "planner" and sequence[-1].metadata["steps"] == 4


async def test_procedural_sequences_are_bounded(store: MemoryStore) -> None:
    agent = ProceduralAgent(PipelineConfig(procedural_max_steps=3), store)
    changes = await apply(store, agent, *(step(f"a{i}", i) for i in range(5)))
    last = changes[-1].memory
    assert (
        last.content
        == "Steps of agent planner in session s1:\n(2 earlier steps)\n3. a2\n4. a3\n5. a4"
    )


async def test_procedural_recurring_patterns(store: MemoryStore) -> None:
    agent = ProceduralAgent(PipelineConfig(procedural_min_occurrences=3), store)
    items = []
    for session in range(6):
        for i, name in enumerate(["search", "select", "book"]):
            items.append(step(name, session * 10 + i, session=f"s{session}"))
    changes = await apply(store, agent, *items)
    patterns = [c for c in changes if c.memory.metadata["kind"] == "pattern"]
    # Created when first seen 3 times, updated when the count doubles (6).
    assert [(c.op, c.memory.content) for c in patterns] == [
        ("created", "Agent planner often does: search -> select (seen 3 times)"),
        ("created", "Agent planner often does: select -> book (seen 3 times)"),
        ("created", "Agent planner often does: search -> select -> book (seen 3 times)"),
        ("updated", "Agent planner often does: search -> select (seen 6 times)"),
        ("updated", "Agent planner often does: select -> book (seen 6 times)"),
        ("updated", "Agent planner often does: search -> select -> book (seen 6 times)"),
    ]
    stored = await store.list_memories(
        organization_id=ORG, user_id="alice", memory_type="procedural"
    )
    assert sum(1 for m in stored if m.metadata["kind"] == "pattern") == 3
    assert sum(1 for m in stored if m.metadata["kind"] == "sequence") == 6


async def test_procedural_patterns_are_per_agent_and_skip_failures(store: MemoryStore) -> None:
    agent = ProceduralAgent(PipelineConfig(procedural_min_occurrences=2), store)
    changes = await apply(
        store,
        agent,
        step("a", 1, "s1", "x"),
        step("b", 2, "s1", "x"),
        step("a", 3, "s2", "y"),
        step("b", 4, "s2", "y"),
        step("a", 5, "s3", "x"),
        step("b", 6, "s3", "x", success=False),
    )
    assert not [c for c in changes if c.memory.metadata["kind"] == "pattern"]


async def pending_updates(store: MemoryStore) -> list[OutboxRow]:
    """The memory updates waiting to be produced, as the publisher will produce them."""
    return [history_update_row(r, "memory-updates") for r in await store.pending_updates(0, 100)]


async def test_changes_are_recorded_for_publishing(store: MemoryStore) -> None:
    agent = EpisodicAgent(PipelineConfig(), store)
    changes = await apply(
        store, agent, work("opened settings", "episodic", offset=5, event_id="ev-1")
    )
    rows = await pending_updates(store)
    assert len(rows) == 1 and store.outbox_count == 1
    topic, key, value, idempotency_key = rows[0]
    envelope = json.loads(value)
    memory = changes[0].memory
    assert (topic, key, idempotency_key) == ("memory-updates", b"alice", f"{memory.id}:1:created")
    assert envelope["type"] == "memory_update" and envelope["id"] == idempotency_key
    assert envelope["payload"] == {
        "op": "created",
        "memory_id": memory.id,
        "memory_type": "episodic",
        "organization_id": ORG,
        "user_id": "alice",
        "agent_id": None,
        "importance": 0.6,
        "content": "opened settings",
        "version": 1,
        "source": {"topic": "chat-messages", "partition": 0, "offset": 5},
        "timestamp": NOW,
    }
    assert memory.metadata == {"event_type": "chat_message", "rule": "test", "event_id": "ev-1"}
    assert msgspec.json.decode(value)["timestamp"] <= now_ms()
