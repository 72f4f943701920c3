"""Numbered events of every source type, as the gateway accepts them.

Every event a simulated user sends belongs to a *stream* (one per publishing user instance)
and carries the stream's next sequence number. Both are in the envelope ``id``
(``lt:<stream>:<seq>``), which is also the event's idempotency key, and, where the payload
has a free-form object, in the payload as ``{"loadtest": {"stream", "seq"}}``. The
envelope ``timestamp`` is the wall-clock time of sending, in milliseconds: subscribers
measure publish-to-delivery latency from it.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

ID_PREFIX = "lt:"

# Which topic each source type is published to (all accept it in gateway/topics.toml).
TOPIC_OF_TYPE: dict[str, str] = {
    "user_interaction": "user-events",
    "app_event": "user-events",
    "sensor_data": "user-events",
    "realtime_message": "chat-messages",
    "chat_message": "chat-messages",
    "agent_action": "agent-actions",
    "api_call": "system-metrics",
    "log_entry": "audit-logs",
}
SOURCE_TYPES: tuple[str, ...] = tuple(TOPIC_OF_TYPE)
DATA_TOPICS: tuple[str, ...] = tuple(dict.fromkeys(TOPIC_OF_TYPE.values()))
MEMORY_TOPIC = "memory-updates"

WORDS = (
    "coffee", "tea", "hiking", "python", "rust", "jazz", "paris", "tokyo", "garden",
    "chess", "cycling", "sushi", "piano", "budget", "deadline", "meeting", "invoice",
    "weekend", "flight", "hotel", "recipe", "podcast", "novel", "marathon",
)  # fmt: skip
ACTIONS = ("opened settings", "searched", "saved a draft", "shared a link", "played a song")
FACTS = (
    "I prefer {0} over {1}.",
    "My favourite hobby is {0}.",
    "Remind me about the {0} on Friday.",
    "I live near {0} and like {1}.",
)


def now_ms() -> int:
    return int(time.time() * 1000)


def event_id(stream: str, seq: int) -> str:
    return f"{ID_PREFIX}{stream}:{seq}"


def parse_event_id(value: object) -> tuple[str, int] | None:
    """``(stream, seq)`` of an event sent by a load test user, ``None`` for any other id."""
    if not isinstance(value, str) or not value.startswith(ID_PREFIX):
        return None
    stream, _, seq = value[len(ID_PREFIX) :].rpartition(":")
    if not stream or not seq.isdigit():
        return None
    return stream, int(seq)


def search_query(rng: random.Random) -> str:
    return " ".join(rng.sample(WORDS, 2))


@dataclass(frozen=True, slots=True)
class Numbered:
    """One event ready to send: where it goes and how it is identified."""

    topic: str
    key: str
    """The record key: the user id."""
    event: dict[str, Any]
    stream: str
    seq: int
    sent_ms: int

    @property
    def type(self) -> str:
        return str(self.event["type"])

    @property
    def ref(self) -> tuple[str, int]:
        """``(stream, seq)``, as ``parse_event_id`` reads it back from a delivery."""
        return self.stream, self.seq

    def item(self) -> dict[str, Any]:
        """As an item of ``publish_batch`` or ``POST /api/v1/stream/batch``."""
        return {"topic": self.topic, "key": self.key, "event": self.event}


class EventFactory:
    """Builds the numbered events of one stream, cycling through the source types."""

    def __init__(
        self,
        stream: str,
        user_id: str,
        types: tuple[str, ...] = SOURCE_TYPES,
        seed: int | None = None,
    ) -> None:
        self.stream = stream
        self.user_id = user_id
        self._seq = itertools.count()
        self._types: Iterator[str] = itertools.cycle(types)
        self._rng = random.Random(seed)
        self._builders: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "user_interaction": self._user_interaction,
            "app_event": self._app_event,
            "sensor_data": self._sensor_data,
            "realtime_message": self._realtime_message,
            "chat_message": self._chat_message,
            "agent_action": self._agent_action,
            "api_call": self._api_call,
            "log_entry": self._log_entry,
        }

    def next(self, event_type: str | None = None) -> Numbered:
        """The stream's next event: of ``event_type``, or the next type in the cycle."""
        kind = event_type or next(self._types)
        seq = next(self._seq)
        sent = now_ms()
        marker = {"loadtest": {"stream": self.stream, "seq": seq}}
        event = {
            "type": kind,
            "id": event_id(self.stream, seq),
            "timestamp": sent,
            "payload": self._builders[kind](marker),
        }
        # One key per user: a user's events stay in order on one partition of each topic.
        return Numbered(TOPIC_OF_TYPE[kind], self.user_id, event, self.stream, seq, sent)

    def batch(self, size: int, topic: str) -> list[Numbered]:
        kinds = [t for t in SOURCE_TYPES if TOPIC_OF_TYPE[t] == topic]
        return [self.next(self._rng.choice(kinds)) for _ in range(size)]

    # -- payloads ---------------------------------------------------------------------------

    def _importance(self) -> float:
        return round(self._rng.uniform(0.3, 1.0), 2)

    def _words(self, n: int) -> list[str]:
        return self._rng.sample(WORDS, n)

    def _user_interaction(self, marker: dict[str, Any]) -> dict[str, Any]:
        action = f"{self._rng.choice(ACTIONS)} about {self._words(1)[0]}"
        return {"action": action, "context": marker, "importance": self._importance()}

    def _app_event(self, marker: dict[str, Any]) -> dict[str, Any]:
        return {
            "event_type": self._rng.choice(("page_view", "click", "install")),
            "source": "loadtest",
            "payload": marker,
            "importance": self._importance(),
        }

    def _sensor_data(self, marker: dict[str, Any]) -> dict[str, Any]:
        readings = {"seq": float(marker["loadtest"]["seq"]), "celsius": self._rng.uniform(15, 30)}
        return {"sensor_id": f"s-{self.stream}", "readings": readings, "importance": 0.4}

    def _realtime_message(self, marker: dict[str, Any]) -> dict[str, Any]:
        return {"channel": "loadtest", "data": marker, "priority": "normal", "importance": 0.5}

    def _chat_message(self, marker: dict[str, Any]) -> dict[str, Any]:
        fact = self._rng.choice(FACTS).format(*self._words(2))
        return {
            "conversation_id": f"c-{self.stream}",
            "role": "user",
            "content": fact,
            "metadata": marker,
            "importance": self._importance(),
        }

    def _agent_action(self, marker: dict[str, Any]) -> dict[str, Any]:
        return {
            "agent_id": "loadtest-agent",
            "action": self._rng.choice(("search", "summarize", "schedule")),
            "parameters": marker,
            "success": True,
            "session_id": f"s-{self.stream}",
            "step": marker["loadtest"]["seq"],
            "importance": self._importance(),
        }

    def _api_call(self, marker: dict[str, Any]) -> dict[str, Any]:
        # No free-form object in this payload: the sequence is in the envelope id only.
        return {
            "endpoint": f"/loadtest/{self._words(1)[0]}",
            "method": self._rng.choice(("GET", "POST")),
            "response_time_ms": round(self._rng.uniform(1, 200), 1),
            "status_code": 200,
            "importance": 0.3,
        }

    def _log_entry(self, marker: dict[str, Any]) -> dict[str, Any]:
        return {
            "level": self._rng.choice(("info", "warning")),
            "message": f"loadtest log line {marker['loadtest']['seq']}",
            "metadata": marker,
            "importance": 0.4,
        }
