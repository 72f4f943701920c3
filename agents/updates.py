"""Memory updates and audit records: their envelopes, and producing them.

Every change to a memory is a ``memory_history`` row, written in the transaction that
makes the change; that row is also its memory update waiting to be published (history
ids grow in commit order). ``OutboxPublisher`` reads the rows after its saved position
(meta ``updates_published``), produces each as a ``memory_update`` envelope keyed by the
user id (one user's updates stay in order on one partition), in one ``produce_batch``
per read, then notes the new position, which the next write transaction saves. Audit
records (anomalies) are rows of the ``outbox`` table, produced the same way and deleted
once the log has them.

A crash between producing and saving the position sends records again on restart. Each
carries an idempotency key derived from the change (``<memory_id>:<version>:<op>``, also
the envelope id), so the log does not write it twice within its dedup window
(``dedup_window_s``, default 10 minutes); a consumer can rely on the envelope id as well.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from agents.store.sqlite import HistoryRow, MemoryStore, Writes
from gateway.schemas.envelope import ENVELOPES
from gateway.schemas.payloads import LogEntry, MemoryUpdate, RecordSource
from gateway.streamlog.interface import NewRecord, StreamLog
from gateway.waiting import wait_event

logger = structlog.get_logger(__name__)
_encoder = msgspec.json.Encoder()
_MemoryUpdateEvent = ENVELOPES["memory_update"]
_LogEntryEvent = ENVELOPES["log_entry"]

OutboxRow = tuple[str, bytes | None, bytes, str]
"""``(topic, key, value, idempotency_key)``."""


def history_update_row(row: HistoryRow, topic: str) -> OutboxRow:
    """The memory update of a history row: a ``memory_update`` envelope keyed by the user,
    stamped with the time of the change, whose id and idempotency key is
    ``<memory_id>:<version>:<op>``."""
    key = f"{row.memory_id}:{row.version}:{row.op}"
    source = (
        RecordSource(row.source_topic, row.source_partition or 0, row.source_offset or 0)
        if row.source_topic is not None
        else None
    )
    envelope = _MemoryUpdateEvent(
        id=key,
        organization_id=row.organization_id,
        user_id=row.user_id,
        timestamp=row.changed_at,
        payload=MemoryUpdate(
            op=row.op,
            memory_id=row.memory_id,
            memory_type=row.memory_type,
            organization_id=row.organization_id,
            user_id=row.user_id,
            agent_id=row.agent_id,
            importance=row.importance,
            content=row.content,
            version=row.version,
            source=source,
            timestamp=row.changed_at,
        ),
    )
    return topic, row.user_id.encode(), _encoder.encode(envelope), key


def log_entry_row(
    topic: str,
    *,
    event_id: str,
    organization_id: str,
    user_id: str,
    timestamp: int,
    level: str,
    message: str,
    metadata: dict[str, Any],
    importance: float,
) -> OutboxRow:
    """The outbox row of a ``log_entry`` envelope (anomalies go to ``audit-logs``)."""
    envelope = _LogEntryEvent(
        id=event_id,
        organization_id=organization_id,
        user_id=user_id,
        timestamp=timestamp,
        payload=LogEntry(
            level=level,  # type: ignore[arg-type]
            message=message,
            metadata=metadata,
            importance=importance,
        ),
    )
    return topic, user_id.encode(), _encoder.encode(envelope), event_id


class OutboxPublisher:
    """Produces the memory updates (history rows) and the outbox rows to the log, oldest
    first, then records that they are produced.

    What waits is bounded by the dispatcher: it takes no new batch while
    ``store.outbox_count`` is at ``outbox_high_water``.
    """

    def __init__(
        self,
        log: StreamLog,
        store: MemoryStore,
        *,
        topic: str = "memory-updates",
        batch: int = 500,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self.log = log
        self.store = store
        self.topic = topic
        self.batch = batch
        self.on_progress = on_progress
        self.produced = 0
        self.position: int | None = None
        """The last history id produced (read from the database on first use)."""
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Publish forever; a failing log is retried with backoff (nothing is skipped)."""
        delay = 0.05
        while True:
            # Cleared before reading, so a wake-up during the read is not lost.
            self._wake.clear()
            try:
                sent = await self.publish_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("outbox_publish_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.05
            # Nothing sent: another process (a gateway whose pipeline runs apart) may write
            # changes without waking this one, so look again every second. The published
            # position is saved by the agents' next transaction; a transaction of its own
            # waits for a second without one (a re-publish after a crash is harmless, the
            # idempotency keys see to that), so a steady load does not pay one per batch.
            if sent == 0 and not await wait_event(self._wake, 1.0):
                await self.save_position()

    async def publish_once(self) -> int:
        """Produce up to ``batch`` memory updates and ``batch`` outbox rows; returns how
        many records were produced."""
        if self.position is None:
            self.position = await self.store.published_position()
        sent = await self._publish_history(self.position) + await self._publish_outbox()
        if sent == 0:
            self.store.outbox_count = 0
            return 0
        self.store.outbox_count = max(0, self.store.outbox_count - sent)
        self.produced += sent
        if self.on_progress is not None:
            self.on_progress()
        return sent

    async def _publish_history(self, after: int) -> int:
        rows = await self.store.pending_updates(after, self.batch)
        if not rows:
            return 0
        records = []
        for row in rows:
            _, key, value, idempotency_key = history_update_row(row, self.topic)
            records.append(NewRecord(value=value, key=key, idempotency_key=idempotency_key))
        await self.log.produce_batch(self.topic, records)
        # Saved by the next transaction (an agent's, usually), or by ``save_position``
        # once nothing is left: a crash before that produces these again, which the
        # idempotency keys make harmless.
        self.position = self.store.unsaved_published = rows[-1].id
        return len(rows)

    async def save_position(self) -> None:
        """Save the published position now, if a transaction has not done it yet."""
        if self.store.unsaved_published is not None:
            async with self.store.transaction():
                pass

    async def _publish_outbox(self) -> int:
        rows = await self.store.outbox_batch(self.batch)
        if not rows:
            return 0
        # Consecutive rows of one topic go in one atomic produce, in outbox order.
        for topic, group in itertools.groupby(rows, key=lambda row: row[1]):
            records = [
                NewRecord(value=value, key=key, idempotency_key=idem)
                for _, _, key, value, idem in group
            ]
            await self.log.produce_batch(topic, records)
        async with self.store.transaction() as tx:
            tx.later(Writes.execute, "DELETE FROM outbox WHERE id <= ?", (rows[-1][0],))
        return len(rows)

    async def flush(self) -> None:
        """Publish until nothing waits (used when stopping)."""
        while await self.publish_once():
            pass
        await self.save_position()
