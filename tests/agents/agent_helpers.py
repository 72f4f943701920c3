"""Helpers for the memory pipeline tests (conftest puts this directory on ``sys.path``)."""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agents.work import MemoryWork, Source
from gateway.streamlog.interface import NewRecord, Record, StreamLog

ROOT = Path(__file__).resolve().parents[2]
TOPICS_FILE = ROOT / "gateway" / "topics.toml"
ORG = "acme"
_ids = itertools.count()


def envelope(
    type_: str,
    payload: dict[str, Any],
    *,
    user: str | None = "alice",
    org: str | None = ORG,
    ts: int | None = None,
    id: str | None = None,
) -> dict[str, Any]:
    return {
        "type": type_,
        "id": id or f"ev-{next(_ids)}",
        "organization_id": org,
        "user_id": user,
        "timestamp": int(time.time() * 1000) if ts is None else ts,
        "payload": payload,
    }


def chat(content: str, *, role: str = "user", user: str = "alice", **fields: Any) -> dict[str, Any]:
    extra = {k: v for k, v in fields.items() if k not in ("ts",)}
    return envelope(
        "chat_message",
        {"conversation_id": "c1", "role": role, "content": content, **extra},
        user=user,
        ts=fields.get("ts"),
    )


def interaction(
    action: str, importance: float = 0.9, *, user: str = "alice", **context: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {"action": action, "importance": importance}
    if context:
        payload["context"] = context
    return envelope("user_interaction", payload, user=user)


def action(
    agent: str, name: str, session: str | None = "s1", *, user: str = "alice", success: bool = True
) -> dict[str, Any]:
    payload: dict[str, Any] = {"agent_id": agent, "action": name, "success": success}
    if session is not None:
        payload["session_id"] = session
    return envelope("agent_action", payload, user=user)


async def produce(log: StreamLog, topic: str, events: Iterable[dict[str, Any] | bytes]) -> None:
    records = []
    for event in events:
        if isinstance(event, bytes):
            records.append(NewRecord(value=event, key=b"raw"))
        else:
            records.append(
                NewRecord(value=json.dumps(event).encode(), key=str(event.get("user_id")).encode())
            )
    await log.produce_batch(topic, records)


async def read_topic(log: StreamLog, topic: str) -> list[Record]:
    description = await log.describe_topic(topic)
    out: list[Record] = []
    for info in description.partitions:
        out.extend(await log.read(topic, info.partition, info.start_offset, 1_000_000))
    return out


async def read_json(log: StreamLog, topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in await read_topic(log, topic)]


def work(
    content: str,
    memory_type: str = "semantic",
    *,
    offset: int = 0,
    user: str = "alice",
    **fields: Any,
) -> MemoryWork:
    """A classified item as the manager makes it, for driving agents directly."""
    values: dict[str, Any] = {
        "source": Source("chat-messages", 0, offset),
        "memory_type": memory_type,
        "rule": "test",
        "organization_id": ORG,
        "user_id": user,
        "content": content,
        "importance": 0.6,
        "timestamp": 1_763_000_000_000 + offset,
        "event_type": "chat_message",
    }
    values.update(fields)
    return MemoryWork(**values)


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Read the memory database from outside the pipeline (as an operator would)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return list(db.execute(sql, params))
