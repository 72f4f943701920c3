"""What flows between the pipeline's stages: where an item came from and what to remember.

``Source`` names one output of one log record (``seq`` counts the outputs a SmartModule
made of a single record; it is 0 otherwise). It is the pipeline's idempotency key: an
item is applied at most once per source. ``MemoryWork`` is a classified event on its way
to a memory agent; it is self-contained (no reference to the record), so a deferred item
is stored as is and applied later without running the chain or the classifier again.
"""

from __future__ import annotations

from typing import Any

import msgspec

from agents.config import MemoryType


class Source(msgspec.Struct, frozen=True, array_like=True):
    topic: str
    partition: int
    offset: int
    seq: int = 0

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}" + (f"#{self.seq}" if self.seq else "")


class MemoryWork(msgspec.Struct, frozen=True, kw_only=True):
    source: Source
    memory_type: MemoryType
    rule: str
    """Which classification rule chose the memory type (see ``agents/manager.py``)."""
    organization_id: str
    user_id: str
    content: str
    importance: float
    timestamp: int
    """Event time, milliseconds since the epoch."""
    event_type: str
    event_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    metadata: dict[str, Any] = {}
    subject: str | None = None
    """A slot a newer statement replaces ("name", "favourite colour"): semantic and core."""
    block: str | None = None
    """Core memory block."""
    action: str | None = None
    """Procedural: the agent's action, with ``step`` and ``success``."""
    step: int | None = None
    success: bool = True
    ttl_s: float | None = None
    """Working memory lifetime when the event gives one."""


work_encoder = msgspec.msgpack.Encoder()
work_decoder = msgspec.msgpack.Decoder(MemoryWork)
