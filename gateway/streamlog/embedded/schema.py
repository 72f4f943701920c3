"""Tables of the embedded log and the connection settings that make commits durable.

``records.id`` is an AUTOINCREMENT rowid: SQLite has a single writer, so ids grow in commit
order and are never reused. A tail follows a topic by id (one index range scan for all its
partitions) while offsets stay dense per partition. ``partition_state`` is authoritative for
the next offset, so retention can empty a partition without offsets ever going back.
``idempotency`` remembers recent idempotency keys, written in the same transaction as their
record, so a re-sent record is recognised even after a crash.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

from gateway.streamlog.embedded.checkpointer import WRITER_AUTOCHECKPOINT_PAGES

SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    spec BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS partition_state (
    topic_id INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    start_offset INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    last_timestamp INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (topic_id, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic_id INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS records_position ON records (topic_id, partition, "offset");
CREATE INDEX IF NOT EXISTS records_topic ON records (topic_id);
CREATE TABLE IF NOT EXISTS idempotency (
    topic_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (topic_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency (timestamp);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer TEXT NOT NULL,
    topic_id INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, topic_id, partition)
) WITHOUT ROWID;
"""


def pragmas(durability: Literal["process", "power"]) -> list[str]:
    # WAL with synchronous=NORMAL writes every commit to the WAL file before COMMIT returns;
    # the OS keeps it if the process dies. FULL also fsyncs the WAL on every commit.
    synchronous = "FULL" if durability == "power" else "NORMAL"
    return [
        # First, so that switching to WAL waits for another process opening the file too.
        "PRAGMA busy_timeout=10000",
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous}",
        "PRAGMA cache_size=-16384",
        "PRAGMA temp_store=MEMORY",
    ]


def connect_writer(path: Path, durability: Literal["process", "power"]) -> sqlite3.Connection:
    """A connection that writes records: durable commits, tables created when missing."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    for pragma in pragmas(durability):
        db.execute(pragma)
    # Checkpoints run in the checkpointer's thread; this is only a safety net.
    db.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}")
    db.executescript(SCHEMA)
    return db
