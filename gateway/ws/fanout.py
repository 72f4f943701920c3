"""Fan-out: one tail per topic per process feeds every subscription of that topic.

A subscription is either *attached* to its topic's feed (live) or *catching up* by reading
the log itself. It catches up from its start position until it has every record the feed
has dispatched, then attaches in one synchronous step; from then on the feed hands it each
record once, checked against the subscription's next offset per partition, so nothing is
skipped or repeated at the switch. When its session's send queue is full, the subscription
detaches and catches up again from the first record it could not queue: fan-out never
waits for a slow client, and the client still gets every record, in order.

Subscriptions with SmartModule filters receive the chain's output records; the feed
evaluates each shared chain once per batch for all its subscriptions. Tenancy is applied
here, to every delivery, by the owner of the input record, whatever the filters.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog

from gateway.auth.tenancy import record_owner
from gateway.auth.tokens import Principal
from gateway.smartmodules import SmartModuleError
from gateway.streamlog.interface import Record, StreamLog, Tail
from gateway.ws.filters import FilterChain
from gateway.ws.frames import EventFrame, json_prefix, msgpack_prefix
from gateway.ws.outbox import Outbox

logger = structlog.get_logger(__name__)

Owner = tuple[str | None, str | None]


class Owned(Protocol):
    """What a subscription needs from its session."""

    principal: Principal | None
    outbox: Outbox
    binary: bool

    def count_delivery(self, n: int) -> None: ...

    def subscription_failed(self, name: str, error: SmartModuleError) -> None: ...


def visible(principal: Principal | None, owner: Owner) -> bool:
    if principal is None or owner[0] != principal.organization_id:
        return False
    return principal.is_admin or owner[1] == principal.user_id


class Subscription:
    def __init__(
        self,
        session: Owned,
        name: str,
        feed: TopicFeed,
        positions: dict[int, int],
        chain: FilterChain | None = None,
    ) -> None:
        self.session = session
        self.name = name
        self.feed = feed
        self.next = positions
        self.chain = chain
        self.closed = False
        self._attached = False
        self._catch_up: asyncio.Task[None] | None = None
        if session.binary:
            prefix = msgpack_prefix(name)
            self._encode: Callable[[EventFrame], bytes] = lambda frame: frame.msgpack(prefix)
        else:
            prefix = json_prefix(name)
            self._encode = lambda frame: frame.json(prefix)

    @property
    def topic(self) -> str:
        return self.feed.topic

    def start(self) -> None:
        self.feed.join(self)
        self._catch_up = asyncio.create_task(self._run_catch_up(), name=f"catch-up:{self.name}")

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.feed.detach(self)
        self.feed.leave(self)
        if self._catch_up is not None and not self._catch_up.done():
            self._catch_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._catch_up

    # -- live: called by the feed, synchronously ----------------------------------------------

    def take(
        self, frames: list[tuple[EventFrame, Owner]], seen: dict[int, int] | None = None
    ) -> int:
        """Queue ``frames``; ``seen`` (filtered subscriptions) is where the chain's input
        ended per partition, so records the chain dropped are not read again later.
        Returns the number of deliveries queued (or sent)."""
        next_offsets = self.next
        principal = self.session.principal
        encode = self._encode
        # Each new record: its partition, the next offset after it, its frame if visible.
        steps: list[tuple[int, int, bytes | None]] = []
        wire: list[bytes] = []
        for frame, owner in frames:
            record = frame.record
            expected = next_offsets.get(record.partition)
            if expected is None or record.offset < expected:
                continue
            data = encode(frame) if visible(principal, owner) else None
            if data is not None:
                wire.append(data)
            steps.append((record.partition, record.offset + 1, data))
        # The usual case in one step: every frame fits, all offered at once.
        if wire and not self.session.outbox.offer_all(wire):
            delivered, full = self._take_some(steps)
            if full:
                return delivered
        else:
            delivered = len(wire)
            for partition, end, _ in steps:
                next_offsets[partition] = end
        if seen:
            for partition, end in seen.items():
                if next_offsets.get(partition, end) < end:
                    next_offsets[partition] = end
        return delivered

    def _take_some(self, steps: list[tuple[int, int, bytes | None]]) -> tuple[int, bool]:
        """Offer the frames of ``steps`` one by one until the queue is full; then detach and
        catch up from the first record refused. Returns the deliveries queued and whether
        the queue filled."""
        next_offsets = self.next
        outbox = self.session.outbox
        delivered = 0
        for partition, end, data in steps:
            if data is not None:
                if not outbox.offer(data):
                    # Full: this record and everything after it come from the log later.
                    self.feed.detach(self)
                    self._attached = False
                    self._catch_up = asyncio.create_task(
                        self._run_catch_up(), name=f"catch-up:{self.name}"
                    )
                    return delivered, True
                delivered += 1
            next_offsets[partition] = end
        return delivered, False

    def report(self, errors: list[SmartModuleError]) -> None:
        for error in errors:
            self.session.subscription_failed(self.name, error)

    # -- catching up from the log ---------------------------------------------------------------

    async def _run_catch_up(self) -> None:
        log, topic, feed = self.feed.log, self.feed.topic, self.feed
        outbox = self.session.outbox
        while not self.closed:
            behind = [p for p, n in self.next.items() if n < feed.positions.get(p, 0)]
            if not behind:
                feed.attach(self)
                self._attached = True
                return
            for partition in behind:
                target = feed.positions[partition]
                while self.next[partition] < target and not self.closed:
                    records = await log.read(
                        topic,
                        partition,
                        self.next[partition],
                        min(500, target - self.next[partition]),
                    )
                    if not records:
                        break
                    records = [r for r in records if r.offset < target]
                    if not records:
                        break
                    owners = {r.offset: record_owner(r.value) for r in records}
                    outputs: list[Any] = records
                    if self.chain is not None:
                        outputs, errors = self.chain.run(records)
                        self.report(errors)
                        if self.closed:
                            return
                    delivered = 0
                    for output in outputs:
                        owner = owners.get(output.offset, (None, None))
                        if visible(self.session.principal, owner):
                            frame = self._encode(EventFrame(output))
                            while not outbox.offer(frame):
                                if self.closed or outbox.closed:
                                    return
                                await outbox.wait_room()
                            delivered += 1
                    self.next[partition] = records[-1].offset + 1
                    if delivered:
                        self.session.count_delivery(delivered)


class TopicFeed:
    """The one tail of a topic in this process, and the subscriptions it feeds."""

    def __init__(
        self,
        log: StreamLog,
        topic: str,
        on_empty: Callable[[TopicFeed], None],
        *,
        key: str | None = None,
        through: Sequence[dict[str, Any]] | None = None,
        delivered: Callable[[int], None] | None = None,
    ) -> None:
        self.log = log
        self._delivered = delivered
        """Told how many deliveries each dispatch made (the deliveries metric)."""
        self.topic = topic
        self.key = key or topic
        self.through = through
        """A chain the log runs for this feed: what arrives is already its output."""
        self.positions: dict[int, int] = {}
        """Everything before these offsets has been dispatched."""
        self._on_empty = on_empty
        self._members: set[Subscription] = set()
        self._attached: dict[Subscription, None] = {}
        self._tail: Tail | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._start_error: BaseException | None = None

    async def start(self) -> None:
        """Start the tail at the end (idempotent; concurrent callers wait for the first)."""
        if self._tail is None:
            if self.through is None:
                self._tail = self.log.tail(self.topic, start="end", max_batch=1_000)
            else:
                self._tail = self.log.tail_through(
                    self.topic, self.through, start="end", max_batch=1_000
                )
            try:
                self.positions = await self._tail.start()  # type: ignore[attr-defined]
            except BaseException as exc:
                self._start_error = exc
                self._started.set()
                raise
            self._task = asyncio.create_task(self._run(), name=f"feed:{self.topic}")
            self._started.set()
        await self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    async def stop(self) -> None:
        if self._tail is not None:
            await self._tail.aclose()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def join(self, subscription: Subscription) -> None:
        self._members.add(subscription)

    def leave(self, subscription: Subscription) -> None:
        self._members.discard(subscription)
        if not self._members:
            self._on_empty(self)

    def attach(self, subscription: Subscription) -> None:
        self._attached[subscription] = None

    def detach(self, subscription: Subscription) -> None:
        self._attached.pop(subscription, None)

    @property
    def subscriptions(self) -> int:
        return len(self._members)

    async def _run(self) -> None:
        assert self._tail is not None
        try:
            async for batch in self._tail:
                self._dispatch(batch)
        except Exception:
            logger.exception("feed_failed", topic=self.topic)

    def _dispatch(self, batch: list[Record]) -> None:
        positions = self.positions
        for record in batch:
            positions[record.partition] = record.offset + 1
        plain: list[tuple[EventFrame, Owner]] | None = None
        owners: dict[tuple[int, int], Owner] | None = None
        seen: dict[int, int] = {}
        shared: dict[str, tuple[list[tuple[EventFrame, Owner]], list[SmartModuleError]]] = {}
        through_log = self.through is not None
        delivered = 0
        for subscription in list(self._attached):
            chain = None if through_log else subscription.chain
            if chain is None:
                if plain is None:
                    plain = [(EventFrame(r), record_owner(r.value)) for r in batch]
                delivered += subscription.take(plain)
                continue
            if owners is None:
                owners = {(r.partition, r.offset): record_owner(r.value) for r in batch}
                for record in batch:
                    seen[record.partition] = record.offset + 1
            result = shared.get(chain.key) if chain.shared else None
            if result is None:
                outputs, errors = chain.run(batch)
                frames = [
                    (EventFrame(o), owners.get((o.partition, o.offset), (None, None)))
                    for o in outputs
                ]
                result = (frames, errors)
                if chain.shared:
                    shared[chain.key] = result
            delivered += subscription.take(result[0], seen)
            subscription.report(result[1])
        if delivered and self._delivered is not None:
            self._delivered(delivered)
