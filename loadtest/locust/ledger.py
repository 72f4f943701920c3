"""Which events must reach which subscriber: lost and duplicated deliveries.

The gateway's guarantee (docs/protocol.md, *Delivery guarantees*): a subscription receives
every record of its user written at or after its start position, once, in offset order
per partition. The ledger turns that into checks:

- Publishers (WebSocket, batches, HTTP) record each *acknowledged* event: user, topic,
  partition, offset, stream and sequence number (``DeliveryLedger.acked``).
- A subscriber's ``DeliveryTracker`` knows where each of its subscriptions started. Every
  acknowledged event of its user at or after that position is *expected*.
- An expected event that has not arrived ``timeout_s`` after its acknowledgement is a
  **lost delivery**; one that arrives later still is a **late delivery**; one that
  arrives twice on the same subscriber is a **duplicate delivery**.

Publishes that failed are not expected (nothing was acknowledged), so an overloaded
gateway refusing writes shows up as publish failures, not as lost deliveries. Everything
here lives in one locust process: identities are namespaced per process, so a
subscriber's user only has publishers in its own process, also in distributed runs.
Everything runs on gevent's loop: no locks are needed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from loadtest.locust.payloads import Numbered

Key = tuple[str, int]
"""``(stream, seq)``: one event of one publishing user instance."""


@dataclass(frozen=True, slots=True)
class Acked:
    user_id: str
    topic: str
    partition: int
    offset: int
    key: Key
    sent_ms: int
    acked_at: float
    """``time.monotonic()`` when the acknowledgement arrived."""


class Outcome(Enum):
    FIRST = "first"
    DUPLICATE = "duplicate"
    LATE = "late"


class DeliveryTracker:
    """The expected and received events of one subscriber (all its data subscriptions)."""

    def __init__(self, ledger: DeliveryLedger, user_id: str) -> None:
        self.ledger = ledger
        self.user_id = user_id
        self.start: dict[str, dict[int, int]] = {}
        """topic -> partition -> first offset the subscription delivers."""
        self.resume: dict[str, dict[int, int]] = {}
        """topic -> partition -> next offset to ask for after a reconnect."""
        self.pending: dict[Key, Acked] = {}
        self._seen: dict[Key, float] = {}
        self._lost: dict[Key, float] = {}
        self.accepting = True

    # -- subscriptions -------------------------------------------------------------------------

    def started(self, topic: str, positions: dict[int, int]) -> None:
        """A subscription to ``topic`` began at ``positions``: expect what was acked since."""
        if topic in self.start:
            return  # resumed after a reconnect: expectations kept coming meanwhile
        self.start[topic] = dict(positions)
        self.resume[topic] = dict(positions)
        for acked in self.ledger.recent(self.user_id, topic):
            self.expect(acked)

    def expect(self, acked: Acked) -> None:
        if not self.accepting:
            return
        start = self.start.get(acked.topic)
        if start is None or acked.offset < start.get(acked.partition, acked.offset + 1):
            return
        if acked.key in self.pending or acked.key in self._lost:
            return  # acknowledged again (a retried publish answered as a duplicate)
        self.ledger.totals["expected"] += 1
        if acked.key not in self._seen:  # else it arrived before its publisher saw the ack
            self.pending[acked.key] = acked

    # -- deliveries ----------------------------------------------------------------------------

    def delivered(self, topic: str, partition: int, offset: int, key: Key) -> Outcome:
        now = time.monotonic()
        positions = self.resume.setdefault(topic, {})
        positions[partition] = max(positions.get(partition, 0), offset + 1)
        totals = self.ledger.totals
        if key in self._seen:
            totals["duplicate"] += 1
            return Outcome.DUPLICATE
        self._seen[key] = now
        totals["received"] += 1
        self._prune(now)
        if self.pending.pop(key, None) is not None:
            return Outcome.FIRST
        if self._lost.pop(key, None) is not None:
            totals["late"] += 1
            return Outcome.LATE
        return Outcome.FIRST  # delivered before its publisher saw the ack

    def overdue(self, timeout_s: float, now: float | None = None) -> list[Acked]:
        """Expected events not delivered ``timeout_s`` after their ack: now declared lost."""
        now = time.monotonic() if now is None else now
        late = [a for a in self.pending.values() if now - a.acked_at >= timeout_s]
        for acked in late:
            del self.pending[acked.key]
            self._lost[acked.key] = now
        self.ledger.totals["lost"] += len(late)
        return late

    def stop_accepting(self) -> None:
        """The subscriber is stopping: events acked from now on are not expected any more."""
        self.accepting = False

    def _prune(self, now: float) -> None:
        horizon = now - self.ledger.retention_s
        for store in (self._seen, self._lost):
            while store:
                key, at = next(iter(store.items()))
                if at >= horizon:
                    break
                del store[key]


class DeliveryLedger:
    """Acknowledged events of this process and the trackers that expect them."""

    def __init__(self, retention_s: float = 120.0, recent_s: float = 30.0) -> None:
        self.retention_s = retention_s
        """How long deliveries are remembered (duplicate detection) and publish times kept
        (to match memory updates with the event they came from)."""
        self.recent_s = recent_s
        self._recent: dict[tuple[str, str], deque[Acked]] = {}
        self._trackers: dict[str, set[DeliveryTracker]] = {}
        self._sources: dict[tuple[str, int, int], tuple[float, int]] = {}
        self.totals = dict.fromkeys(("expected", "received", "lost", "late", "duplicate"), 0)
        """Over every subscriber of the process; "received" counts first deliveries of
        events sent by this process, expected or not."""

    def acked(self, user_id: str, event: Numbered, partition: int, offset: int) -> None:
        now = time.monotonic()
        acked = Acked(user_id, event.topic, partition, offset, event.ref, event.sent_ms, now)
        recent = self._recent.setdefault((user_id, event.topic), deque())
        recent.append(acked)
        while recent and now - recent[0].acked_at > self.recent_s:
            recent.popleft()
        self._sources[(event.topic, partition, offset)] = (now, event.sent_ms)
        self._prune_sources(now)
        for tracker in self._trackers.get(user_id, ()):
            tracker.expect(acked)

    def recent(self, user_id: str, topic: str) -> Iterable[Acked]:
        return tuple(self._recent.get((user_id, topic), ()))

    def sent_ms(self, topic: str, partition: int, offset: int) -> int | None:
        """When the event now at ``topic/partition/offset`` was sent, if this process sent it."""
        found = self._sources.get((topic, partition, offset))
        return None if found is None else found[1]

    def tracker(self, user_id: str) -> DeliveryTracker:
        tracker = DeliveryTracker(self, user_id)
        self._trackers.setdefault(user_id, set()).add(tracker)
        return tracker

    def detach(self, tracker: DeliveryTracker) -> None:
        trackers = self._trackers.get(tracker.user_id)
        if trackers is not None:
            trackers.discard(tracker)

    def _prune_sources(self, now: float) -> None:
        sources = self._sources
        while sources:
            position, (at, _) = next(iter(sources.items()))
            if now - at <= self.retention_s:
                break
            del sources[position]
