"""Following partitions of a Redis-backed topic with ``XREAD BLOCK``.

Stream ids are offsets (see ``layout``), so one loop does both the replay and the live
part: each ``XREAD`` asks every followed stream for the entries after the next offset to
deliver, and Redis answers at once while stored records remain, or blocks until any of the
streams gets one. Because the position is the id itself there is no switch-over to get
wrong: no record is skipped or repeated, whichever process wrote it.

Each tail has its own connection, since a blocked ``XREAD`` holds one; the gateway keeps
one tail per topic (``gateway/ws/fanout.py``), so that is a connection per followed
topic. A lost connection is re-established with backoff and the tail resumes from its
positions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
import structlog
from redis import exceptions as rexc

from gateway.streamlog.interface import Record, StartPosition, Tail
from gateway.streamlog.positions import check_partition, resolve_start
from gateway.streamlog.redis.layout import after, to_record

if TYPE_CHECKING:
    from gateway.streamlog.redis.log import RedisLog

logger = structlog.get_logger(__name__)

_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0


class RedisTail(Tail):
    def __init__(
        self,
        log: RedisLog,
        topic: str,
        partitions: Sequence[int] | None,
        start: StartPosition,
        max_batch: int,
    ) -> None:
        spec = log.topic(topic)
        chosen = list(range(spec.partitions)) if partitions is None else sorted(set(partitions))
        for partition in chosen:
            check_partition(spec, partition)
        self._log = log
        self._topic = topic
        self._partitions = chosen
        self._streams = {log.layout.stream(topic, p): p for p in chosen}
        self._start = start
        self._max_batch = max(1, max_batch)
        self._next: dict[int, int] = {}
        self._started = False
        self._closed = False
        self._stop = asyncio.Event()
        self._iterator: AsyncIterator[list[Record]] | None = None

    @property
    def positions(self) -> dict[int, int]:
        return dict(self._next)

    def __aiter__(self) -> AsyncIterator[list[Record]]:
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

    async def start(self) -> dict[int, int]:
        """Resolve the start position now (``positions`` is then known); returns it."""
        if not self._started:
            await self._resolve_start()
            self._started = True
        return self.positions

    async def aclose(self) -> None:
        self._closed = True
        self._stop.set()
        self._log.forget_tail(self)

    async def _resolve_start(self) -> None:
        bounds = await self._log.partition_bounds(self._topic, self._partitions)
        spec = self._log.topic(self._topic)
        self._next = resolve_start(spec, self._start, self._partitions, bounds)

    async def _run(self) -> AsyncIterator[list[Record]]:
        await self.start()
        client = self._log.tail_client()
        stop = asyncio.ensure_future(self._stop.wait())
        backoff = _BACKOFF_MIN_S
        try:
            while not self._closed:
                try:
                    reply = await self._read(client, stop)
                except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
                    if self._closed:
                        break
                    logger.warning(
                        "tail_reconnecting", topic=self._topic, error=str(exc), retry_s=backoff
                    )
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(backoff):
                            await asyncio.shield(stop)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
                    continue
                backoff = _BACKOFF_MIN_S
                if reply is None:
                    break
                records = self._records(reply)
                for begin in range(0, len(records), self._max_batch):
                    chunk = records[begin : begin + self._max_batch]
                    for record in chunk:
                        self._next[record.partition] = record.offset + 1
                    yield chunk
                    if self._closed:
                        break
        finally:
            stop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop
            await client.aclose()

    async def _read(self, client: aioredis.Redis, stop: asyncio.Future[Any]) -> Any:
        """One ``XREAD`` from the current positions; ``None`` when the tail was closed."""
        streams: dict[Any, Any] = {key: after(self._next[p]) for key, p in self._streams.items()}
        read = asyncio.ensure_future(
            client.xread(streams, count=self._max_batch, block=self._log.block_ms)
        )
        try:
            await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not read.done():
                # Closed while blocked: drop the pending XREAD (its connection goes with it).
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError, rexc.RedisError, OSError):
                    await read
        if read.cancelled():
            return None
        return read.result()

    def _records(self, reply: Any) -> list[Record]:
        """The new records of an ``XREAD`` reply, checked against the positions."""
        if not reply:
            return []
        items = reply.items() if isinstance(reply, dict) else reply
        records: list[Record] = []
        for stream, entries in items:
            name = stream.decode() if isinstance(stream, bytes) else stream
            partition = self._streams[name]
            expected = self._next[partition]
            for stream_id, fields in entries:
                record = to_record(self._topic, partition, stream_id, fields)
                if record.offset < expected:
                    continue
                # A jump forward means retention removed records before they were read.
                expected = record.offset + 1
                records.append(record)
        return records
