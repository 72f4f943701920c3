"""Reading log records as events: envelopes, or MemoryItems made by ``data-transform``.

Records of the consumed topics are event envelopes (``docs/events.md``). A SmartModule
chain may turn them into ``MemoryItem`` JSON (no ``type`` field). ``decode`` returns one
or the other, fully validated; ``peek`` reads only what the stream processor needs.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.schemas.envelope import Envelope, event_decoder, event_type
from gateway.schemas.payloads import MemoryItem, SensorData


class UndecodableRecord(ValueError):
    """The record is neither an event envelope nor a MemoryItem; the message says why."""


class _TypeOnly(msgspec.Struct):
    type: str | None = None


_type_decoder = msgspec.json.Decoder(_TypeOnly)
_item_decoder = msgspec.json.Decoder(MemoryItem)


def record_type(value: bytes) -> str | None:
    """The envelope ``type`` of a JSON record value, ``None`` when absent or not JSON."""
    try:
        return _type_decoder.decode(value).type
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def decode(value: bytes) -> Envelope | MemoryItem:
    """A validated envelope, or a MemoryItem when the value has no ``type``."""
    try:
        kind = _type_decoder.decode(value).type
    except msgspec.ValidationError as exc:
        raise UndecodableRecord(f"not an event: {exc}") from None
    except msgspec.DecodeError as exc:
        raise UndecodableRecord(f"not JSON: {exc}") from None
    try:
        if kind is None:
            return _item_decoder.decode(value)
        event: Envelope = event_decoder.decode(value)
        return event
    except msgspec.ValidationError as exc:
        what = "MemoryItem" if kind is None else f"{kind!r} event"
        raise UndecodableRecord(f"invalid {what}: {exc}") from None


def type_of(event: Envelope | MemoryItem) -> str:
    return "memory_item" if isinstance(event, MemoryItem) else event_type(event)


class Peek(msgspec.Struct):
    """The fields the stream processor reads from any envelope."""

    type: str | None = None
    organization_id: str | None = None
    user_id: str | None = None
    timestamp: int | None = None
    payload: msgspec.Raw = msgspec.Raw(b"null")


class _Importance(msgspec.Struct):
    importance: float = 0.5


_peek_decoder = msgspec.json.Decoder(Peek)
_importance_decoder = msgspec.json.Decoder(_Importance)
_sensor_decoder = msgspec.json.Decoder(SensorData)


def peek(value: bytes) -> Peek | None:
    """The processor's view of a record; ``None`` when it is not a JSON object envelope."""
    try:
        found = _peek_decoder.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return found if found.type is not None else None


def importance(payload: msgspec.Raw) -> float:
    """``payload.importance``; 0.5 when missing or not a number (as the SmartModules do)."""
    try:
        value = _importance_decoder.decode(payload).importance
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 0.5
    return value if 0.0 <= value <= 1.0 else 0.5


def sensor_readings(payload: msgspec.Raw) -> SensorData | None:
    try:
        return _sensor_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def as_text(value: Any, limit: int = 4_000) -> str:
    """A readable one-line rendering of any JSON value, cut at ``limit`` characters."""
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"
