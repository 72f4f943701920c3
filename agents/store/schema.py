"""The memory database's tables (``<data_dir>/memory.sqlite3``) and connection settings.

Memories and everything the pipeline needs to apply each event exactly once live in one
SQLite file, so a single transaction can write a memory, its history (which is also the
queue of memory updates to publish) and the consumer offsets together.

Every index costs each insert a B-tree write, so only indexes some query uses exist
(the queries are in ``agents/store/sqlite.py``, ``agents/store/filters.py`` and the
agents). The full-text index is kept in step by ``Writes`` (``insert_memories`` indexes
a batch in one statement, ``update_memory`` and ``delete_memory`` remove the old text),
not by triggers: FTS5 flushes its pending terms at each statement a trigger runs, so
every triggered insert or update wrote and merged a tiny segment (about 100 µs each,
against 10 to 16 µs done explicitly). Memories are therefore written only through
``MemoryStore`` transactions; a manual ``INSERT`` would not be searchable.
"""

from __future__ import annotations

SCHEMA_VERSION = 2

MEMORY_COLUMNS = (
    "id, organization_id, user_id, agent_id, session_id, memory_type, content, importance, "
    "metadata, hash, subject, embedding, created_at, updated_at, event_time, expires_at, "
    "access_count, version, source_topic, source_partition, source_offset"
)

STATEMENTS = (
    # Current version of every memory. The integer rowid keys the full-text index.
    """CREATE TABLE IF NOT EXISTS memories (
        rowid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        organization_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        agent_id TEXT,
        session_id TEXT,
        memory_type TEXT NOT NULL
            CHECK (memory_type IN ('core', 'episodic', 'semantic', 'procedural', 'working')),
        content TEXT NOT NULL,
        importance REAL NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        hash TEXT NOT NULL,
        subject TEXT,
        embedding BLOB,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        event_time INTEGER,
        expires_at INTEGER,
        access_count INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 1,
        source_topic TEXT,
        source_partition INTEGER,
        source_offset INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS memories_tenant "
    "ON memories (organization_id, user_id, memory_type, updated_at)",
    # Exact duplicates are looked up among facts only (``Writes.by_hash``).
    "CREATE INDEX IF NOT EXISTS memories_fact_hash "
    "ON memories (organization_id, user_id, hash) WHERE memory_type = 'semantic'",
    "CREATE INDEX IF NOT EXISTS memories_subject "
    "ON memories (organization_id, user_id, memory_type, subject) WHERE subject IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS memories_session "
    "ON memories (organization_id, user_id, session_id, memory_type) WHERE session_id IS NOT NULL",
    # Listing through the memory API: newest first within a tenant.
    "CREATE INDEX IF NOT EXISTS memories_created "
    "ON memories (organization_id, user_id, created_at)",
    "CREATE INDEX IF NOT EXISTS memories_expiry ON memories (expires_at) "
    "WHERE expires_at IS NOT NULL",
    # Every version of every memory, append-only: nothing is lost when a memory is
    # superseded, deleted or expired. Ids grow in commit order (writers are serialized and
    # rows are never deleted), so the table is also the queue of memory updates: the
    # publisher produces the rows after its saved position (meta ``updates_published``).
    # Reads by memory id (the tenancy is checked on its few rows) use the unique index.
    """CREATE TABLE IF NOT EXISTS memory_history (
        id INTEGER PRIMARY KEY,
        memory_id TEXT NOT NULL,
        organization_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        memory_type TEXT NOT NULL,
        version INTEGER NOT NULL,
        op TEXT NOT NULL CHECK (op IN ('created', 'updated', 'deleted', 'expired')),
        content TEXT NOT NULL,
        importance REAL NOT NULL,
        metadata TEXT NOT NULL,
        hash TEXT NOT NULL,
        changed_at INTEGER NOT NULL,
        source_topic TEXT,
        source_partition INTEGER,
        source_offset INTEGER,
        agent_id TEXT,
        UNIQUE (memory_id, version, op)
    )""",
    # Keyword search over current contents, kept in step by ``Writes`` (insert, update and
    # delete of memories), not by triggers: see the module docstring.
    "CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5("
    "content, content='memories', content_rowid='rowid', "
    "tokenize='unicode61 remove_diacritics 2')",
    # Per-term document counts of the index (a view over it, stores nothing): search
    # treats terms found in a large share of memories as stopwords.
    "CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts_vocab USING fts5vocab(memories_fts, 'row')",
    # One row per source (record output) applied: the idempotency check. Rows below the
    # committed offset are pruned, since those records are never read again.
    """CREATE TABLE IF NOT EXISTS applied (
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        "offset" INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        memory_id TEXT,
        applied_at INTEGER NOT NULL,
        PRIMARY KEY (topic, partition, "offset", seq)
    ) WITHOUT ROWID""",
    # Consumer offsets: the next offset to read, written with the memories.
    """CREATE TABLE IF NOT EXISTS consumer_offsets (
        consumer TEXT NOT NULL,
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        "offset" INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (consumer, topic, partition)
    ) WITHOUT ROWID""",
    # Items an overloaded agent could not take; applied later in id order.
    """CREATE TABLE IF NOT EXISTS deferred (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        agent TEXT NOT NULL,
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        "offset" INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        work BLOB NOT NULL,
        deferred_at INTEGER NOT NULL,
        UNIQUE (topic, partition, "offset", seq)
    )""",
    "CREATE INDEX IF NOT EXISTS deferred_agent ON deferred (agent, id)",
    # Records that could not be turned into memories, with the reason (dead letters).
    """CREATE TABLE IF NOT EXISTS rejected (
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        "offset" INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        stage TEXT NOT NULL,
        reason TEXT NOT NULL,
        value BLOB,
        rejected_at INTEGER NOT NULL,
        PRIMARY KEY (topic, partition, "offset", seq)
    ) WITHOUT ROWID""",
    # Records to produce other than memory updates (audit records), in order; deleted once
    # produced.
    """CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        key BLOB,
        value BLOB NOT NULL,
        idempotency_key TEXT NOT NULL,
        created_at INTEGER NOT NULL
    )""",
    # Stream processor: baselines and how far each partition has been counted.
    """CREATE TABLE IF NOT EXISTS processor_state (
        consumer TEXT NOT NULL,
        key TEXT NOT NULL,
        state BLOB NOT NULL,
        PRIMARY KEY (consumer, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS processor_positions (
        consumer TEXT NOT NULL,
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        "offset" INTEGER NOT NULL,
        PRIMARY KEY (consumer, topic, partition)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS aggregates (
        organization_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        window_start INTEGER NOT NULL,
        window_ms INTEGER NOT NULL,
        count INTEGER NOT NULL,
        importance_sum REAL NOT NULL,
        rate_per_s REAL NOT NULL,
        PRIMARY KEY (organization_id, user_id, event_type, window_start)
    ) WITHOUT ROWID""",
    # Procedural agent: each session's steps and how often action sequences recur.
    """CREATE TABLE IF NOT EXISTS procedural_sessions (
        organization_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        steps TEXT NOT NULL,
        dropped INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (organization_id, user_id, agent_id, session_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS procedural_patterns (
        organization_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        pattern TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (organization_id, user_id, agent_id, pattern)
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 1 -> 2: batched full-text inserts, fewer indexes, history as the update queue (what
    # was written before the upgrade was queued in ``outbox`` and is published from there).
    1: (
        "DROP TRIGGER IF EXISTS memories_fts_insert",
        "DROP TRIGGER IF EXISTS memories_fts_update",
        "DROP TRIGGER IF EXISTS memories_fts_delete",
        "DROP INDEX IF EXISTS memories_hash",
        "DROP INDEX IF EXISTS memory_history_tenant",
        "ALTER TABLE memory_history ADD COLUMN agent_id TEXT",
        "INSERT OR REPLACE INTO meta (key, value) "
        "SELECT 'updates_published', coalesce(max(id), 0) FROM memory_history",
    ),
}
"""Statements that bring a database of the given version to the next one (run before
``STATEMENTS``, in the same transaction)."""

CACHE_KIB = 65_536
"""Page cache of the writing connection: the indexes keyed by random ids (memory ids,
fact hashes) stay in memory, instead of being read back from the OS for each insert."""


def pragmas(durability: str, *, cache_kib: int = 8_192) -> tuple[str, ...]:
    # WAL with synchronous=NORMAL survives a killed process; FULL also survives power loss.
    synchronous = "FULL" if durability == "power" else "NORMAL"
    return (
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous}",
        "PRAGMA busy_timeout=10000",
        "PRAGMA temp_store=MEMORY",
        f"PRAGMA cache_size=-{cache_kib}",
    )
