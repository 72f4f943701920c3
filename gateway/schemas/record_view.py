"""How a stored record is shown to clients (HTTP reads, WebSocket ``event`` frames, the CLI).

``data`` is the record value as JSON when it is JSON; otherwise the value in base64 with
``"encoding": "base64"`` alongside, so a client never has to guess.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from gateway.streamlog.interface import Record

# Decoding into Raw checks the syntax without building Python objects.
_raw = msgspec.json.Decoder(msgspec.Raw)


class RecordView(msgspec.Struct, omit_defaults=True):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: str | None
    data: Any
    encoding: str = "json"


def is_json(value: bytes) -> bool:
    """Whether ``value`` is one JSON document (checked without building objects)."""
    try:
        _raw.decode(value)
    except msgspec.DecodeError:
        return False
    return True


def view(record: Record) -> RecordView:
    key = None
    if record.key is not None:
        try:
            key = record.key.decode()
        except UnicodeDecodeError:
            key = base64.b64encode(record.key).decode()
    if is_json(record.value):
        return RecordView(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            key,
            msgspec.Raw(record.value),
        )
    return RecordView(
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        key,
        base64.b64encode(record.value).decode(),
        "base64",
    )
