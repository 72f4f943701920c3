"""Payload schemas of the event sources, one ``msgspec.Struct`` per envelope ``type``.

Unknown fields are ignored (old and new clients interoperate); missing optional fields take
their defaults. ``importance`` is always a number from 0 to 1.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

Importance = Annotated[float, Meta(ge=0.0, le=1.0)]
NonEmpty = Annotated[str, Meta(min_length=1, max_length=4_096)]
Json = dict[str, Any]


class Location(Struct, frozen=True):
    lat: Annotated[float, Meta(ge=-90.0, le=90.0)]
    lon: Annotated[float, Meta(ge=-180.0, le=180.0)]


class UserInteraction(Struct, frozen=True, kw_only=True):
    action: NonEmpty
    user_id: str | None = None
    """Defaults to the envelope's user."""
    timestamp: int | None = None
    context: Json = msgspec.field(default_factory=dict)
    importance: Importance = 0.5


class AppEvent(Struct, frozen=True, kw_only=True):
    event_type: NonEmpty
    source: NonEmpty
    payload: Json = msgspec.field(default_factory=dict)
    importance: Importance = 0.5


class SensorData(Struct, frozen=True, kw_only=True):
    sensor_id: NonEmpty
    readings: dict[str, float]
    location: Location | None = None
    importance: Importance = 0.5


class LogEntry(Struct, frozen=True, kw_only=True):
    level: Literal["debug", "info", "warning", "error", "critical"]
    message: NonEmpty
    metadata: Json = msgspec.field(default_factory=dict)
    importance: Importance = 0.5


class ApiCall(Struct, frozen=True, kw_only=True):
    endpoint: NonEmpty
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    response_time_ms: Annotated[float, Meta(ge=0.0)]
    status_code: Annotated[int, Meta(ge=100, le=599)] | None = None
    importance: Importance = 0.5


class RealtimeMessage(Struct, frozen=True, kw_only=True):
    channel: NonEmpty
    data: Any
    priority: Literal["low", "normal", "high", "critical"] = "normal"
    importance: Importance = 0.5


class ChatMessage(Struct, frozen=True, kw_only=True):
    conversation_id: NonEmpty
    role: Literal["user", "assistant", "system", "tool"]
    content: Annotated[str, Meta(min_length=1, max_length=65_536)]
    agent_id: str | None = None
    metadata: Json = msgspec.field(default_factory=dict)
    importance: Importance = 0.5


class AgentAction(Struct, frozen=True, kw_only=True):
    agent_id: NonEmpty
    action: NonEmpty
    parameters: Json = msgspec.field(default_factory=dict)
    result: Any = None
    success: bool = True
    session_id: str | None = None
    step: Annotated[int, Meta(ge=0)] | None = None
    importance: Importance = 0.5


MemoryType = Literal["core", "episodic", "semantic", "procedural", "working"]


class MemoryItem(Struct, frozen=True, kw_only=True):
    content: Annotated[str, Meta(min_length=1, max_length=65_536)]
    memory_type: MemoryType = "episodic"
    organization_id: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    importance: Importance = 0.5
    timestamp: int | None = None
    metadata: Json = msgspec.field(default_factory=dict)


class RecordSource(Struct, frozen=True):
    topic: str
    partition: int
    offset: int


class MemoryUpdate(Struct, frozen=True, kw_only=True):
    op: Literal["created", "updated", "deleted", "expired"]
    memory_id: NonEmpty
    memory_type: MemoryType
    organization_id: str
    user_id: str
    agent_id: str | None = None
    importance: Importance = 0.5
    content: str = ""
    version: Annotated[int, Meta(ge=1)] = 1
    source: RecordSource | None = None
    timestamp: int = 0


PAYLOADS: dict[str, type[Struct]] = {
    "user_interaction": UserInteraction,
    "app_event": AppEvent,
    "sensor_data": SensorData,
    "log_entry": LogEntry,
    "api_call": ApiCall,
    "realtime_message": RealtimeMessage,
    "chat_message": ChatMessage,
    "agent_action": AgentAction,
    "memory_item": MemoryItem,
    "memory_update": MemoryUpdate,
}
"""Envelope ``type`` tag to payload schema."""

EVENT_TYPES = tuple(PAYLOADS)
