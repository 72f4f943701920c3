"""The stream log interface: topics, records, offsets and the operations every backend offers.

A topic has a fixed number of partitions. Each partition is an append-only sequence of
records whose offsets start at 0 and increase by exactly 1. A backend answers ``produce``
only once the record is durable, so an offset handed to a client is never taken back.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import msgspec

Headers: TypeAlias = tuple[tuple[str, bytes], ...]


class Record(msgspec.Struct, frozen=True, gc=False):
    """One stored record of a topic partition."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    """Milliseconds since the Unix epoch, assigned by the log when the record was written."""
    key: bytes | None
    value: bytes
    headers: Headers = ()


class NewRecord(msgspec.Struct, frozen=True, gc=False):
    """A record to produce: the log assigns its partition (unless given), offset and timestamp."""

    value: bytes
    key: bytes | None = None
    headers: Headers = ()
    partition: int | None = None
    idempotency_key: str | None = None
    """Records with a key already written to the topic within the dedup window are not
    written again; the result names the original position with ``duplicate=True``."""


class Produced(msgspec.Struct, frozen=True, gc=False):
    """Where a durable record landed."""

    partition: int
    offset: int
    timestamp: int
    duplicate: bool = False


class TopicSpec(msgspec.Struct, frozen=True):
    """How a topic is declared (see ``topics.toml``)."""

    name: str
    partitions: int
    retention_ms: int | None = None
    """Records older than this are removed in the background; ``None`` keeps them forever."""
    max_partition_bytes: int | None = None
    """Optional size cap per partition: the oldest records go first when it is exceeded."""
    compression: Literal["none", "gzip", "lz4", "snappy", "zstd"] = "none"
    event_types: tuple[str, ...] = ()
    """Event types a client may publish to this topic (empty: any)."""
    client_writable: bool = True
    """False for topics only the system writes (``memory-updates``)."""
    description: str = ""


class PartitionInfo(msgspec.Struct, frozen=True):
    partition: int
    start_offset: int
    """Offset of the oldest record still stored (equals ``end_offset`` when empty)."""
    end_offset: int
    """Offset the next record will get."""


class TopicDescription(msgspec.Struct, frozen=True):
    spec: TopicSpec
    partitions: list[PartitionInfo]


StartPosition: TypeAlias = Literal["beginning", "end"] | Mapping[int, int]
"""Where a tail starts: the oldest stored record, the next record to be written, or the
next offset to deliver for each partition."""


class Tail(abc.ABC):
    """A live view of some partitions of a topic.

    Iterating yields non-empty lists of records: first what the log already holds from the
    start position, then new records as they are committed. Records of one partition come in
    offset order, with no gap and no duplicate at the switch from stored to live.
    """

    @property
    @abc.abstractmethod
    def positions(self) -> dict[int, int]:
        """The next offset to deliver for each partition of the tail."""

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[list[Record]]: ...

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop the tail; a pending iteration ends with ``StopAsyncIteration``."""

    async def __aenter__(self) -> Tail:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class StreamLog(abc.ABC):
    """Operations every stream log backend offers."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, create missing storage and apply the declared topics."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Answer pending produces, stop tails and background work, release storage."""

    async def __aenter__(self) -> StreamLog:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def check_writable(self) -> None:
        """Raise ``Unavailable`` unless the log can take a write now (readiness)."""

    @property
    def queued_records(self) -> int:
        """Records accepted but not yet durable (0 when the backend does not queue)."""
        return 0

    @property
    def writer_restarts(self) -> int:
        """Times the backend's writing process died and was replaced (0 when it has none)."""
        return 0

    @property
    def group_commits(self) -> int:
        """Group commits done since the log opened (0 when the backend does not group)."""
        return 0

    @property
    def committed_records(self) -> int:
        """Records answered by those group commits, duplicates included."""
        return 0

    # -- topics ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_topic(self, spec: TopicSpec, *, exist_ok: bool = False) -> None: ...

    @abc.abstractmethod
    def topic(self, name: str) -> TopicSpec:
        """The spec of a known topic; raises ``UnknownTopic``. Never does I/O."""

    @abc.abstractmethod
    def topics(self) -> list[TopicSpec]: ...

    @abc.abstractmethod
    async def describe_topic(self, name: str) -> TopicDescription: ...

    # -- records --------------------------------------------------------------------------

    @abc.abstractmethod
    async def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers = (),
        *,
        idempotency_key: str | None = None,
    ) -> Produced:
        """Append one record; returns once it is durable (see ``NewRecord.idempotency_key``)."""

    def produce_nowait(
        self, topic: str, key: bytes | None, value: bytes, *, idempotency_key: str | None = None
    ) -> asyncio.Future[Produced]:
        """Start a produce and return its future at once (no task per call).

        Raises at once what ``produce`` would raise before queueing (unknown topic, closed
        log); the future carries commit failures.
        """
        return asyncio.ensure_future(
            self.produce(topic, key, value, idempotency_key=idempotency_key)
        )

    def produce_soon(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        done: Callable[[Produced | BaseException], None],
        *,
        idempotency_key: str | None = None,
    ) -> None:
        """Start a produce; ``done`` is called once, on the event loop, with the record's
        position or the exception that failed it.

        The callback form needs no future per call; the embedded log calls ``done`` straight
        from its group commit. Raises at once what ``produce`` would raise before queueing.
        """
        future = self.produce_nowait(topic, key, value, idempotency_key=idempotency_key)
        future.add_done_callback(lambda finished: done(_outcome(finished)))

    @abc.abstractmethod
    async def produce_batch(self, topic: str, records: Sequence[NewRecord]) -> list[Produced]:
        """Append several records atomically; results are in input order."""

    @abc.abstractmethod
    async def read(self, topic: str, partition: int, offset: int, max_records: int) -> list[Record]:
        """Stored records of one partition from ``offset`` on (fewer when the end is reached)."""

    @abc.abstractmethod
    def tail(
        self,
        topic: str,
        partitions: Sequence[int] | None = None,
        start: StartPosition = "end",
        *,
        max_batch: int = 500,
    ) -> Tail:
        """Follow ``partitions`` (all when ``None``) of ``topic`` from ``start``."""

    runs_smartmodules: bool = False
    """Whether ``tail_through`` runs SmartModule chains where the records are (a cluster)."""

    def tail_through(
        self,
        topic: str,
        smartmodules: Sequence[Mapping[str, Any]],
        start: StartPosition = "end",
        *,
        max_batch: int = 500,
    ) -> Tail:
        """Follow every partition of ``topic`` through a chain run by the log itself
        (``[{"smartmodule": NAME, "params": {...}}, ...]``); only when
        ``runs_smartmodules``."""
        raise NotImplementedError(f"{type(self).__name__} does not run SmartModules itself")

    # -- consumer offsets -----------------------------------------------------------------

    @abc.abstractmethod
    async def commit_offsets(self, consumer: str, topic: str, offsets: Mapping[int, int]) -> None:
        """Store, per partition, the next offset ``consumer`` will process."""

    @abc.abstractmethod
    async def fetch_offsets(self, consumer: str, topic: str) -> dict[int, int]:
        """Offsets committed by ``consumer`` for ``topic`` (partitions never committed absent)."""


def _outcome(future: asyncio.Future[Produced]) -> Produced | BaseException:
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception() or future.result()
