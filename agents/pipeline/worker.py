"""``PipelineWorker``: consumes the event topics and turns them into memories.

Per topic, a consumer task tails the topic from the offsets committed in the memory
database and handles each batch the tail yields (records of one partition in offset
order) as one unit:

1. the SmartModule chain of the topic runs on the batch (in a worker thread);
2. each output is decoded and classified by the meta-memory manager;
3. the stream processor counts the batch; its state, the anomalies for ``audit-logs``,
   the items for overloaded agents (``deferred``), rejections and the offsets advanced
   as far as is safe are queued on the store, in batch order, and committed first by the
   next transaction (the agent's that applies the batch's items, or the batch's own when
   it deferred items or queued none);
4. the remaining items go to their agents' queues; each agent applies a batch of them in
   one transaction, which also advances the committed offsets.

The memory database is the only place offsets are committed, in the same transactions as
what they account for: see ``agents/pipeline/progress.py`` and ``docs/memory-pipeline.md``
for why a ``kill -9`` at any moment loses nothing and applies nothing twice. Offsets are
also copied to the log from time to time so its tools can show the consumer's lag.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from agents.config import MemoryType, PipelineConfig
from agents.errors import PipelineConfigError, PipelineError
from agents.events import UndecodableRecord, decode
from agents.manager import MetaMemoryManager, Unclassifiable
from agents.memory.base import MemoryAgent, record_changes_sync
from agents.memory.roster import build_agents
from agents.pipeline.apply_process import ApplyProcess
from agents.pipeline.chains import Rejection, TopicChain, build_chains
from agents.pipeline.lanes import AgentLane
from agents.pipeline.processor import Anomaly, StreamProcessor
from agents.pipeline.progress import Progress
from agents.store.sqlite import Change, MemoryStore, Writes, now_ms
from agents.updates import OutboxPublisher, log_entry_row
from agents.work import MemoryWork, Source
from gateway.errors import UnknownTopic
from gateway.streamlog.interface import Record, StreamLog, Tail
from gateway.waiting import wait_event

if TYPE_CHECKING:
    from gateway.smartmodules import SmartModuleRegistry

logger = structlog.get_logger(__name__)

PRUNE_EVERY_S = 10.0
"""How often applied markers below the committed offsets are removed."""
AGGREGATE_RETENTION_MS = 7 * 24 * 3600 * 1000
"""Windows older than this (by their start) are removed from ``aggregates``."""


class PipelineStats:
    """Counters since start (for logs, tests and metrics)."""

    def __init__(self) -> None:
        self.batches = 0
        self.records = 0
        self.outputs = 0
        self.works: Counter[str] = Counter()
        self.no_memory = 0
        self.rejected = 0
        self.anomalies = 0
        self.backpressure_waits = 0
        self.queue_waits = 0
        """Batches that waited for room in a full agent queue (``defer_wait_s``)."""
        self.expired = 0


class PipelineWorker:
    """The memory pipeline over ``log``, writing to ``store`` (opened by the caller).

    ``registry`` is the gateway's SmartModule registry when it runs inside ``serve``;
    without one the worker builds its own engine (cache: ``smartmodule_cache_dir``).
    """

    def __init__(
        self,
        log: StreamLog,
        store: MemoryStore,
        config: PipelineConfig | None = None,
        *,
        registry: SmartModuleRegistry | None = None,
    ) -> None:
        self.log = log
        self.store = store
        self.config = config or PipelineConfig()
        self.registry = registry
        self.manager = MetaMemoryManager(self.config)
        self.processor = StreamProcessor(self.config)
        self.progress = Progress()
        self.stats = PipelineStats()
        roster = build_agents(self.config, store)
        self.semantic = roster.semantic
        self.core = roster.core
        self.episodic = roster.episodic
        self.procedural = roster.procedural
        self.working = roster.working
        self.agents: dict[MemoryType, MemoryAgent] = roster.by_type()
        self.publisher = OutboxPublisher(
            log,
            store,
            topic=self.config.updates_topic,
            batch=self.config.outbox_batch,
            on_progress=self._published,
        )
        self.lanes: dict[str, AgentLane] = {
            name: AgentLane(agent, store, self.progress, self.config, on_commit=self._committed)
            for name, agent in self.agents.items()
        }
        self.chains: dict[str, TopicChain] = {}
        self._tails: dict[str, Tail] = {}
        self._consumers: list[asyncio.Task[None]] = []
        self._background: list[asyncio.Task[None]] = []
        self._room = asyncio.Event()
        self._started = False
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the topics and chains, restore state, start consuming.

        Raises ``PipelineConfigError`` (unknown topic, SmartModule engine missing, unknown
        module, params refused) before anything is consumed."""
        if self._started:
            raise PipelineError("this PipelineWorker was started already; create a new one")
        config = self.config
        for topic in (*config.topics, config.updates_topic, config.audit_topic):
            try:
                self.log.topic(topic)
            except UnknownTopic as exc:
                raise PipelineConfigError(
                    f"the memory pipeline cannot use topic {topic!r}: {exc.message} Declare it "
                    "in the topics file or change the pipeline's topics."
                ) from None
        self.chains = build_chains(config, self.registry)
        self._started = True
        committed = await self.store.offsets(config.consumer)
        self.progress.horizon = await self.store.recheck_horizon()
        self.processor.load(*await self.store.processor_state(config.consumer))
        for name, count in (await self.store.deferred_counts()).items():
            if name in self.lanes:
                self.lanes[name].backlog = count
        for topic in config.topics:
            description = await self.log.describe_topic(topic)
            start: dict[int, int] = {}
            for info in description.partitions:
                default = 0 if config.start == "beginning" else info.end_offset
                offset = committed.get((topic, info.partition), default)
                start[info.partition] = offset
                self.progress.start(topic, info.partition, offset)
            self._tails[topic] = self.log.tail(
                topic, None, start=start, max_batch=config.batch_records
            )
        self._background = [
            asyncio.create_task(lane.run(), name=f"memory-agent-{name}")
            for name, lane in self.lanes.items()
        ]
        self._background.append(asyncio.create_task(self.publisher.run(), name="memory-outbox"))
        self._background.append(asyncio.create_task(self._maintain(), name="memory-maintenance"))
        self._consumers = [
            asyncio.create_task(self._consume(topic, tail), name=f"memory-consumer-{topic}")
            for topic, tail in self._tails.items()
        ]
        logger.info(
            "memory_pipeline_started",
            consumer=config.consumer,
            topics=list(config.topics),
            chains={t: c.name for t, c in self.chains.items()},
            deferred={n: lane.backlog for n, lane in self.lanes.items() if lane.backlog},
        )

    def apply_in(self, process: ApplyProcess) -> None:
        """Apply the agents' batches in ``process`` (started by the caller) instead of the
        store's writer thread."""
        for lane in self.lanes.values():
            lane.process = process

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop consuming, let the agents finish their queues and publish what is pending.

        Deferred items are left deferred (a backlog could outlast any timeout); they and
        whatever is left after ``timeout`` (unpublished updates) are durable and picked up
        by the next start."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for lane in self.lanes.values():
            lane.stopping = True
        for tail in self._tails.values():
            await tail.aclose()
        if self._consumers:
            await asyncio.wait(self._consumers, timeout=max(0.0, deadline - loop.time()))
        while loop.time() < deadline and any(
            lane.queue or lane.busy for lane in self.lanes.values()
        ):
            if any(task.done() for task in self._background):
                break
            await asyncio.sleep(0.01)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(max(0.05, deadline - loop.time())):
                await self.publisher.flush()
        for task in (*self._consumers, *self._background):
            task.cancel()
        await asyncio.gather(*self._consumers, *self._background, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._mirror_offsets()
        for chain in self.chains.values():
            chain.close()
        logger.info("memory_pipeline_stopped", consumer=self.config.consumer)

    async def wait(self) -> None:
        """Return when the worker stops; raise ``PipelineError`` if one of its tasks failed."""
        tasks = [*self._consumers, *self._background]
        if not tasks:
            return
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                error = task.exception()
                raise PipelineError(
                    f"memory pipeline task {task.get_name()} failed: {error}"
                ) from error

    def failure(self) -> BaseException | None:
        """The error of a failed task, if any."""
        for task in (*self._consumers, *self._background):
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    async def caught_up(self) -> bool:
        """Every record written so far is applied, deferred work is done and every update
        is produced."""
        if any(not lane.idle for lane in self.lanes.values()) or self.store.outbox_count:
            return False
        marks = self.progress.watermarks()
        for topic in self.config.topics:
            for info in (await self.log.describe_topic(topic)).partitions:
                if marks.get((topic, info.partition), 0) < info.end_offset:
                    return False
        # Checked again: an agent may have committed (and queued updates) meanwhile.
        return all(lane.idle for lane in self.lanes.values()) and not self.store.outbox_count

    async def wait_idle(self, timeout: float = 30.0, poll_s: float = 0.05) -> None:
        """Wait until ``caught_up``; raises ``TimeoutError`` (or a task's failure)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            failure = self.failure()
            if failure is not None:
                raise PipelineError(f"the memory pipeline failed: {failure}") from failure
            if await self.caught_up():
                return
            if loop.time() >= deadline:
                backlog = {n: lane.backlog + lane.loaded_deferred for n, lane in self.lanes.items()}
                raise TimeoutError(
                    f"the memory pipeline did not catch up within {timeout} s "
                    f"(pending records: {self.progress.pending()}, outbox: "
                    f"{self.store.outbox_count}, deferred: {backlog})"
                )
            await asyncio.sleep(poll_s)

    # -- consuming -----------------------------------------------------------------------------

    async def _consume(self, topic: str, tail: Tail) -> None:
        async for records in tail:
            await self._wait_for_room()
            await self._dispatch(topic, records)
            if self._stopping:
                break

    def _full(self) -> bool:
        high = self.config.deferred_high_water
        return (
            any(lane.backlog + lane.loaded_deferred >= high for lane in self.lanes.values())
            or self.store.outbox_count >= self.config.outbox_high_water
        )

    async def _wait_for_room(self) -> None:
        if not self._full():
            return
        self.stats.backpressure_waits += 1
        while self._full() and not self._stopping:
            self._room.clear()
            await wait_event(self._room, 0.5)

    async def _wait_for_lanes(self, works: Sequence[MemoryWork]) -> None:
        """Wait up to ``defer_wait_s`` until each agent these items go to has room for
        them (or for a full queue's worth), so that an agent is deferred only when it
        stays behind the others, not when all of them wait on one busy writer."""
        wait_s = self.config.defer_wait_s
        if wait_s <= 0 or not works:
            return
        needs = Counter(work.memory_type for work in works)
        lanes = [(self.lanes[name], count) for name, count in needs.items()]

        def short() -> bool:
            return any(
                not lane.deferring and lane.room() < min(count, lane.capacity)
                for lane, count in lanes
            )

        if not short():
            return
        self.stats.queue_waits += 1
        deadline = asyncio.get_running_loop().time() + wait_s
        while short() and not self._stopping:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            self._room.clear()
            await wait_event(self._room, left)

    def _committed(self) -> None:
        """An agent committed: there may be room, and updates to publish."""
        self._room.set()
        self.publisher.wake()

    def _published(self) -> None:
        """The outbox shrank: there may be room."""
        self._room.set()

    async def _dispatch(self, topic: str, records: Sequence[Record]) -> None:
        self.progress.begin(records)
        chain = self.chains.get(topic)
        rejected: list[Rejection] = []
        outputs: list[Record] = list(records)
        if chain is not None:
            outputs, rejected = await asyncio.to_thread(chain.run, records)
        works = self._classify(outputs, rejected)
        await self._wait_for_lanes(works)
        queued: dict[str, list[MemoryWork]] = defaultdict(list)
        deferred: list[MemoryWork] = []
        deferring = {name: lane.deferring for name, lane in self.lanes.items()}
        for work in works:
            lane = self.lanes[work.memory_type]
            taken = queued[lane.name]
            if deferring[lane.name] or lane.room() - len(taken) <= 0:
                deferring[lane.name] = True
                deferred.append(work)
            else:
                taken.append(work)
        waiting = Counter(
            (w.source.partition, w.source.offset) for items in queued.values() for w in items
        )
        # The batch's bookkeeping (the processor's counts and baselines, aggregates,
        # anomalies, deferred and rejected items, offsets) is queued on the store in the
        # order batches are read, with nothing awaited between counting and queueing: the
        # next write transaction, usually the agent's that applies these items, commits it
        # first. Deferred items must be committed before their lane loads them, and a
        # batch that queues nothing would otherwise wait for another: those commit now.
        store = self.store
        observed = self.processor.observe(records)
        saved, forgotten, moved = self.processor.take_changes()
        store.later(Writes.save_processor, self.config.consumer, saved, forgotten, moved)
        if observed.aggregates:
            store.later(
                Writes.save_aggregates,
                [
                    (
                        a.organization_id,
                        a.user_id,
                        a.event_type,
                        a.window_start,
                        a.window_ms,
                        a.count,
                        a.importance_sum,
                        a.rate_per_s,
                    )
                    for a in observed.aggregates
                ],
            )
        if observed.anomalies:
            store.later(Writes.add_outbox, [self._audit_row(a) for a in observed.anomalies])
        if deferred:
            store.later(
                Writes.defer, [(w.memory_type, w.source, AgentLane.encode(w)) for w in deferred]
            )
        if rejected:
            store.later(Writes.reject, rejected)
        for record in records:
            self.progress.settle(
                topic,
                record.partition,
                record.offset,
                waiting.get((record.partition, record.offset), 0),
            )
        store.later(Writes.save_offsets, self.config.consumer, self.progress.changed())
        if deferred or not waiting:
            async with store.transaction():
                pass
        for name, items in queued.items():
            if items:
                self.lanes[name].put(items)
        for name, count in Counter(w.memory_type for w in deferred).items():
            self.lanes[name].deferred(count)
        stats = self.stats
        stats.batches += 1
        stats.records += len(records)
        stats.outputs += len(outputs)
        stats.works.update(w.memory_type for w in works)
        stats.rejected += len(rejected)
        stats.anomalies += len(observed.anomalies)
        if observed.anomalies:
            self.publisher.wake()

    def _classify(self, outputs: Sequence[Record], rejected: list[Rejection]) -> list[MemoryWork]:
        works: list[MemoryWork] = []
        seqs: Counter[tuple[int, int]] = Counter()
        for record in outputs:
            position = (record.partition, record.offset)
            source = Source(record.topic, record.partition, record.offset, seqs[position])
            seqs[position] += 1
            try:
                event = decode(record.value)
                work = self.manager.classify(event, source, record.timestamp)
            except (UndecodableRecord, Unclassifiable) as exc:
                stage = "decode" if isinstance(exc, UndecodableRecord) else "classify"
                rejected.append((source, stage, str(exc), record.value))
                logger.warning("record_rejected", source=str(source), stage=stage, reason=str(exc))
                continue
            except Exception as exc:
                # A defect met on one record must not stop the topic forever (it would fail
                # again on every restart): keep the record aside with the error.
                logger.exception("classification_failed", source=str(source))
                rejected.append(
                    (source, "classify", f"classification failed: {exc!r}", record.value)
                )
                continue
            if work is None:
                self.stats.no_memory += 1
            else:
                works.append(work)
        return works

    def _audit_row(self, anomaly: Anomaly) -> tuple[str, bytes | None, bytes, str]:
        return log_entry_row(
            self.config.audit_topic,
            event_id=anomaly.id,
            organization_id=anomaly.organization_id,
            user_id=anomaly.user_id,
            timestamp=anomaly.timestamp,
            level="warning",
            message=anomaly.message,
            metadata=anomaly.metadata,
            importance=0.8,
        )

    # -- housekeeping --------------------------------------------------------------------------

    async def _maintain(self) -> None:
        loop = asyncio.get_running_loop()
        last_prune = last_mirror = loop.time()
        while True:
            await asyncio.sleep(self.config.maintenance_interval_s)
            await self.expire_working()
            now = loop.time()
            if now - last_prune >= PRUNE_EVERY_S:
                last_prune = now
                await self._prune()
            if now - last_mirror >= self.config.offsets_mirror_interval_s:
                last_mirror = now
                try:
                    await self._mirror_offsets()
                except Exception as exc:
                    logger.warning("offset_mirror_failed", error=str(exc))

    async def expire_working(self, now: int | None = None) -> int:
        """Expire working memories past their TTL (as of ``now``); returns how many."""
        total = 0
        while True:
            at = now_ms() if now is None else now
            async with self.store.transaction() as tx:
                changes = await tx.run(self._expire_in_thread, at)
            total += len(changes)
            if changes:
                self.publisher.wake()
            if len(changes) < 500:
                break
        self.stats.expired += total
        return total

    def _expire_in_thread(self, tx: Writes, at: int) -> list[Change]:
        changes = self.working.expire_sync(tx, at)
        record_changes_sync(tx, changes, now_ms())
        return changes

    async def _prune(self) -> None:
        committed = await self.store.offsets(self.config.consumer)
        async with self.store.transaction() as tx:
            await tx.executemany(
                'DELETE FROM applied WHERE topic = ? AND partition = ? AND "offset" < ?',
                [(t, p, o) for (t, p), o in committed.items()],
            )
            await tx.execute(
                "DELETE FROM aggregates WHERE window_start < ?",
                (now_ms() - AGGREGATE_RETENTION_MS,),
            )

    async def _mirror_offsets(self) -> None:
        committed = await self.store.offsets(self.config.consumer)
        by_topic: dict[str, dict[int, int]] = defaultdict(dict)
        for (topic, partition), offset in committed.items():
            by_topic[topic][partition] = offset
        for topic, offsets in by_topic.items():
            await self.log.commit_offsets(self.config.consumer, topic, offsets)
