"""The episodic agent: time-stamped experiences (conversation turns, interactions).

Each item becomes one memory whose ``event_time`` is when it happened. Episodes are never
merged or rewritten: they are the record of what took place.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.memory.base import Applied, MemoryAgent, memory_id, new_memory
from agents.store.sqlite import Change, Writes
from agents.work import MemoryWork


class EpisodicAgent(MemoryAgent):
    memory_type = "episodic"

    def apply_sync(self, tx: Writes, items: Sequence[MemoryWork], now: int) -> list[Applied]:
        memories = [
            new_memory(item, memory_id("episodic", item.organization_id, str(item.source)), now)
            for item in items
        ]
        # Episodes do not depend on one another: one multi-row insert for the batch.
        tx.insert_memories(memories)
        return [
            (item, [Change("created", memory)])
            for item, memory in zip(items, memories, strict=True)
        ]
