"""``RedisLog``: the stream log on Redis Streams, shared by any number of gateway processes.

This module owns the connection pool, the topic registry cache, produce (one Lua script
per call: offsets, ``XADD`` and idempotency together), reads, consumer offsets, readiness
and the retention loop. Key names and the offset-to-id scheme are in ``layout``, the
scripts in ``scripts``, following in ``tail``; ``docs/backends.md`` describes the whole.

An acknowledged produce means the Redis primary has applied the script: the record is in
its memory, readable by every process. Whether it is also on disk or on replicas depends on
the server's persistence settings and on ``wait_replicas``; see ``docs/backends.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
import structlog
from redis import exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.errors import InvalidOffset, TopicExists, Unavailable, UnknownTopic
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
from gateway.streamlog.partitioner import Partitioner
from gateway.streamlog.positions import check_partition
from gateway.streamlog.redis import scripts
from gateway.streamlog.redis.errors import describe_url, mapped
from gateway.streamlog.redis.layout import Layout, after, encode_headers, to_record
from gateway.streamlog.redis.tail import RedisTail

logger = structlog.get_logger(__name__)
_spec_encoder = msgspec.json.Encoder()
_spec_decoder = msgspec.json.Decoder(TopicSpec)

MIN_REDIS = (7, 0)
"""Scripts declared with ``#!lua`` (refused up front when Redis cannot write) need 7.0."""

Placed = tuple[int, bytes | None, bytes, Headers, str | None]
"""A record to write: (partition, key, value, headers, idempotency key)."""

_PRODUCE = scripts.Script(scripts.PRODUCE)
_POSITIONS = scripts.Script(scripts.POSITIONS)
_RETAIN = scripts.Script(scripts.RETAIN)
_CREATE_TOPIC = scripts.Script(scripts.CREATE_TOPIC)
_PROBE = scripts.Script(scripts.PROBE)

T = TypeVar("T")

_ATTEMPTS = 3
_RETRY_DELAY_S = 0.05
_RETRYABLE = (rexc.ConnectionError, rexc.TimeoutError, OSError)
"""Failures worth another attempt on a fresh connection: a server that restarted leaves
closed connections in the pool, and the first command sent on one fails."""

_TOPIC_RELOAD_MIN_S = 0.1
"""An unknown topic name re-reads the registry at most this often (another process may
have created it), so a flood of bad names cannot flood Redis."""


class _Topic:
    __slots__ = ("partitioner", "spec")

    def __init__(self, spec: TopicSpec) -> None:
        self.spec = spec
        self.partitioner = Partitioner(spec.partitions)


class RedisLog(StreamLog):
    """The stream log in Redis (7.0 or later), one stream per topic partition.

    ``topics`` are created when missing at ``open``; an existing topic keeps its partition
    count (a different count in the declaration is refused with ``TopicExists``).
    ``wait_replicas`` > 0 makes every produce also wait (``WAIT``) until that many replicas
    have the record, at most ``wait_timeout_ms``; fewer is answered with ``Unavailable``.
    """

    def __init__(
        self,
        url: str,
        *,
        topics: Sequence[TopicSpec] = (),
        key_prefix: str = "agentmem",
        dedup_window_s: float = 600.0,
        retention_interval_s: float = 30.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1_000,
        block_ms: int = 1_000,
        max_connections: int = 64,
        connect_timeout_s: float = 5.0,
        command_timeout_s: float = 10.0,
    ) -> None:
        if wait_replicas < 0 or wait_timeout_ms < 1:
            raise ValueError("wait_replicas must be >= 0 and wait_timeout_ms >= 1")
        if dedup_window_s <= 0:
            raise ValueError("dedup_window_s must be positive")
        self.url = url
        self.where = describe_url(url)
        self.layout = Layout(key_prefix)
        self.block_ms = block_ms
        self._declared = list(topics)
        self._dedup_window_ms = max(1, int(dedup_window_s * 1000))
        self._retention_interval = retention_interval_s
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout_s
        self._command_timeout = command_timeout_s
        self._client: aioredis.Redis | None = None
        self._topics: dict[str, _Topic] = {}
        self._topics_loaded_at = 0.0
        # Weak: a tail its owner dropped without closing must not stay alive for this set.
        self._tails: weakref.WeakSet[RedisTail] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._in_flight_records = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------

    def _connection_options(self) -> dict[str, Any]:
        return {
            "socket_connect_timeout": self._connect_timeout,
            # redis-py must not resend anything by itself: a produce resent after a lost
            # reply could be written twice. ``_io`` decides what may be sent again.
            "retry": Retry(NoBackoff(), 0),
        }

    async def open(self) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=self._max_connections,
            timeout=self._command_timeout,
            socket_timeout=self._command_timeout,
            **self._connection_options(),
        )
        self._client = aioredis.Redis(connection_pool=pool)
        try:
            with mapped(self.where):
                await self._check_server(self._client)
            await self._load_topics()
            for spec in self._declared:
                await self.create_topic(spec, exist_ok=True)
        except BaseException:
            await self._client.aclose()
            self._client = None
            raise
        self._task = asyncio.create_task(self._retain(), name="redis-log-retention")
        logger.info("log_opened", backend="redis", url=self.where)

    async def _check_server(self, client: aioredis.Redis) -> None:
        info = await client.info("server")
        version = tuple(int(x) for x in str(info.get("redis_version", "0.0")).split(".")[:2])
        if version < MIN_REDIS:
            # Not Unavailable: waiting will not help, the server must change.
            raise RuntimeError(
                f"Redis at {self.where} is version {info.get('redis_version')}; the Redis "
                "backend needs 7.0 or later. Upgrade Redis or use AGENTMEM_STREAM_BACKEND=embedded."
            )
        try:
            policy: dict[Any, Any] = dict(await client.config_get("maxmemory-policy"))
        except rexc.ResponseError:
            return  # CONFIG is often disabled on managed Redis: nothing to check then.
        value = policy.get("maxmemory-policy") or policy.get(b"maxmemory-policy")
        if isinstance(value, bytes):
            value = value.decode()
        if value and value != "noeviction":
            logger.warning(
                "redis_eviction_policy",
                url=self.where,
                policy=value,
                problem="Redis may evict log records and offsets under memory pressure; "
                "set maxmemory-policy noeviction",
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for tail in list(self._tails):
            await tail.aclose()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Produces already sent are answered before the connections go.
        await self._idle.wait()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        logger.info("log_closed", backend="redis", url=self.where)

    @property
    def queued_records(self) -> int:
        """Records sent to Redis whose produce has not been answered yet."""
        return self._in_flight_records

    async def check_writable(self) -> None:
        """Raise ``Unavailable`` unless Redis takes a write now (and has the replicas)."""
        keys, args = [self.layout.probe()], [str(_now_ms())]
        if not self._wait_replicas:
            # No retry: readiness reports what a write meets now.
            await self._io(lambda client: _PROBE(client, keys, args), retry=False)
            return
        reply = await self._io(
            lambda client: self._pipeline(client, _PROBE, keys, args, 500), retry=False
        )
        acked = int(reply[1])
        if acked < self._wait_replicas:
            raise Unavailable(
                f"Only {acked} of the {self._wait_replicas} Redis replicas required "
                f"(wait_replicas) acknowledged a write at {self.where}; check replication."
            )

    def _open_client(self) -> aioredis.Redis:
        if self._client is None or self._closed:
            raise Unavailable("The stream log is closed; retry against a running gateway.")
        return self._client

    async def _io(
        self, operation: Callable[[aioredis.Redis], Awaitable[T]], *, retry: bool = True
    ) -> T:
        """Run ``operation`` on the shared client; temporary failures become ``Unavailable``.

        With ``retry``, a lost connection or a timeout is tried again on a fresh connection,
        a few times: only for operations whose second run changes nothing more."""
        attempts = _ATTEMPTS if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                with mapped(self.where):
                    return await operation(self._open_client())
            except Unavailable as error:
                if (
                    attempt == attempts
                    or self._closed
                    or not isinstance(error.__cause__, _RETRYABLE)
                ):
                    raise
            await asyncio.sleep(_RETRY_DELAY_S * attempt)
        raise AssertionError("unreachable")

    def tail_client(self) -> aioredis.Redis:
        """A client with one connection of its own, for one tail's blocking reads."""
        self._open_client()
        pool = aioredis.ConnectionPool.from_url(
            self.url,
            max_connections=1,
            # A blocked XREAD answers within block_ms: a longer silence is a dead link.
            socket_timeout=self.block_ms / 1000 + self._command_timeout,
            **self._connection_options(),
        )
        return aioredis.Redis(connection_pool=pool)

    def forget_tail(self, tail: RedisTail) -> None:
        self._tails.discard(tail)

    # -- topics -------------------------------------------------------------------------------

    async def _load_topics(self) -> None:
        entries = await self._io(lambda client: client.hgetall(self.layout.topics))
        for blob in entries.values():
            spec = _spec_decoder.decode(blob)
            known = self._topics.get(spec.name)
            if known is None:
                self._topics[spec.name] = _Topic(spec)
            else:
                known.spec = spec
        self._topics_loaded_at = time.monotonic()

    async def create_topic(self, spec: TopicSpec, *, exist_ok: bool = False) -> None:
        if spec.partitions < 1:
            raise ValueError(f"Topic {spec.name!r} needs at least one partition.")
        if "{" in spec.name or "}" in spec.name:
            raise ValueError(f"Topic name {spec.name!r} cannot contain braces.")
        blob = _spec_encoder.encode(spec)
        # No retry: had the first attempt created the topic, the second would call it existing.
        existing = await self._io(
            lambda client: _CREATE_TOPIC(client, [self.layout.topics], [spec.name, blob]),
            retry=False,
        )
        if existing is None:
            self._topics[spec.name] = _Topic(spec)
            return
        current = _spec_decoder.decode(existing)
        self._topics[spec.name] = entry = self._topics.get(spec.name) or _Topic(current)
        entry.spec = current
        if not exist_ok:
            raise TopicExists(f"Topic {spec.name!r} already exists.")
        if current.partitions != spec.partitions:
            raise TopicExists(
                f"Topic {spec.name!r} exists with {current.partitions} partitions; "
                f"it cannot be changed to {spec.partitions}. Declare it with "
                f"{current.partitions} or use a new topic name."
            )
        if current != spec:
            # Retention, event types and the like may change; the partition count may not.
            await self._io(lambda client: client.hset(self.layout.topics, spec.name, blob))
            entry.spec = spec

    def topic(self, name: str) -> TopicSpec:
        return self._get(name).spec

    def topics(self) -> list[TopicSpec]:
        return [t.spec for t in self._topics.values()]

    def _get(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            known = ", ".join(sorted(self._topics)) or "none"
            raise UnknownTopic(f"Unknown topic {name!r}; known topics: {known}.")
        return topic

    async def _find(self, name: str) -> _Topic:
        """The topic, looking in Redis when this process does not know it yet."""
        topic = self._topics.get(name)
        if topic is None and time.monotonic() - self._topics_loaded_at >= _TOPIC_RELOAD_MIN_S:
            await self._load_topics()
        return self._get(name)

    async def describe_topic(self, name: str) -> TopicDescription:
        topic = await self._find(name)
        bounds = await self.partition_bounds(name, range(topic.spec.partitions))
        return TopicDescription(
            spec=topic.spec,
            partitions=[
                PartitionInfo(partition=p, start_offset=s, end_offset=e)
                for p, (s, e) in sorted(bounds.items())
            ],
        )

    async def partition_bounds(
        self, topic: str, partitions: Sequence[int]
    ) -> dict[int, tuple[int, int]]:
        """(start, end) offsets of ``partitions``, read at one instant."""
        layout = self.layout
        keys = [layout.state(topic), *(layout.stream(topic, p) for p in partitions)]
        args = list(partitions)
        flat = await self._io(lambda client: _POSITIONS(client, keys, args))
        return {p: (int(flat[2 * i]), int(flat[2 * i + 1])) for i, p in enumerate(partitions)}

    # -- records ------------------------------------------------------------------------------

    async def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers = (),
        *,
        idempotency_key: str | None = None,
    ) -> Produced:
        entry = await self._find(topic)
        placed = (entry.partitioner(key), key, value, headers, idempotency_key)
        return (await self._append(topic, (placed,)))[0]

    async def produce_batch(self, topic: str, records: Sequence[NewRecord]) -> list[Produced]:
        if not records:
            return []
        entry = await self._find(topic)
        placed: list[Placed] = []
        for record in records:
            partition = record.partition
            if partition is None:
                partition = entry.partitioner(record.key)
            else:
                check_partition(entry.spec, partition)
            placed.append(
                (partition, record.key, record.value, record.headers, record.idempotency_key)
            )
        return await self._append(topic, placed)

    async def _append(self, topic: str, placed: Sequence[Placed]) -> list[Produced]:
        """Write ``placed`` with one script call (and ``WAIT`` when replicas are required).

        A call whose connection failed is sent again: idempotency keys make a second run
        write nothing twice, and the call's nonce makes it answer its own records as written
        rather than as duplicates. A record without a key of its own gets one of the call
        (its nonce and index), which only that call can ever send."""
        self._open_client()
        layout = self.layout
        keys = [layout.state(topic)]
        indexes: dict[str, int] = {}

        def index(key: str) -> int:
            found = indexes.get(key)
            if found is None:
                keys.append(key)
                found = indexes[key] = len(keys)  # Lua's KEYS is 1-based
            return found

        nonce = os.urandom(8).hex()
        args: list[scripts.Arg] = [self._dedup_window_ms, len(placed), nonce]
        for number, (partition, key, value, headers, idempotency_key) in enumerate(placed):
            if idempotency_key is None:
                # "\x00" first: a gateway's keys start with a (non-empty) organization id.
                idempotency_key = f"\x00{nonce}:{number}"
            args += (
                index(layout.stream(topic, partition)),
                partition,
                index(layout.idempotency(topic, idempotency_key)),
                0 if key is None else 1,
                b"" if key is None else key,
                value,
                encode_headers(headers),
            )
        self._in_flight += 1
        self._in_flight_records += len(placed)
        self._idle.clear()
        acked = None
        try:
            if not self._wait_replicas:
                flat = await self._io(lambda client: _PRODUCE(client, keys, args), retry=True)
            else:
                flat, acked = await self._io(
                    lambda client: self._pipeline(
                        client, _PRODUCE, keys, args, self._wait_timeout_ms
                    ),
                    retry=True,
                )
        finally:
            self._in_flight -= 1
            self._in_flight_records -= len(placed)
            if not self._in_flight:
                self._idle.set()
        produced = [
            Produced(int(flat[i]), int(flat[i + 1]), int(flat[i + 2]), duplicate=bool(flat[i + 3]))
            for i in range(0, len(flat), 4)
        ]
        if acked is not None and int(acked) < self._wait_replicas:
            first = produced[0]
            raise Unavailable(
                f"The record was written to the Redis primary at {self.where} (partition "
                f"{first.partition}, offset {first.offset}) but only {acked} of "
                f"{self._wait_replicas} replicas acknowledged it within {self._wait_timeout_ms} "
                "ms, so a failover could lose it. Retry with the same idempotency key, and "
                "check the replicas."
            )
        return produced

    async def _pipeline(
        self,
        client: aioredis.Redis,
        script: scripts.Script,
        keys: Sequence[str],
        args: Sequence[scripts.Arg],
        wait_timeout_ms: int,
    ) -> list[Any]:
        """The script then ``WAIT`` on one connection (``WAIT`` counts the replicas that
        have this connection's writes), in one round trip; [script reply, replicas]."""
        for _ in range(2):
            async with client.pipeline(transaction=False) as pipe:
                script.queue(pipe, keys, args)
                pipe.wait(self._wait_replicas, wait_timeout_ms)
                reply = await pipe.execute(raise_on_error=False)
            if not isinstance(reply[0], rexc.NoScriptError):
                break
            # NOSCRIPT is answered before anything runs: sending the pair again is safe.
            await script.load(client)
        for item in reply:
            if isinstance(item, Exception):
                raise item
        return list(reply)

    async def read(self, topic: str, partition: int, offset: int, max_records: int) -> list[Record]:
        check_partition((await self._find(topic)).spec, partition)
        if offset < 0:
            raise InvalidOffset(f"Offset {offset} is negative; offsets start at 0.")
        if max_records <= 0:
            return []
        stream = self.layout.stream(topic, partition)
        entries = await self._io(
            lambda client: client.xrange(stream, after(offset), "+", count=max_records)
        )
        found: list[Any] = list(entries or ())
        return [to_record(topic, partition, i, fields) for i, fields in found]

    def tail(
        self,
        topic: str,
        partitions: Sequence[int] | None = None,
        start: StartPosition = "end",
        *,
        max_batch: int = 500,
    ) -> Tail:
        self._open_client()
        tail = RedisTail(self, topic, partitions, start, max_batch)
        self._tails.add(tail)
        return tail

    # -- consumer offsets ------------------------------------------------------------------------

    async def commit_offsets(self, consumer: str, topic: str, offsets: Mapping[int, int]) -> None:
        await self._find(topic)
        if not offsets:
            return
        key = self.layout.consumer(topic, consumer)
        mapping: dict[Any, Any] = {str(p): str(o) for p, o in offsets.items()}
        await self._io(lambda client: client.hset(key, mapping=mapping))

    async def fetch_offsets(self, consumer: str, topic: str) -> dict[int, int]:
        await self._find(topic)
        key = self.layout.consumer(topic, consumer)
        stored = await self._io(lambda client: client.hgetall(key))
        return {int(p): int(o) for p, o in stored.items()}

    # -- retention -----------------------------------------------------------------------------

    async def enforce_retention(self) -> int:
        """Remove expired records and records over a size cap now; returns how many.

        Idempotency keys need no sweep: they expire by themselves (``PX``)."""
        removed = 0
        # Picks up topics created, and specs changed, by other processes as well.
        await self._load_topics()
        for name, topic in list(self._topics.items()):
            spec = topic.spec
            if spec.retention_ms is None and spec.max_partition_bytes is None:
                continue
            limits = [
                -1 if spec.retention_ms is None else spec.retention_ms,
                -1 if spec.max_partition_bytes is None else spec.max_partition_bytes,
            ]
            for partition in range(spec.partitions):
                keys = [self.layout.state(name), self.layout.stream(name, partition)]
                args: list[scripts.Arg] = [partition, *limits]
                # Trimming again to the same point removes nothing: safe to retry.
                removed += int(await self._io(functools.partial(_RETAIN, keys=keys, args=args)))
        return removed

    async def _retain(self) -> None:
        while True:
            await asyncio.sleep(self._retention_interval)
            try:
                removed = await self.enforce_retention()
            except Exception:
                logger.exception("retention_failed", backend="redis")
            else:
                if removed:
                    logger.info("retention_removed", records=removed)


def _now_ms() -> int:
    return int(time.time() * 1000)
