"""One group commit's transaction: where each record goes, and the statements that write it.

This runs wherever the log's record-writing connection lives (the commit process, or the
writer thread): it touches nothing but its SQLite connection and the partition cursors, and
depends on no event loop, so the same code serves both.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Sequence

import msgspec

from gateway.streamlog.interface import Headers, Produced, TopicSpec

_headers_encoder = msgspec.msgpack.Encoder()
_spec_decoder = msgspec.json.Decoder(TopicSpec)

Placed = tuple[int, bytes | None, bytes, Headers, str | None]
"""A record to write: (partition, key, value, headers, idempotency key)."""

Work = list[tuple[int, Sequence[Placed]]]
"""One commit: (topic id, records) of each produce call, in the order they were made."""

ROWS_PER_STATEMENT = 200
"""Rows written by one multi-row INSERT: one SQLite step (and one GIL release) for many
rows, where ``executemany`` steps, and takes the GIL back, once per row."""

_INSERT_RECORDS = (
    'INSERT INTO records (topic_id, partition, "offset", timestamp, key, value, headers) VALUES {}'
)
_UPSERT_STATE = (
    "INSERT INTO partition_state (topic_id, partition, start_offset, next_offset, "
    "last_timestamp, bytes) VALUES {} ON CONFLICT (topic_id, partition) DO UPDATE SET "
    "next_offset = excluded.next_offset, last_timestamp = excluded.last_timestamp, "
    "bytes = partition_state.bytes + excluded.bytes"
)
_INSERT_IDEMPOTENCY = (
    'INSERT OR REPLACE INTO idempotency (topic_id, key, partition, "offset", timestamp) VALUES {}'
)
_INSERT_NEW_IDEMPOTENCY = (
    'INSERT OR IGNORE INTO idempotency (topic_id, key, partition, "offset", timestamp) VALUES {}'
)


class Cursors:
    """Where the next record of each partition goes, and its lowest timestamp.

    Owned by the writing connection's thread or process. ``partition_state`` is the truth:
    the cursors are read back from it whenever another connection (a topic created, another
    process producing) or a failed transaction may have left them stale.
    """

    def __init__(self) -> None:
        self.next_offset: dict[int, list[int]] = {}
        self.last_timestamp: dict[int, list[int]] = {}
        self._data_version = -1

    def add(self, topic_id: int, partitions: int) -> None:
        """A topic this connection has just created."""
        self.next_offset.setdefault(topic_id, [0] * partitions)
        self.last_timestamp.setdefault(topic_id, [0] * partitions)

    def reload_if_changed(self, db: sqlite3.Connection) -> None:
        """Reload if another connection has committed since this one last looked."""
        if _data_version(db) != self._data_version:
            self.reload(db)

    def reload(self, db: sqlite3.Connection) -> None:
        rows = db.execute(
            "SELECT topic_id, partition, next_offset, last_timestamp FROM partition_state"
        ).fetchall()
        for topic_id, partition, next_offset, last_ts in rows:
            if topic_id not in self.next_offset:
                (blob,) = db.execute("SELECT spec FROM topics WHERE id = ?", (topic_id,)).fetchone()
                partitions = _spec_decoder.decode(blob).partitions
                self.next_offset[topic_id] = [0] * partitions
                self.last_timestamp[topic_id] = [0] * partitions
            self.next_offset[topic_id][partition] = next_offset
            self.last_timestamp[topic_id][partition] = last_ts
        self._data_version = _data_version(db)


def commit(db: sqlite3.Connection, cursors: Cursors, work: Work) -> list[list[Produced]]:
    """Write ``work`` in one transaction; the positions of each call's records, in order.

    Idempotency keys are first taken to be new: their rows are inserted with ``OR IGNORE``
    and the count of rows written tells whether one was known. Only then (a re-sent record,
    which is rare) is the transaction rolled back and redone with the keys looked up first,
    so the common case spends no lookup statement. On any failure the transaction is rolled
    back and the cursors are read back from the database.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        cursors.reload_if_changed(db)
        rows, results, touched, keys = _place(cursors, work, {})
        if keys:
            before = db.total_changes
            _insert_many(db, _INSERT_NEW_IDEMPOTENCY, keys)
            if db.total_changes - before < len(keys):
                # The first try advanced the cursors: read them back from the database.
                db.execute("ROLLBACK")
                db.execute("BEGIN IMMEDIATE")
                cursors.reload(db)
                seen = _known_keys(db, work)
                rows, results, touched, keys = _place(cursors, work, seen)
                _insert_many(db, _INSERT_IDEMPOTENCY, keys)
        _insert_many(db, _INSERT_RECORDS, rows)
        _insert_many(db, _UPSERT_STATE, touched)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        cursors.reload(db)
        raise
    return results


def _place(
    cursors: Cursors, work: Work, seen: dict[tuple[int, str], Produced]
) -> tuple[
    list[tuple[object, ...]],
    list[list[Produced]],
    list[tuple[object, ...]],
    list[tuple[object, ...]],
]:
    """Give each new record its offset and timestamp (advancing the cursors); a record whose
    idempotency key is in ``seen`` (or earlier in the batch) gets the original."""
    now = int(time.time() * 1000)
    next_offset = cursors.next_offset
    last_ts = cursors.last_timestamp
    rows: list[tuple[object, ...]] = []
    results: list[list[Produced]] = []
    sizes: dict[tuple[int, int], int] = {}
    keys: list[tuple[object, ...]] = []
    for topic_id, records in work:
        offsets = next_offset[topic_id]
        stamps = last_ts[topic_id]
        produced: list[Produced] = []
        for partition, key, value, headers, idempotency_key in records:
            if idempotency_key is not None:
                original = seen.get((topic_id, idempotency_key))
                if original is not None:
                    produced.append(original)
                    continue
            offset = offsets[partition]
            offsets[partition] = offset + 1
            # Timestamps never go back within a partition, which retention relies on.
            ts = stamps[partition]
            if now > ts:
                ts = stamps[partition] = now
            blob = _headers_encoder.encode(headers) if headers else None
            rows.append((topic_id, partition, offset, ts, key, value, blob))
            produced.append(Produced(partition, offset, ts))
            if idempotency_key is not None:
                keys.append((topic_id, idempotency_key, partition, offset, ts))
                seen[(topic_id, idempotency_key)] = Produced(partition, offset, ts, True)
            where = (topic_id, partition)
            sizes[where] = sizes.get(where, 0) + len(value) + (len(key) if key else 0)
        results.append(produced)
    touched: list[tuple[object, ...]] = [
        (t, p, 0, next_offset[t][p], last_ts[t][p], size) for (t, p), size in sizes.items()
    ]
    return rows, results, touched, keys


@functools.lru_cache(maxsize=512)
def _values(columns: int, rows: int) -> str:
    row = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([row] * rows)


def _insert_many(db: sqlite3.Connection, template: str, rows: Sequence[tuple[object, ...]]) -> None:
    if not rows:
        return
    columns = len(rows[0])
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        db.execute(template.format(_values(columns, len(chunk))), [v for row in chunk for v in row])


def _known_keys(db: sqlite3.Connection, work: Work) -> dict[tuple[int, str], Produced]:
    """Positions of the idempotency keys of ``work`` that were already written."""
    wanted: dict[int, list[str]] = {}
    for topic_id, records in work:
        for record in records:
            if record[4] is not None:
                wanted.setdefault(topic_id, []).append(record[4])
    found: dict[tuple[int, str], Produced] = {}
    for topic_id, keys in wanted.items():
        # `topic_id = ? AND key IN (...)` is answered from the primary key index.
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = db.execute(
                'SELECT key, partition, "offset", timestamp FROM idempotency '
                f"WHERE topic_id = ? AND key IN ({','.join('?' * len(chunk))})",
                [topic_id, *chunk],
            )
            for key, partition, offset, ts in rows:
                found[(topic_id, key)] = Produced(partition, offset, ts, True)
    return found


def _data_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA data_version").fetchone()[0])
