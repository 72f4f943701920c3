"""The effectively-once test: SIGKILL the standalone pipeline at several moments, restart
it, and check that every accepted event is applied exactly once.

Each round produces events (some before the worker starts, some while it runs), starts
``python -m agents`` on the data directory and kills it with SIGKILL: early during start,
or once it has written a number of memories. A last run with ``--exit-when-idle`` catches
up. Then: one episodic memory per accepted interaction and chat message, each procedure
has exactly one version per step, pattern counts match the steps, and ``memory-updates``
holds exactly one ``created`` per memory and every version of every memory once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import ROOT, TOPICS_FILE, action, chat, interaction, produce, query, read_json

from gateway.streamlog.embedded import EmbeddedLog
from gateway.streamlog.topics import load_topics

USERS = [f"u{i}" for i in range(12)]
PROCEDURE = ["search", "select", "book"]
STEPS_PER_SESSION = 10
# How each round's worker is killed: a number of seconds after it starts, or as soon as it
# has written that many new memories.
ROUNDS: list[tuple[str, float]] = [
    ("after_s", 0.25),
    ("memories", 150),
    ("memories", 700),
    ("memories", 1),
]


class Events:
    """Makes each round's events and remembers what must come out."""

    def __init__(self) -> None:
        self.accepted: set[str] = set()
        self.filtered: set[str] = set()
        self.sessions: dict[str, int] = {}
        self.n = 0

    def batch(
        self, tag: str, interactions: int, chats: int, sessions: int
    ) -> dict[str, list[dict[str, Any]]]:
        user_events, chat_events, actions = [], [], []
        for _i in range(interactions):
            self.n += 1
            user = USERS[self.n % len(USERS)]
            text = f"{tag} clicked item {self.n}"
            # Every fifth is below event-filter's min_importance: no memory.
            accepted = self.n % 5 != 0
            (self.accepted if accepted else self.filtered).add(text)
            user_events.append(interaction(text, 0.9 if accepted else 0.3, user=user))
        for _i in range(chats):
            self.n += 1
            text = f"{tag} note {self.n}"
            self.accepted.add(text)
            chat_events.append(chat(text, user=USERS[self.n % len(USERS)]))
        for s in range(sessions):
            session = f"{tag}-s{s}"
            self.sessions[session] = STEPS_PER_SESSION
            user = USERS[s % len(USERS)]
            for k in range(STEPS_PER_SESSION):
                actions.append(action("planner", PROCEDURE[k % 3], session, user=user))
        return {"user-events": user_events, "chat-messages": chat_events, "agent-actions": actions}


def start_worker(data_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AGENTMEM_")},
        "AGENTMEM_LOG_FORMAT": "json",
        "AGENTMEM_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    }
    output = open(data_dir.parent / "worker.log", "ab")  # noqa: SIM115 (the child holds it)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agents",
            "--data-dir",
            str(data_dir),
            "--poll-interval-ms",
            "10",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
    )


def memory_count(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        return int(query(database, "SELECT count(*) FROM memories")[0][0])
    except Exception:
        return 0  # created but no schema yet


async def publish(log: EmbeddedLog, batch: dict[str, list[dict[str, Any]]]) -> None:
    for topic, events in batch.items():
        for start in range(0, len(events), 100):
            await produce(log, topic, events[start : start + 100])


@pytest.mark.slow
async def test_kill_9_at_any_moment_applies_every_event_exactly_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    database = data_dir / "memory.sqlite3"
    log = EmbeddedLog(
        data_dir / "log.sqlite3", topics=load_topics(TOPICS_FILE), poll_interval_ms=10
    )
    await log.open()
    events = Events()
    rng = random.Random(7)
    kills = []
    try:
        for round_, (how, amount) in enumerate(ROUNDS):
            await publish(log, events.batch(f"r{round_}a", 450, 250, 6))
            before = memory_count(database)
            worker = start_worker(data_dir)
            live = asyncio.create_task(publish(log, events.batch(f"r{round_}b", 250, 150, 4)))
            deadline = time.monotonic() + 30
            if how == "after_s":
                await asyncio.sleep(float(amount))
            else:
                while memory_count(database) < before + amount and time.monotonic() < deadline:
                    assert worker.poll() is None, (data_dir.parent / "worker.log").read_text()[
                        -3000:
                    ]
                    await asyncio.sleep(0.005)
                await asyncio.sleep(rng.uniform(0, 0.05))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            await live
            kills.append(memory_count(database) - before)
        final = start_worker(data_dir, "--exit-when-idle")
        code = await asyncio.to_thread(final.wait, 60)
        assert code == 0, (data_dir.parent / "worker.log").read_text()[-3000:]
        updates = await read_json(log, "memory-updates")
    finally:
        await log.close()

    # The kills happened at different points of the work.
    assert len(set(kills)) > 1

    episodic = query(
        database,
        "SELECT content, source_topic, source_partition, source_offset FROM memories WHERE memory_type = 'episodic'",
    )
    contents = Counter(row[0] for row in episodic)
    assert set(contents) == events.accepted and max(contents.values()) == 1
    assert not events.filtered & set(contents)
    sources = Counter(row[1:] for row in episodic)
    assert max(sources.values()) == 1

    sequences = query(
        database,
        "SELECT json_extract(metadata, '$.session_id'), version, content FROM memories WHERE memory_type = 'procedural' AND json_extract(metadata, '$.kind') = 'sequence'",
    )
    assert {row[0]: row[1] for row in sequences} == events.sessions
    assert all(row[2].count("\n") == STEPS_PER_SESSION for row in sequences)
    per_user: dict[str, int] = defaultdict(int)
    for session in events.sessions:
        per_user[USERS[int(session.rsplit("-s", 1)[1]) % len(USERS)]] += 1
    patterns = {
        (u, p): n
        for u, p, n in query(database, "SELECT user_id, pattern, count FROM procedural_patterns")
    }
    for user, sessions in per_user.items():
        assert patterns[(user, "search -> select")] == 3 * sessions
        assert patterns[(user, "book -> search -> select")] == 2 * sessions

    memories = {row[0]: row[1] for row in query(database, "SELECT id, version FROM memories")}
    created = Counter(u["payload"]["memory_id"] for u in updates if u["payload"]["op"] == "created")
    assert created == Counter(list(memories))
    published = Counter(
        (u["payload"]["memory_id"], u["payload"]["version"], u["payload"]["op"]) for u in updates
    )
    assert max(published.values()) == 1
    versions: dict[str, set[int]] = defaultdict(set)
    for memory_id, version, _ in published:
        versions[memory_id].add(version)
    assert all(versions[m] == set(range(1, v + 1)) for m, v in memories.items())
    assert query(database, "SELECT count(*) FROM outbox") == [(0,)]
    assert query(database, "SELECT count(*) FROM deferred") == [(0,)]
    print(
        f"memories written before each kill: {kills}; memories: {len(memories)}; updates: {len(updates)}"
    )
