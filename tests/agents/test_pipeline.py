"""The pipeline end to end, in process: events produced to a real log become memories,
and every change is a memory update in ``memory-updates``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from agent_helpers import ORG, ROOT, action, chat, envelope, interaction, produce, query, read_json
from conftest import StartPipeline

from agents import ChainStep, MemoryPipeline, PipelineConfig, PipelineConfigError, PipelineLocked
from gateway.smartmodules import SmartModuleRegistry
from gateway.streamlog.embedded import EmbeddedLog


async def test_events_become_memories_and_memory_updates(
    log: EmbeddedLog, start_pipeline: StartPipeline
) -> None:
    await produce(
        log,
        "user-events",
        [
            interaction("opened settings", 0.8),
            interaction("hovered a button", 0.3),  # below event-filter's min_importance
            envelope(
                "app_event",
                {
                    "event_type": "preference",
                    "source": "app",
                    "importance": 0.9,
                    "payload": {"statement": "Prefers dark mode"},
                },
            ),
            envelope(
                "sensor_data", {"sensor_id": "t1", "readings": {"c": 21.0}, "importance": 0.9}
            ),
        ],
    )
    await produce(
        log,
        "chat-messages",
        [
            chat("My name is Alice."),
            chat("I like green tea"),
            chat("I really like green tea!"),
            chat("Book me a table for two", user="bob"),
            envelope("realtime_message", {"channel": "typing", "data": {"session_id": "s1"}}),
        ],
    )
    await produce(
        log, "agent-actions", [action("planner", step) for step in ("search", "select", "book")]
    )
    pipeline = await start_pipeline()
    await pipeline.worker.wait_idle(20)

    store = pipeline.store
    alice = await store.list_memories(organization_id=ORG, user_id="alice")
    by_type = Counter(m.memory_type for m in alice)
    assert by_type == {"episodic": 1, "semantic": 2, "core": 1, "procedural": 1, "working": 1}
    contents = {m.memory_type + ":" + m.content for m in alice}
    assert "episodic:opened settings" in contents  # through data-transform
    assert "semantic:Prefers dark mode" in contents  # app_event passes data-transform by
    assert "semantic:I really like green tea!" in contents  # superseded the first statement
    assert "core:name: Alice" in contents
    assert await store.count(organization_id=ORG, user_id="bob") == 1

    updates = await read_json(log, "memory-updates")
    memories = {m.id: m for m in alice} | {
        m.id: m for m in await store.list_memories(organization_id=ORG, user_id="bob")
    }
    created = Counter(u["payload"]["memory_id"] for u in updates if u["payload"]["op"] == "created")
    assert created == Counter(list(memories))  # exactly one "created" per memory
    for update in updates:
        assert update["type"] == "memory_update"
        assert update["id"] == "{memory_id}:{version}:{op}".format(**update["payload"])
        assert update["user_id"] == update["payload"]["user_id"]
    assert len({u["id"] for u in updates}) == len(updates)
    # Every version is published: 1 + 1 (green tea) + 3 (procedure) + ...
    assert len(updates) == sum(m.version for m in memories.values())
    episodic = next(m for m in alice if m.memory_type == "episodic")
    update = next(u for u in updates if u["payload"]["memory_id"] == episodic.id)
    assert update["payload"]["source"]["topic"] == "user-events"

    stats = pipeline.worker.stats
    assert stats.records == 12 and stats.no_memory == 1 and stats.rejected == 0


async def test_live_events_are_picked_up(log: EmbeddedLog, start_pipeline: StartPipeline) -> None:
    pipeline = await start_pipeline()
    await pipeline.worker.wait_idle(5)
    await produce(log, "chat-messages", [chat(f"message {i}") for i in range(50)])
    await pipeline.worker.wait_idle(10)
    assert (
        await pipeline.store.count(organization_id=ORG, user_id="alice", memory_type="episodic")
        == 50
    )


async def test_restart_resumes_without_duplicates(
    log: EmbeddedLog, start_pipeline: StartPipeline
) -> None:
    await produce(log, "chat-messages", [chat(f"first {i}") for i in range(30)])
    first = await start_pipeline()
    await first.worker.wait_idle(10)
    await first.stop()
    await produce(log, "chat-messages", [chat(f"second {i}") for i in range(30)])
    second = await start_pipeline()
    await second.worker.wait_idle(10)
    assert await second.store.count(organization_id=ORG, user_id="alice") == 60
    updates = await read_json(log, "memory-updates")
    assert len(updates) == 60 and len({u["id"] for u in updates}) == 60
    # The committed offsets are also copied to the log, for lag tools.
    mirrored = await log.fetch_offsets("memory-pipeline", "chat-messages")
    assert sum(mirrored.values()) >= 30


async def test_rate_anomaly_becomes_an_audit_record(
    log: EmbeddedLog, start_pipeline: StartPipeline
) -> None:
    start = int(time.time() * 1000) // 60_000 * 60_000 - 20 * 60_000
    events = []
    for window in range(8):
        events += [
            envelope(
                "user_interaction",
                {"action": "click", "importance": 0.2},
                ts=start + window * 60_000 + i,
            )
            for i in range(2)
        ]
    events += [
        envelope(
            "user_interaction", {"action": "click", "importance": 0.2}, ts=start + 8 * 60_000 + i
        )
        for i in range(30)
    ]
    await produce(log, "user-events", events)
    pipeline = await start_pipeline(anomaly_warmup=5, anomaly_min_count=10)
    await pipeline.worker.wait_idle(10)
    audit = await read_json(log, "audit-logs")
    assert len(audit) == 1
    record = audit[0]
    assert (
        record["type"] == "log_entry"
        and record["user_id"] == "alice"
        and record["organization_id"] == ORG
    )
    assert record["payload"]["level"] == "warning"
    assert record["payload"]["metadata"]["kind"] == "event_rate_anomaly"
    assert record["payload"]["metadata"]["count"] == 10
    assert "user alice sent 10 user_interaction events" in record["payload"]["message"]
    # The low-importance clicks made no memories, yet they were counted.
    assert await pipeline.store.count(organization_id=ORG, user_id="alice") == 0
    windows = await pipeline.store.aggregates(organization_id=ORG, user_id="alice")
    assert [w[2] for w in windows] == [2] * 8 + [30]


async def test_sensor_anomaly_becomes_an_audit_record(
    log: EmbeddedLog, start_pipeline: StartPipeline
) -> None:
    readings = [21.0, 21.2, 20.9, 21.1, 21.0, 20.8, 21.2, 21.1, 21.0, 20.9, 21.1, 35.5]
    await produce(
        log,
        "user-events",
        [
            envelope("sensor_data", {"sensor_id": "room-4", "readings": {"celsius": r}})
            for r in readings
        ],
    )
    pipeline = await start_pipeline()
    await pipeline.worker.wait_idle(10)
    audit = await read_json(log, "audit-logs")
    assert [a["payload"]["metadata"]["kind"] for a in audit] == ["sensor_anomaly"]
    assert audit[0]["payload"]["metadata"]["value"] == 35.5


async def test_bad_records_are_rejected_and_kept(
    log: EmbeddedLog, start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    no_org = interaction("clicked", 0.9)
    no_org["organization_id"] = None
    no_user = chat("hello")
    no_user["user_id"] = None
    await produce(log, "user-events", [no_org, interaction("fine", 0.9)])
    await produce(
        log,
        "chat-messages",
        [b"not json", b'{"type": "chat_message", "payload": {}}', no_user, chat("ok")],
    )
    pipeline = await start_pipeline()
    await pipeline.worker.wait_idle(10)
    rows = sorted(
        query(tmp_path / "data" / "memory.sqlite3", "SELECT topic, stage, reason FROM rejected")
    )
    assert [(r[0], r[1]) for r in rows] == [
        ("chat-messages", "classify"),
        ("chat-messages", "decode"),
        ("chat-messages", "decode"),
        ("user-events", "data-transform"),
    ]
    assert "organization_id" in rows[3][2]
    assert await pipeline.store.count(organization_id=ORG, user_id="alice") == 2


async def test_working_memories_expire_with_an_update(
    log: EmbeddedLog, start_pipeline: StartPipeline
) -> None:
    await produce(
        log,
        "chat-messages",
        [envelope("realtime_message", {"channel": "typing", "data": {"ttl_s": 1}})],
    )
    pipeline = await start_pipeline(maintenance_interval_s=0.05)
    await pipeline.worker.wait_idle(10)
    deadline = time.monotonic() + 10
    while (
        await pipeline.store.count(organization_id=ORG, user_id="alice")
        and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.05)
    await pipeline.worker.wait_idle(5)
    ops = [u["payload"]["op"] for u in await read_json(log, "memory-updates")]
    assert ops == ["created", "expired"]


# -- failing at start ------------------------------------------------------------------------------


async def test_missing_smartmodule_fails_at_start(start_pipeline: StartPipeline) -> None:
    with pytest.raises(
        PipelineConfigError,
        match=r"not installed: unknown SmartModule 'no-such-module'; known SmartModules: .*event-filter",
    ):
        await start_pipeline(chains={"user-events": (ChainStep("no-such-module"),)})


async def test_refused_params_fail_at_start(start_pipeline: StartPipeline) -> None:
    with pytest.raises(
        PipelineConfigError, match=r"chain for 'user-events' cannot start: .*min_importance"
    ):
        await start_pipeline(
            chains={"user-events": (ChainStep("event-filter", {"min_importance": 3}),)}
        )


async def test_unknown_topic_fails_at_start(start_pipeline: StartPipeline) -> None:
    with pytest.raises(PipelineConfigError, match="cannot use topic 'nope'"):
        await start_pipeline(topics=("nope",))


def test_missing_engine_fails_at_start() -> None:
    # A real interpreter where the engine's native dependency cannot be imported.
    program = (
        "import sys; sys.modules['wasmtime'] = None\n"
        "from agents import PipelineConfig, PipelineConfigError\n"
        "from agents.pipeline.chains import build_chains\n"
        "try:\n    build_chains(PipelineConfig())\n"
        "except PipelineConfigError as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert (
        "needs the SmartModule engine (gateway.smartmodules), which cannot be imported"
        in out.stdout
    )
    assert "configure no chain" in out.stdout


async def test_one_pipeline_per_data_directory(
    log: EmbeddedLog, start_pipeline: StartPipeline, tmp_path: Path, registry: SmartModuleRegistry
) -> None:
    await start_pipeline()
    second = MemoryPipeline(tmp_path / "data", log, registry=registry)
    with pytest.raises(PipelineLocked, match="already running"):
        await second.start()


async def test_no_chain_configured(log: EmbeddedLog, start_pipeline: StartPipeline) -> None:
    await produce(log, "user-events", [interaction("hovered", 0.1), interaction("clicked", 0.9)])
    pipeline = await start_pipeline(chains={})
    await pipeline.worker.wait_idle(10)
    memories = await pipeline.store.list_memories(organization_id=ORG, user_id="alice")
    assert sorted(m.content for m in memories) == ["clicked", "hovered"]
    assert json.loads(json.dumps(pipeline.worker.chains)) == {}


async def test_a_record_that_crashes_a_module_is_rejected_alone(
    log: EmbeddedLog, tmp_path: Path, registry: SmartModuleRegistry
) -> None:
    # A test fixture module of the engine's suite that traps on the value "panic".
    fixtures = ROOT / "tests" / "gateway" / "smartmodules" / "fixtures"
    with_fixtures = SmartModuleRegistry(registry.engine, [fixtures])
    await produce(log, "chat-messages", [chat("before"), b"panic", chat("after")])
    config = PipelineConfig(chains={"chat-messages": (ChainStep("sdk_misbehave"),)})
    pipeline = MemoryPipeline(tmp_path / "data", log, config, registry=with_fixtures)
    await pipeline.start()
    try:
        await pipeline.worker.wait_idle(10)
        memories = await pipeline.store.list_memories(organization_id=ORG, user_id="alice")
        assert sorted(m.content for m in memories) == ["after", "before"]
        rejected = query(
            tmp_path / "data" / "memory.sqlite3", "SELECT stage, reason, value FROM rejected"
        )
        assert len(rejected) == 1
        stage, reason, value = rejected[0]
        assert (stage, value) == ("sdk_misbehave", b"panic")
        assert "trap" in reason.lower() or "unreachable" in reason.lower()
    finally:
        await pipeline.stop()
