"""The working agent: short-lived session context, expired after a TTL.

A working memory expires at its event's timestamp plus ``working_ttl_s`` (or the event's
own ``ttl_s``), so replaying old events does not make stale context look fresh. At most
``working_max_per_session`` memories are kept per user and session: beyond that the
oldest expires early. ``expire`` (run by the pipeline's housekeeping every
``maintenance_interval_s``) removes expired memories; each produces an ``expired``
update, and its last version stays in the history.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from agents.memory.base import Applied, MemoryAgent, memory_id, new_memory
from agents.store.schema import MEMORY_COLUMNS
from agents.store.sqlite import Change, Memory, Transaction, Writes, memory_from_row
from agents.work import MemoryWork


class WorkingAgent(MemoryAgent):
    memory_type = "working"

    def apply_sync(self, tx: Writes, items: Sequence[MemoryWork], now: int) -> list[Applied]:
        results: list[Applied] = []
        for item in items:
            ttl_s = item.ttl_s or self.config.working_ttl_s
            memory = new_memory(
                item,
                memory_id("working", item.organization_id, str(item.source)),
                now,
                expires_at=item.timestamp + int(ttl_s * 1000),
            )
            tx.insert_memories([memory])
            changes = [Change("created", memory)]
            changes += self._trim_session(tx, item)
            results.append((item, changes))
        return results

    def _trim_session(self, tx: Writes, item: MemoryWork) -> list[Change]:
        """Expire the oldest memories of the session beyond the per-session bound."""
        rows = tx.fetchall(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE organization_id = ? AND user_id = ? "
            "AND memory_type = 'working' AND session_id IS ? "
            "ORDER BY event_time DESC, rowid DESC LIMIT -1 OFFSET ?",
            (
                item.organization_id,
                item.user_id,
                item.session_id,
                self.config.working_max_per_session,
            ),
        )
        return self._remove(tx, [memory_from_row(r) for r in rows], "session_limit")

    async def expire(self, tx: Transaction, now: int, limit: int = 500) -> list[Change]:
        """Remove up to ``limit`` memories whose ``expires_at`` has passed."""
        return await tx.run(self.expire_sync, now, limit)

    def expire_sync(self, tx: Writes, now: int, limit: int = 500) -> list[Change]:
        """``expire`` in the writer thread."""
        rows = tx.fetchall(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE expires_at IS NOT NULL "
            "AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now, limit),
        )
        return self._remove(tx, [memory_from_row(r) for r in rows], "ttl")

    def _remove(self, tx: Writes, memories: list[Memory], reason: str) -> list[Change]:
        changes = []
        for memory in memories:
            tx.delete_memory(memory.id)
            metadata = {**memory.metadata, "expired_by": reason}
            changes.append(Change("expired", msgspec.structs.replace(memory, metadata=metadata)))
        return changes
