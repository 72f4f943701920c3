"""The delivery checks of the load test: what counts as lost, late and duplicated."""

from __future__ import annotations

from loadtest.locust.ledger import DeliveryLedger, Outcome
from loadtest.locust.payloads import EventFactory, Numbered, parse_event_id

USER = "lt-test-u0"


def published(factory: EventFactory, n: int) -> list[Numbered]:
    return [factory.next("user_interaction") for _ in range(n)]


def test_event_ids_carry_stream_and_sequence() -> None:
    events = EventFactory("r1-pub0", USER)
    first, second = events.next(), events.next()
    assert parse_event_id(first.event["id"]) == ("r1-pub0", 0) == first.ref
    assert parse_event_id(second.event["id"]) == ("r1-pub0", 1)
    assert first.event["payload"]["context"]["loadtest"] == {"stream": "r1-pub0", "seq": 0}
    assert parse_event_id("3f1c0a") is None
    assert parse_event_id("lt:r1-pub0:x") is None


def test_every_acked_event_after_the_start_is_expected_once() -> None:
    ledger = DeliveryLedger()
    tracker = ledger.tracker(USER)
    events = published(EventFactory("s", USER), 4)
    ledger.acked(USER, events[0], partition=3, offset=9)  # before the subscription starts
    tracker.started("user-events", {3: 10})
    for offset, event in enumerate(events[1:], start=10):
        ledger.acked(USER, event, partition=3, offset=offset)
    assert set(tracker.pending) == {e.ref for e in events[1:]}

    assert tracker.delivered("user-events", 3, 10, events[1].ref) is Outcome.FIRST
    assert tracker.delivered("user-events", 3, 10, events[1].ref) is Outcome.DUPLICATE
    assert tracker.delivered("user-events", 3, 11, events[2].ref) is Outcome.FIRST
    assert [a.key for a in tracker.overdue(5.0, now=1e12)] == [events[3].ref]
    assert tracker.delivered("user-events", 3, 12, events[3].ref) is Outcome.LATE
    assert ledger.totals == {"expected": 3, "received": 3, "lost": 1, "late": 1, "duplicate": 1}
    assert tracker.resume == {"user-events": {3: 13}}


def test_acks_seen_before_the_subscription_answer_are_expected() -> None:
    ledger = DeliveryLedger()
    events = published(EventFactory("s", USER), 2)
    ledger.acked(USER, events[0], partition=0, offset=4)
    ledger.acked(USER, events[1], partition=0, offset=5)
    tracker = ledger.tracker(USER)
    tracker.started("user-events", {0: 5})
    assert list(tracker.pending) == [events[1].ref]


def test_a_delivery_before_its_ack_is_not_lost() -> None:
    ledger = DeliveryLedger()
    tracker = ledger.tracker(USER)
    tracker.started("user-events", {0: 0})
    event = published(EventFactory("s", USER), 1)[0]
    assert tracker.delivered("user-events", 0, 0, event.ref) is Outcome.FIRST
    ledger.acked(USER, event, partition=0, offset=0)
    assert not tracker.pending
    assert tracker.overdue(0.0) == []
    assert ledger.totals["expected"] == 1


def test_other_users_and_stopped_trackers_expect_nothing() -> None:
    ledger = DeliveryLedger()
    tracker = ledger.tracker(USER)
    tracker.started("user-events", {0: 0})
    ledger.acked("someone-else", published(EventFactory("o", "someone-else"), 1)[0], 0, 0)
    tracker.stop_accepting()
    ledger.acked(USER, published(EventFactory("s", USER), 1)[0], 0, 1)
    assert not tracker.pending


def test_memory_updates_find_the_send_time_of_their_source() -> None:
    ledger = DeliveryLedger()
    event = published(EventFactory("s", USER), 1)[0]
    ledger.acked(USER, event, partition=2, offset=7)
    assert ledger.sent_ms("user-events", 2, 7) == event.sent_ms
    assert ledger.sent_ms("user-events", 2, 8) is None
