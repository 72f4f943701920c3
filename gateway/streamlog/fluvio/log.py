"""``FluvioLog``: the stream log on a Fluvio cluster.

Every call into the ``fluvio`` client that blocks runs in a worker thread; produce and
consume use the client's async calls. ``produce`` answers once the SPU has acknowledged
the record (the produce output's metadata gives partition and offset). Keys are placed by
Fluvio's own partitioner, which the other backends copy, so a key lands on the same
partition everywhere.

What the client does not offer is done alongside: consumer offsets are records of a
system topic (``agentmem-consumer-offsets``, the last record per consumer, topic and
partition wins), and idempotency keys are remembered per process for the dedup window (a
re-send through another gateway process is written again; see docs/backends.md).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import fluvio
import msgspec
import structlog

from gateway.errors import GatewayError, InvalidOffset, TopicExists, UnknownTopic
from gateway.streamlog.fluvio.errors import map_error
from gateway.streamlog.fluvio.specs import (
    ProducerOptions,
    SmartModuleInvocation,
    TlsMode,
    build_topic_spec,
    connection_config,
    consumer_config,
    invocations_from_filters,
    producer_config,
)
from gateway.streamlog.interface import (
    Headers,
    NewRecord,
    PartitionInfo,
    Produced,
    Record,
    StartPosition,
    StreamLog,
    Tail,
    TopicDescription,
    TopicSpec,
)
from gateway.streamlog.positions import check_partition, resolve_start

logger = structlog.get_logger(__name__)

OFFSETS_TOPIC = TopicSpec(
    name="agentmem-consumer-offsets",
    partitions=1,
    retention_ms=30 * 86_400_000,
    description="Consumer offsets of the gateway's named consumers.",
    client_writable=False,
)


class _Offset(msgspec.Struct):
    consumer: str
    topic: str
    partition: int
    offset: int


_offset_encoder = msgspec.json.Encoder()
_offset_decoder = msgspec.json.Decoder(_Offset)


class FluvioLog(StreamLog):
    runs_smartmodules = True

    def __init__(
        self,
        endpoint: str | None,
        *,
        topics: Sequence[TopicSpec] = (),
        tls: TlsMode = "none",
        producer: ProducerOptions | None = None,
        dedup_window_s: float = 600.0,
        dedup_capacity: int = 200_000,
    ) -> None:
        self.endpoint = endpoint
        self._declared = [*topics, OFFSETS_TOPIC]
        self._tls = tls
        self._producer_options = producer or ProducerOptions()
        self._dedup_window = dedup_window_s
        self._dedup_capacity = dedup_capacity
        self._recent: collections.OrderedDict[tuple[str, str], tuple[float, Produced]] = (
            collections.OrderedDict()
        )
        self._client: Any = None
        self._admin: Any = None
        self._producers: dict[str, Any] = {}
        self._topics: dict[str, TopicSpec] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        config = connection_config(self.endpoint, self._tls)
        try:
            if config is None:
                self._client = await asyncio.to_thread(fluvio.Fluvio.connect)
                self._admin = await asyncio.to_thread(fluvio.FluvioAdmin.connect)
            else:
                self._client = await asyncio.to_thread(fluvio.Fluvio.connect_with_config, config)
                self._admin = await asyncio.to_thread(
                    fluvio.FluvioAdmin.connect_with_config, config
                )
            existing = {t.name() for t in await asyncio.to_thread(self._admin.list_topics, [])}
        except Exception as exc:
            raise map_error(exc) from None
        for spec in self._declared:
            if spec.name not in existing:
                await self._create(spec)
            self._topics[spec.name] = spec
        logger.info("log_opened", backend="fluvio", endpoint=self.endpoint or "profile")

    async def close(self) -> None:
        for producer in list(self._producers.values()):
            try:
                await producer.async_flush()
            except Exception:
                logger.warning("fluvio_flush_failed", exc_info=True)
        self._producers.clear()
        self._client = None
        self._admin = None

    async def check_writable(self) -> None:
        if self._admin is None:
            raise map_error(RuntimeError("not connected"))
        try:
            await asyncio.to_thread(self._admin.list_topics, [OFFSETS_TOPIC.name])
        except Exception as exc:
            raise map_error(exc) from None

    # -- topics --------------------------------------------------------------------------------

    async def _create(self, spec: TopicSpec) -> None:
        try:
            await asyncio.to_thread(self._admin.create_topic, spec.name, build_topic_spec(spec))
        except Exception as exc:
            error = map_error(exc, spec.name)
            if not isinstance(error, TopicExists):
                raise error from None

    async def create_topic(self, spec: TopicSpec, *, exist_ok: bool = False) -> None:
        if spec.name in self._topics:
            if not exist_ok:
                raise TopicExists(f"Topic {spec.name!r} already exists.")
            return
        await self._create(spec)
        self._topics[spec.name] = spec

    def topic(self, name: str) -> TopicSpec:
        spec = self._topics.get(name)
        if spec is None:
            known = ", ".join(sorted(self._topics)) or "none"
            raise UnknownTopic(f"Unknown topic {name!r}; known topics: {known}.")
        return spec

    def topics(self) -> list[TopicSpec]:
        return [s for s in self._topics.values() if s.name != OFFSETS_TOPIC.name]

    async def describe_topic(self, name: str) -> TopicDescription:
        spec = self.topic(name)
        partitions = []
        for partition in range(spec.partitions):
            first = await self._edge(name, partition, fluvio.Offset.beginning())
            last = await self._edge(name, partition, fluvio.Offset.from_end(1))
            end = 0 if last is None else last + 1
            partitions.append(
                PartitionInfo(
                    partition=partition,
                    start_offset=end if first is None else first,
                    end_offset=end,
                )
            )
        return TopicDescription(spec=spec, partitions=partitions)

    async def _edge(self, topic: str, partition: int, offset: Any) -> int | None:
        """Offset of the first record from ``offset`` on, or None when there is none."""
        records = await self._fetch(topic, partition, offset, 1)
        return records[0].offset if records else None

    # -- records -------------------------------------------------------------------------------

    async def _producer(self, topic: str) -> Any:
        producer = self._producers.get(topic)
        if producer is None:
            config = producer_config(self._producer_options)
            try:
                producer = await asyncio.to_thread(
                    self._client.topic_producer_with_config, topic, config
                )
            except Exception as exc:
                raise map_error(exc, topic) from None
            self._producers[topic] = producer
        return producer

    def _remembered(self, topic: str, key: str | None) -> Produced | None:
        if key is None:
            return None
        hit = self._recent.get((topic, key))
        if hit is None or time.monotonic() - hit[0] > self._dedup_window:
            return None
        return msgspec.structs.replace(hit[1], duplicate=True)

    def _remember(self, topic: str, key: str | None, produced: Produced) -> None:
        if key is None:
            return
        self._recent[(topic, key)] = (time.monotonic(), produced)
        while len(self._recent) > self._dedup_capacity:
            self._recent.popitem(last=False)

    async def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers = (),
        *,
        idempotency_key: str | None = None,
    ) -> Produced:
        [produced] = await self.produce_batch(
            topic,
            [NewRecord(value=value, key=key, headers=headers, idempotency_key=idempotency_key)],
        )
        return produced

    async def produce_batch(self, topic: str, records: Sequence[NewRecord]) -> list[Produced]:
        self.topic(topic)
        for record in records:
            if record.partition is not None:
                raise InvalidOffset(
                    "The Fluvio backend places records by key; an explicit partition is not "
                    "supported."
                )
        results: list[Produced | None] = [
            self._remembered(topic, r.idempotency_key) for r in records
        ]
        fresh = [i for i, r in enumerate(results) if r is None]
        if fresh:
            producer = await self._producer(topic)
            try:
                outputs = await producer.async_send_all(
                    [(records[i].key or b"", records[i].value) for i in fresh]
                )
                await producer.async_flush()
                metadata = [await output.async_wait() for output in outputs]
            except GatewayError:
                raise
            except Exception as exc:
                self._producers.pop(topic, None)  # a new producer reconnects on the next call
                raise map_error(exc, topic) from None
            now = int(time.time() * 1000)
            for index, meta in zip(fresh, metadata, strict=True):
                produced = Produced(int(meta.partition_id()), int(meta.offset()), now)
                results[index] = produced
                self._remember(topic, records[index].idempotency_key, produced)
        return [r for r in results if r is not None]

    async def read(self, topic: str, partition: int, offset: int, max_records: int) -> list[Record]:
        check_partition(self.topic(topic), partition)
        return await self._fetch(topic, partition, fluvio.Offset.absolute(offset), max_records)

    async def _fetch(self, topic: str, partition: int, offset: Any, limit: int) -> list[Record]:
        def collect() -> list[Record]:
            config = (
                fluvio.ConsumerConfigExtBuilder(topic)
                .partition(partition)
                .offset_start(offset)
                .disable_continuous(True)
                .build()
            )
            out: list[Record] = []
            for item in self._client.consumer_with_config(config):
                out.append(to_record(topic, partition, item))
                if len(out) >= limit:
                    break
            return out

        try:
            return await asyncio.to_thread(collect)
        except Exception as exc:
            raise map_error(exc, topic) from None

    def tail(
        self,
        topic: str,
        partitions: Sequence[int] | None = None,
        start: StartPosition = "end",
        *,
        max_batch: int = 500,
        smartmodules: Sequence[SmartModuleInvocation] = (),
    ) -> Tail:
        """Follow partitions; ``smartmodules`` run in the cluster, before delivery."""
        spec = self.topic(topic)
        chosen = list(range(spec.partitions)) if partitions is None else sorted(set(partitions))
        for partition in chosen:
            check_partition(spec, partition)
        return FluvioTail(self, topic, chosen, start, max_batch, smartmodules)

    def tail_through(
        self,
        topic: str,
        smartmodules: Sequence[Mapping[str, Any]],
        start: StartPosition = "end",
        *,
        max_batch: int = 500,
    ) -> Tail:
        """The chain runs in the cluster, by registered name (``smartmodule deploy``)."""
        return self.tail(
            topic, None, start, max_batch=max_batch,
            smartmodules=invocations_from_filters(smartmodules),
        )  # fmt: skip

    # -- consumer offsets (alongside, in a system topic) -------------------------------------------

    async def commit_offsets(self, consumer: str, topic: str, offsets: Mapping[int, int]) -> None:
        self.topic(topic)
        records = [
            NewRecord(
                value=_offset_encoder.encode(_Offset(consumer, topic, p, o)),
                key=f"{consumer}\x00{topic}\x00{p}".encode(),
            )
            for p, o in offsets.items()
        ]
        await self.produce_batch(OFFSETS_TOPIC.name, records)

    async def fetch_offsets(self, consumer: str, topic: str) -> dict[int, int]:
        found: dict[int, int] = {}
        start = 0
        while True:
            batch = await self._fetch(OFFSETS_TOPIC.name, 0, fluvio.Offset.absolute(start), 10_000)
            for record in batch:
                entry = _offset_decoder.decode(record.value)
                if entry.consumer == consumer and entry.topic == topic:
                    found[entry.partition] = entry.offset
            if len(batch) < 10_000:
                return found
            start = batch[-1].offset + 1


def to_record(topic: str, partition: int, item: Any) -> Record:
    key = bytes(item.key())
    return Record(
        topic,
        partition,
        int(item.offset()),
        int(item.timestamp()),
        key or None,
        bytes(item.value()),
    )


class FluvioTail(Tail):
    """One async consumer stream per partition, merged into batches."""

    def __init__(
        self,
        log: FluvioLog,
        topic: str,
        partitions: list[int],
        start: StartPosition,
        max_batch: int,
        smartmodules: Sequence[SmartModuleInvocation],
    ) -> None:
        self._log = log
        self._topic = topic
        self._partitions = partitions
        self._start = start
        self._max_batch = max_batch
        self._config = consumer_config(smartmodules)
        self._next: dict[int, int] = {}
        self._queue: asyncio.Queue[Record | BaseException] = asyncio.Queue(maxsize=10_000)
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def positions(self) -> dict[int, int]:
        return dict(self._next)

    async def start(self) -> dict[int, int]:
        if self._tasks:
            return self.positions
        description = await self._log.describe_topic(self._topic)
        bounds = {p.partition: (p.start_offset, p.end_offset) for p in description.partitions}
        spec = self._log.topic(self._topic)
        self._next = resolve_start(spec, self._start, self._partitions, bounds)
        for partition in self._partitions:
            self._tasks.append(asyncio.create_task(self._pump(partition)))
        return self.positions

    async def _pump(self, partition: int) -> None:
        try:
            consumer = await asyncio.to_thread(
                self._log._client.partition_consumer, self._topic, partition
            )
            stream = consumer.async_stream_with_config(
                fluvio.Offset.absolute(self._next[partition]), self._config
            )
            async for item in stream:
                # The queue bound makes a slow reader slow the consumer streams down.
                await self._queue.put(to_record(self._topic, partition, item))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._queue.put(map_error(exc, self._topic))

    def __aiter__(self) -> AsyncIterator[list[Record]]:
        return self._run()

    async def _run(self) -> AsyncIterator[list[Record]]:
        await self.start()
        while not self._closed:
            item = await self._queue.get()
            batch: list[Record] = []
            while True:
                if isinstance(item, BaseException):
                    if self._closed:
                        return
                    raise item
                if item.offset >= self._next.get(item.partition, 0):
                    self._next[item.partition] = item.offset + 1
                    batch.append(item)
                if len(batch) >= self._max_batch or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                yield batch

    async def aclose(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._queue.put_nowait(map_error(RuntimeError("tail closed")))
