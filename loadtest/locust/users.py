"""The simulated users. Each request or measurement is a locust request event (a row).

| type | name | what it measures |
| --- | --- | --- |
| WS | ``connect->welcome`` | socket open + ``auth`` until ``welcome`` |
| WS | ``publish->ack <event type>`` | ``publish`` until its durable ``ack`` |
| WS | ``publish_batch->batch_ack`` | ``publish_batch`` until its ``batch_ack`` |
| WS | ``subscribe->subscribed`` | ``subscribe`` until ``subscribed`` |
| WS | ``subscribe->first event <topic>`` | ``subscribe`` until the first event |
| WS | ``publish->delivery <topic>`` | the event's send time until a subscriber has it |
| WS | ``publish->memory update`` | an event's send time until its memory update arrives |
| WS | ``session closed``, ``subscription error`` | failures only |
| DELIVERY | ``lost delivery``, ``duplicate delivery``, ``late delivery`` | failures only |
| POST | ``/api/v1/stream/events``, ``/api/v1/stream/batch``, ``/api/v1/memories/search`` | HTTP |
"""

from __future__ import annotations

import random
import time
from typing import Any

import gevent
from gevent.lock import BoundedSemaphore
from locust import User, task
from locust.contrib.fasthttp import FastHttpUser

from loadtest.locust.context import Identity, LoadTest
from loadtest.locust.ledger import DeliveryTracker, Outcome
from loadtest.locust.payloads import (
    DATA_TOPICS,
    MEMORY_TOPIC,
    EventFactory,
    Numbered,
    now_ms,
    parse_event_id,
    search_query,
)
from loadtest.locust.wsclient import (
    Answer,
    ConnectionLost,
    GatewaySession,
    websocket_url,
)

WS = "WS"
DELIVERY = "DELIVERY"
SEARCH_PATH = "/api/v1/memories/search"


class Failure(Exception):
    """A failed measurement; its message is the row of locust's failure table."""


def _report(
    user: User,
    request_type: str,
    name: str,
    response_time: float,
    length: int = 0,
    exception: BaseException | None = None,
) -> None:
    user.environment.events.request.fire(
        request_type=request_type,
        name=name,
        response_time=response_time,
        response_length=length,
        exception=exception,
        context={},
    )


def _think(user: User, factor: float = 1.0) -> float:
    mean = LoadTest.of(user.environment).settings.think_time_s * factor
    return random.uniform(0.5 * mean, 1.5 * mean)


# -- WebSocket users ---------------------------------------------------------------------------


class GatewayWsUser(User):
    """A user with one WebSocket session, reconnecting when it ends."""

    abstract = True
    role = "ws"
    think_factor = 1.0

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.lt = LoadTest.of(environment)
        self.identity: Identity = self.lt.identity(self.role)
        self.session: GatewaySession | None = None
        self.stopping = False
        self._next_connect = 0.0

    def wait_time(self) -> float:
        return _think(self, self.think_factor)

    def on_start(self) -> None:
        self.connected()

    def on_stop(self) -> None:
        self.stopping = True
        if self.session is not None:
            self.session.close()

    def connected(self) -> bool:
        """Whether a session is open, reconnecting (at most once a second) when it is not."""
        if self.session is not None and not self.session.closed:
            return True
        if time.monotonic() < self._next_connect:
            return False
        self._next_connect = time.monotonic() + 1.0
        session = GatewaySession(
            websocket_url(self.host or "http://127.0.0.1:8080"),
            lambda: self.lt.token(self.identity),
            self,
            request_timeout_s=self.lt.settings.request_timeout_s,
        )
        started = time.perf_counter()
        try:
            elapsed = session.connect()
        except Exception as exc:
            _report(self, WS, "connect->welcome", (time.perf_counter() - started) * 1000, 0, exc)
            return False
        _report(self, WS, "connect->welcome", elapsed)
        self.session = session
        self.after_connect(session)
        return True

    def after_connect(self, session: GatewaySession) -> None:
        pass

    # -- SessionHandler --------------------------------------------------------------------------

    def on_event(self, frame: dict[str, Any], length: int) -> None:
        pass

    def on_subscription_error(self, frame: dict[str, Any]) -> None:
        error = Failure(f"{frame.get('code')} on {frame.get('sub')}: {frame.get('message')}")
        _report(self, WS, "subscription error", 0, 0, error)

    def on_closed(self, code: int | None, reason: str) -> None:
        if not self.stopping:
            _report(self, WS, "session closed", 0, 0, Failure(f"closed: {code} {reason}"))


class PublishingWsUser(GatewayWsUser):
    """Publishes numbered events with at most ``window`` unacknowledged at any time."""

    abstract = True

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.events = EventFactory(self.lt.stream(self.role), self.identity.user_id)
        self.window = BoundedSemaphore(self.window_size())

    def window_size(self) -> int:
        return self.lt.settings.publish_window

    def publish(self, event: Numbered) -> None:
        session = self.session
        if session is None or session.closed:
            return
        if not self.window.acquire(timeout=self.lt.settings.request_timeout_s):
            _report(self, WS, f"publish->ack {event.type}", 0, 0, Failure("window stayed full"))
            return
        name = f"publish->ack {event.type}"

        def answered(answer: Answer) -> None:
            self.window.release()
            if answer.error is not None or answer.frame is None:
                _report(self, WS, name, answer.elapsed_ms, answer.length, answer.error)
                return
            frame = answer.frame
            self.lt.ledger.acked(
                self.identity.user_id, event, int(frame["partition"]), int(frame["offset"])
            )
            _report(self, WS, name, answer.elapsed_ms, answer.length)

        frame = {"op": "publish", "topic": event.topic, "key": event.key, "event": event.event}
        try:
            session.request(frame, answered)
        except ConnectionLost as exc:
            self.window.release()
            _report(self, WS, name, 0, 0, exc)

    def drain(self, limit_s: float) -> None:
        """Wait (at most ``limit_s``) for the answers to what is in flight."""
        deadline = time.monotonic() + limit_s
        session = self.session
        while session is not None and not session.closed and session.in_flight:
            if time.monotonic() > deadline:
                break
            gevent.sleep(0.05)

    def on_stop(self) -> None:
        self.stopping = True
        self.drain(min(5.0, self.lt.settings.request_timeout_s))
        super().on_stop()


class PublisherUser(PublishingWsUser):
    """Publishes events of every source type over WebSocket, one per think time."""

    role = "pub"
    weight = 3

    @task
    def publish_next(self) -> None:
        if self.connected():
            self.publish(self.events.next())


class BatchPublisherUser(PublishingWsUser):
    """Publishes ``--batch-size`` events per ``publish_batch``, rotating over the topics."""

    role = "batch"
    weight = 1
    think_factor = 4.0

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self._topic = 0

    def window_size(self) -> int:
        return self.lt.settings.batch_window

    @task
    def publish_batch(self) -> None:
        if not self.connected():
            return
        session = self.session
        assert session is not None
        topic = DATA_TOPICS[self._topic % len(DATA_TOPICS)]
        self._topic += 1
        batch = self.events.batch(self.lt.settings.batch_size, topic)
        name = "publish_batch->batch_ack"
        if not self.window.acquire(timeout=self.lt.settings.request_timeout_s):
            _report(self, WS, name, 0, 0, Failure("window stayed full"))
            return

        def answered(answer: Answer) -> None:
            self.window.release()
            if answer.error is not None or answer.frame is None:
                _report(self, WS, name, answer.elapsed_ms, answer.length, answer.error)
                return
            results = answer.frame.get("results", [])
            refused: list[str] = []
            for event, result in zip(batch, results, strict=False):
                if "error" in result:
                    refused.append(str(result["error"].get("code")))
                    continue
                self.lt.ledger.acked(
                    self.identity.user_id, event, int(result["partition"]), int(result["offset"])
                )
            error = None
            if refused or len(results) != len(batch):
                error = Failure(
                    f"{len(refused)} of {len(batch)} events refused ({', '.join(sorted(set(refused)))})"
                    if refused
                    else f"{len(results)} results for {len(batch)} events"
                )
            _report(self, WS, name, answer.elapsed_ms, answer.length, error)

        frame = {
            "op": "publish_batch",
            "topic": topic,
            "events": [{"key": e.key, "event": e.event} for e in batch],
        }
        try:
            session.request(frame, answered)
        except ConnectionLost as exc:
            self.window.release()
            _report(self, WS, name, 0, 0, exc)


class SubscriberUser(PublishingWsUser):
    """Follows its user's events and memory updates and checks every expected delivery.

    Subscribes to every topic publishers write to (``from`` the end) and to
    ``memory-updates`` through a ``memory-filter`` chain for its organization and user. It
    also publishes a trickle of its own events, so that it has deliveries to measure
    whether or not publishers of its identity run. After a reconnect it resumes each
    subscription from the offsets after the last records it received.
    """

    role = "sub"
    weight = 2
    think_factor = 2.0

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.tracker: DeliveryTracker = self.lt.ledger.tracker(self.identity.user_id)
        self._first_pending: dict[str, float] = {}
        self._memory_seen: dict[str, float] = {}
        self._memory_resume: dict[int, int] = {}

    def after_connect(self, session: GatewaySession) -> None:
        for topic in (*DATA_TOPICS, MEMORY_TOPIC):
            self.subscribe(session, topic)

    def subscribe(self, session: GatewaySession, topic: str) -> None:
        resume = self._memory_resume if topic == MEMORY_TOPIC else self.tracker.resume.get(topic)
        frame: dict[str, Any] = {
            "op": "subscribe",
            "sub": topic,
            "topic": topic,
            "from": {str(p): o for p, o in resume.items()} if resume else "end",
        }
        if topic == MEMORY_TOPIC:
            params = {
                "organization_id": self.identity.organization_id,
                "user_id": self.identity.user_id,
            }
            frame["filters"] = [{"smartmodule": "memory-filter", "params": params}]
        sent = time.perf_counter()
        if topic not in self._first_pending and not resume:
            self._first_pending[topic] = sent

        def answered(answer: Answer) -> None:
            if answer.error is not None or answer.frame is None:
                error = Failure(f"{topic}: {answer.error}")
                _report(self, WS, "subscribe->subscribed", answer.elapsed_ms, answer.length, error)
                return
            positions = {int(p): int(o) for p, o in answer.frame.get("positions", {}).items()}
            if topic == MEMORY_TOPIC:
                for partition, offset in positions.items():
                    self._memory_resume.setdefault(partition, offset)
            else:
                self.tracker.started(topic, positions)
            _report(self, WS, "subscribe->subscribed", answer.elapsed_ms, answer.length)

        try:
            session.request(frame, answered)
        except ConnectionLost as exc:
            _report(self, WS, "subscribe->subscribed", 0, 0, exc)

    @task
    def publish_and_check(self) -> None:
        self.check_overdue()
        if self.connected():
            self.publish(self.events.next())

    def check_overdue(self) -> None:
        timeout = self.lt.settings.delivery_timeout_s
        for acked in self.tracker.overdue(timeout):
            waited = (time.monotonic() - acked.acked_at) * 1000
            _report(self, DELIVERY, "lost delivery", waited, 0, Failure(f"lost on {acked.topic}"))

    def on_stop(self) -> None:
        """Wait for what was acknowledged before stopping, up to the delivery timeout."""
        self.stopping = True
        self.drain(min(5.0, self.lt.settings.request_timeout_s))
        self.tracker.stop_accepting()
        deadline = time.monotonic() + self.lt.settings.delivery_timeout_s
        while self.tracker.pending and time.monotonic() < deadline:
            self.check_overdue()
            gevent.sleep(0.05)
        self.check_overdue()
        self.lt.ledger.detach(self.tracker)
        GatewayWsUser.on_stop(self)

    # -- deliveries ----------------------------------------------------------------------------

    def on_event(self, frame: dict[str, Any], length: int) -> None:
        topic = str(frame.get("topic"))
        data = frame.get("data")
        if not isinstance(data, dict):
            return
        first = self._first_pending.pop(topic, None)
        if first is not None:
            elapsed = (time.perf_counter() - first) * 1000
            _report(self, WS, f"subscribe->first event {topic}", elapsed, length)
        if topic == MEMORY_TOPIC:
            self.on_memory_update(frame, data, length)
            return
        ref = parse_event_id(data.get("id"))
        if ref is None:
            return
        outcome = self.tracker.delivered(topic, int(frame["partition"]), int(frame["offset"]), ref)
        latency = float(max(0, now_ms() - int(data.get("timestamp") or 0)))
        if outcome is Outcome.FIRST:
            _report(self, WS, f"publish->delivery {topic}", latency, length)
        elif outcome is Outcome.DUPLICATE:
            error = Failure(f"duplicate on {topic}")
            _report(self, DELIVERY, "duplicate delivery", latency, length, error)
        else:
            error = Failure(f"late on {topic}")
            _report(self, DELIVERY, "late delivery", latency, length, error)

    def on_memory_update(self, frame: dict[str, Any], data: dict[str, Any], length: int) -> None:
        partition, offset = int(frame["partition"]), int(frame["offset"])
        self._memory_resume[partition] = max(self._memory_resume.get(partition, 0), offset + 1)
        update_id = str(data.get("id", f"{partition}/{offset}"))
        if update_id in self._memory_seen:
            error = Failure(f"duplicate on {MEMORY_TOPIC}")
            _report(self, DELIVERY, "duplicate delivery", 0, length, error)
            return
        now = time.monotonic()
        self._memory_seen[update_id] = now
        while self._memory_seen:
            oldest_id, at = next(iter(self._memory_seen.items()))
            if now - at <= self.lt.ledger.retention_s:
                break
            del self._memory_seen[oldest_id]
        payload = data.get("payload")
        source = payload.get("source") if isinstance(payload, dict) else None
        if not isinstance(source, dict):
            return
        sent = self.lt.ledger.sent_ms(
            str(source.get("topic")),
            int(source.get("partition", -1)),
            int(source.get("offset", -1)),
        )
        if sent is not None:
            _report(self, WS, "publish->memory update", float(max(0, now_ms() - sent)), length)


# -- HTTP users --------------------------------------------------------------------------------


class GatewayHttpUser(FastHttpUser):
    abstract = True
    role = "http"
    think_factor = 1.0

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.lt = LoadTest.of(environment)
        self.identity = self.lt.identity(self.role)
        self._token = ""
        self._token_until = 0.0

    def wait_time(self) -> float:
        return _think(self, self.think_factor)

    def headers(self) -> dict[str, str]:
        if time.monotonic() > self._token_until:
            self._token = self.lt.token(self.identity)
            self._token_until = time.monotonic() + self.lt.settings.token_ttl_s / 2
        return {"Authorization": f"Bearer {self._token}"}


class HttpIngestUser(GatewayHttpUser):
    """``POST /api/v1/stream/events`` (3 of 4 requests) and ``/api/v1/stream/batch``."""

    role = "http"
    weight = 2

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.events = EventFactory(self.lt.stream(self.role), self.identity.user_id)

    @task(3)
    def post_event(self) -> None:
        event = self.events.next()
        body = {"topic": event.topic, "key": event.key, "event": event.event}
        with self.client.post(
            "/api/v1/stream/events", json=body, headers=self.headers(), catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(_http_error(response))
                return
            answer = response.json()
            self.lt.ledger.acked(
                self.identity.user_id, event, int(answer["partition"]), int(answer["offset"])
            )

    @task(1)
    def post_batch(self) -> None:
        size = max(1, self.lt.settings.batch_size // 5)
        batch = [self.events.next() for _ in range(size)]  # every type, several topics
        body = {"events": [e.item() for e in batch]}
        with self.client.post(
            "/api/v1/stream/batch", json=body, headers=self.headers(), catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(_http_error(response))
                return
            results = response.json().get("results", [])
            refused = []
            for event, result in zip(batch, results, strict=False):
                if result.get("success"):
                    self.lt.ledger.acked(
                        self.identity.user_id,
                        event,
                        int(result["partition"]),
                        int(result["offset"]),
                    )
                else:
                    refused.append(str(result.get("error", {}).get("code")))
            if refused:
                response.failure(f"{len(refused)} of {len(batch)} events refused")


class MemorySearchUser(GatewayHttpUser):
    """``POST /api/v1/memories/search`` for its user; 404 fails as "search unavailable"."""

    role = "search"
    weight = 1
    think_factor = 4.0

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self._rng = random.Random()

    @task
    def search(self) -> None:
        body = {"query": search_query(self._rng), "limit": 10}
        with self.client.post(
            SEARCH_PATH, json=body, headers=self.headers(), catch_response=True
        ) as response:
            if response.status_code in (404, 405):
                response.failure(
                    f"search unavailable ({response.status_code}): the gateway has no {SEARCH_PATH}"
                )
            elif response.status_code != 200:
                response.failure(_http_error(response))


def _http_error(response: Any) -> str:
    try:
        code = response.json().get("code", "")
    except Exception:
        code = ""
    return f"HTTP {response.status_code} {code}".strip()
