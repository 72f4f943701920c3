"""Agent lanes: each memory agent's bounded queue, its deferred backlog, and its loop.

Policy (also in ``docs/memory-pipeline.md``):

- A lane's queue holds at most ``agent_queue_size`` items (per type:
  ``agent_queue_sizes``). The dispatcher waits up to ``defer_wait_s`` (0.25 s) for room
  in a full queue, since a queue full only because every agent shares one busy writer
  empties within a transaction or two; an item that still finds its lane full is
  **deferred**: written to the ``deferred`` table in the same transaction that advances
  the consumer, so it is durable before its offset is committed. Other lanes then go on
  at full speed.
- Once a lane has a deferred backlog, its new items are deferred too, until the backlog is
  drained: the lane applies items in the order they were dispatched, so a user's facts
  are superseded in the order they were stated.
- The lane drains its queue first, then loads deferred items (oldest first) whenever its
  queue is empty. A deferred item is deleted in the transaction that applies it. Once the
  pipeline is stopping, a lane finishes its queue and loads no more deferred items: they
  are durable, and the next start applies them first.
- **Backpressure**: the dispatcher takes no new batch while any lane's backlog is at
  ``deferred_high_water`` (so a backlog exceeds it by at most one batch), which slows the
  consumer down to what the slowest agent manages. Nothing is ever dropped.
- An item an agent fails on (a bug, data it cannot handle) is retried alone and, if it
  fails again, recorded in ``rejected`` with the error; database errors stop the pipeline.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from agents.config import PipelineConfig
from agents.memory.base import MemoryAgent, record_changes_sync
from agents.pipeline.progress import Progress
from agents.store.sqlite import Call, MemoryStore, Writes, now_ms
from agents.work import MemoryWork, Source, work_decoder, work_encoder

if TYPE_CHECKING:
    from agents.pipeline.apply_process import ApplyOutcome, ApplyProcess

logger = structlog.get_logger(__name__)

Item = tuple[MemoryWork, int | None]
"""A work item and its ``deferred`` row id (``None`` when it came through the queue)."""


class AgentFailed(Exception):
    """The agent raised on the items it was given (not the database)."""


class LaneStats:
    __slots__ = ("applied", "deferred", "max_backlog", "rejected")

    def __init__(self) -> None:
        self.applied = 0
        self.deferred = 0
        self.rejected = 0
        self.max_backlog = 0


class AgentLane:
    def __init__(
        self,
        agent: MemoryAgent,
        store: MemoryStore,
        progress: Progress,
        config: PipelineConfig,
        *,
        on_commit: Callable[[], None],
    ) -> None:
        self.agent = agent
        self.name = agent.memory_type
        self.store = store
        self.progress = progress
        self.config = config
        self.capacity = config.queue_size(self.name)
        self.on_commit = on_commit
        self.queue: deque[MemoryWork] = deque()
        self.backlog = 0
        """Deferred items not yet loaded by the lane."""
        self.loaded_deferred = 0
        """Deferred items loaded and not yet applied."""
        self._last_loaded_id = 0
        self._wake = asyncio.Event()
        self.busy = False
        self.stopping = False
        """Set by the worker's ``stop``: the lane finishes its queue but loads no more
        deferred items, which stay durable for the next start."""
        self.stats = LaneStats()
        self.process: ApplyProcess | None = None
        """Where batches are applied when not in the store's writer thread (set by the
        worker when ``apply_process`` is on)."""

    # -- the dispatcher's side ------------------------------------------------------------------

    @property
    def deferring(self) -> bool:
        """New items must be deferred (a backlog exists: keep the order)."""
        return self.backlog > 0 or self.loaded_deferred > 0

    def room(self) -> int:
        return self.capacity - len(self.queue)

    def put(self, items: Sequence[MemoryWork]) -> None:
        """Queue items the dispatcher reserved room for (after its transaction committed)."""
        self.queue.extend(items)
        self._wake.set()

    def deferred(self, count: int) -> None:
        """``count`` items were written to ``deferred`` (after the transaction committed)."""
        self.backlog += count
        self.stats.deferred += count
        self.stats.max_backlog = max(self.stats.max_backlog, self.backlog + self.loaded_deferred)
        self._wake.set()

    @staticmethod
    def encode(work: MemoryWork) -> bytes:
        return work_encoder.encode(work)

    @property
    def idle(self) -> bool:
        return not self.queue and not self.deferring and not self.busy

    # -- the lane's loop ------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            self._wake.clear()
            items = await self._next()
            if not items:
                await self._wake.wait()
                continue
            self.busy = True
            try:
                await self._apply(items)
            finally:
                self.busy = False

    async def _next(self) -> list[Item]:
        limit = self.config.agent_batch
        if self.queue:
            count = min(limit, len(self.queue))
            return [(self.queue.popleft(), None) for _ in range(count)]
        if self.backlog > 0 and not self.stopping:
            rows = await self.store.fetch_deferred(self.name, self._last_loaded_id, limit)
            if rows:
                self._last_loaded_id = rows[-1][0]
                self.backlog = max(0, self.backlog - len(rows))
                self.loaded_deferred += len(rows)
                return [(work_decoder.decode(blob), row_id) for row_id, blob in rows]
            self.backlog = 0
        return []

    async def _apply(self, items: list[Item]) -> None:
        try:
            await self._apply_batch(items)
        except AgentFailed as failed:
            if len(items) == 1:
                await self._reject(items[0], failed)
                return
            logger.warning(
                "agent_batch_failed", agent=self.name, items=len(items), error=str(failed)
            )
            # The transaction was rolled back: apply the items one by one to find the bad one.
            for item in items:
                try:
                    await self._apply_batch([item])
                except AgentFailed as alone:
                    await self._reject(item, alone)

    async def _apply_batch(self, items: list[Item]) -> None:
        now = now_ms()
        if self.process is not None:
            await self._apply_elsewhere(self.process, items, now)
            return
        self.agent.prepare([work for work, _ in items])
        async with self.store.transaction() as tx:
            # One call applies the batch; the offsets go with the COMMIT (a second call).
            fresh = await tx.run(self._apply_in_thread, items, now)
            self.progress.complete(work.source for work, row_id in items if row_id is None)
            tx.later(Writes.save_offsets, self.config.consumer, self.progress.changed())
        self.loaded_deferred -= sum(1 for _, row_id in items if row_id is not None)
        self.stats.applied += fresh
        self.on_commit()

    async def _apply_elsewhere(self, process: ApplyProcess, items: list[Item], now: int) -> None:
        # Offsets are committed with the batch, as in the writer thread: those the
        # partitions will have once these items are complete (a lower bound of the real
        # ones, which other lanes may raise meanwhile).
        sources = [work.source for work, row_id in items if row_id is None]
        maybe = [work.source for work, _ in items if self.progress.may_be_applied(work.source)]
        marks = self.progress.preview(sources)
        offsets = [(Writes.save_offsets, (self.config.consumer, marks))] if marks else []
        prepared = self.agent.prepare([work for work, _ in items])

        def submit(
            before: list[Call], after: list[Call]
        ) -> asyncio.Future[tuple[ApplyOutcome, int]]:
            return process.submit(self.name, items, maybe, now, before, offsets, after, prepared)

        outcome = await self.store.run_elsewhere(submit)
        if outcome.failure is not None:
            raise AgentFailed(outcome.failure)
        self.progress.complete(sources)
        self.progress.saved(marks)
        self.loaded_deferred -= len(items) - len(sources)
        self.stats.applied += outcome.applied
        self.on_commit()

    def _apply_in_thread(self, tx: Writes, items: list[Item], now: int) -> int:
        maybe = [work.source for work, _ in items if self.progress.may_be_applied(work.source)]
        return apply_items(tx, self.agent, items, maybe, now)

    async def _reject(self, item: Item, failed: AgentFailed) -> None:
        work, row_id = item
        logger.error(
            "memory_rejected", agent=self.name, source=str(work.source), exc_info=failed.__cause__
        )
        reason = f"{failed} (traceback in the pipeline's log)"
        async with self.store.transaction() as tx:
            tx.later(
                Writes.reject, [(work.source, f"agent:{self.name}", reason, self.encode(work))]
            )
            tx.later(Writes.mark_applied, [(work.source, None)], now_ms())
            if row_id is not None:
                tx.later(Writes.undefer, [row_id])
            else:
                self.progress.complete([work.source])
            tx.later(Writes.save_offsets, self.config.consumer, self.progress.changed())
        if row_id is not None:
            self.loaded_deferred -= 1
        self.stats.rejected += 1
        self.on_commit()


def apply_items(
    tx: Writes, agent: MemoryAgent, items: Sequence[Item], maybe: Sequence[Source], now: int
) -> int:
    """In the writer (thread or process): skip what was applied already (only ``maybe``
    can have been), apply the rest, record the history (the memory updates), the applied
    markers and the deferred rows consumed. Returns how many items were applied."""
    done = tx.applied(maybe) if maybe else set()
    fresh = (
        [work for work, _ in items if work.source not in done]
        if done
        else [work for work, _ in items]
    )
    try:
        results = agent.apply_sync(tx, fresh, now)
    except (sqlite3.OperationalError, sqlite3.InternalError, OSError):
        raise  # the database or the disk is in trouble: stop the pipeline
    except Exception as exc:
        raise AgentFailed(f"{agent.memory_type} agent failed: {exc}") from exc
    record_changes_sync(tx, [change for _, changes in results for change in changes], now)
    tx.mark_applied([(work.source, c[0].memory.id if c else None) for work, c in results], now)
    tx.undefer([row_id for _, row_id in items if row_id is not None])
    return len(fresh)
