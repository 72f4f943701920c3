"""The procedural agent: how agents get things done, as step sequences and patterns.

Each agent session (``agent_id`` and ``session_id``; actions without a session share one
per agent) is one memory listing its steps in order, a new version per step. The last
``procedural_max_steps`` steps are kept; earlier ones are counted, not listed.

Recurring patterns: every successful step ends a sequence of the last two and the last
three successful steps of its session. Each sequence is counted per user and agent
(``procedural_patterns``); when a sequence has been seen ``procedural_min_occurrences``
times it becomes a pattern memory ("agent X often does: a -> b -> c"), updated each time
its count doubles (so a frequent pattern does not flood ``memory-updates``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

from agents.memory.base import Applied, MemoryAgent, memory_id, new_memory, next_version
from agents.store.sqlite import Change, Writes
from agents.work import MemoryWork

PATTERN_LENGTHS = (2, 3)
ARROW = " -> "


class Step(msgspec.Struct, frozen=True, array_like=True):
    action: str
    success: bool
    step: int | None
    timestamp: int


_steps_decoder = msgspec.json.Decoder(list[Step])
_encoder = msgspec.json.Encoder()


class ProceduralAgent(MemoryAgent):
    memory_type = "procedural"

    def apply_sync(self, tx: Writes, items: Sequence[MemoryWork], now: int) -> list[Applied]:
        return [(item, self._step(tx, item, now)) for item in items]

    def _step(self, tx: Writes, item: MemoryWork, now: int) -> list[Change]:
        org, user = item.organization_id, item.user_id
        agent = item.agent_id or "unknown-agent"
        session = item.session_id or ""
        action = (item.action or item.content).strip()
        row = tx.fetchone(
            "SELECT steps, dropped FROM procedural_sessions WHERE organization_id = ? "
            "AND user_id = ? AND agent_id = ? AND session_id = ?",
            (org, user, agent, session),
        )
        steps = _steps_decoder.decode(row[0]) if row else []
        dropped = int(row[1]) if row else 0
        steps.append(Step(action, item.success, item.step, item.timestamp))
        overflow = len(steps) - self.config.procedural_max_steps
        if overflow > 0:
            steps, dropped = steps[overflow:], dropped + overflow
        tx.execute(
            "INSERT INTO procedural_sessions (organization_id, user_id, agent_id, session_id, "
            "steps, dropped) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "steps = excluded.steps, dropped = excluded.dropped",
            (org, user, agent, session, _encoder.encode(steps).decode(), dropped),
        )
        changes = [self._session_memory(tx, item, agent, session, steps, dropped, now)]
        if item.success:
            changes += self._patterns(tx, item, agent, steps, now)
        return changes

    def _session_memory(
        self,
        tx: Writes,
        item: MemoryWork,
        agent: str,
        session: str,
        steps: list[Step],
        dropped: int,
        now: int,
    ) -> Change:
        id_ = memory_id("procedural", item.organization_id, item.user_id, agent, session)
        where = f" in session {session}" if session else ""
        lines = [
            f"{dropped + i + 1}. {s.action}" + ("" if s.success else " (failed)")
            for i, s in enumerate(steps)
        ]
        earlier = f"({dropped} earlier steps)\n" if dropped else ""
        content = f"Steps of agent {agent}{where}:\n{earlier}" + "\n".join(lines)
        metadata = {
            "kind": "sequence",
            "agent_id": agent,
            "session_id": session or None,
            "steps": len(steps) + dropped,
            "last_action": item.action,
            "event_id": item.event_id,
        }
        current = tx.memory(
            organization_id=item.organization_id, user_id=item.user_id, memory_id=id_
        )
        if current is None:
            memory = new_memory(
                item, id_, now, content=content, metadata=metadata, agent_id=agent, subject=None
            )
            tx.insert_memories([memory])
            return Change("created", memory)
        memory = next_version(
            current,
            now,
            content=content,
            metadata=metadata,
            importance=max(current.importance, item.importance),
            event_time=item.timestamp,
            source=item.source,
        )
        tx.update_memory(memory)
        return Change("updated", memory)

    def _patterns(
        self, tx: Writes, item: MemoryWork, agent: str, steps: list[Step], now: int
    ) -> list[Change]:
        done = [s.action for s in steps if s.success]
        changes: list[Change] = []
        for length in PATTERN_LENGTHS:
            if len(done) < length:
                continue
            pattern = ARROW.join(done[-length:])
            row = tx.fetchone(
                "INSERT INTO procedural_patterns (organization_id, user_id, agent_id, pattern, "
                "count) VALUES (?, ?, ?, ?, 1) ON CONFLICT DO UPDATE SET count = count + 1 "
                "RETURNING count",
                (item.organization_id, item.user_id, agent, pattern),
            )
            count = int(row[0])
            if not self._milestone(count):
                continue
            changes.append(self._pattern_memory(tx, item, agent, pattern, count, now))
        return changes

    def _milestone(self, count: int) -> bool:
        """The first time a pattern qualifies, then each time its count doubles."""
        times, rest = divmod(count, self.config.procedural_min_occurrences)
        return rest == 0 and times > 0 and times & (times - 1) == 0

    def _pattern_memory(
        self, tx: Writes, item: MemoryWork, agent: str, pattern: str, count: int, now: int
    ) -> Change:
        id_ = memory_id("procedural-pattern", item.organization_id, item.user_id, agent, pattern)
        content = f"Agent {agent} often does: {pattern} (seen {count} times)"
        importance = min(1.0, 0.5 + 0.1 * math.log2(count))
        metadata = {
            "kind": "pattern",
            "agent_id": agent,
            "actions": pattern.split(ARROW),
            "count": count,
        }
        current = tx.memory(
            organization_id=item.organization_id, user_id=item.user_id, memory_id=id_
        )
        if current is None:
            memory = new_memory(
                item,
                id_,
                now,
                content=content,
                importance=importance,
                metadata=metadata,
                agent_id=agent,
                session_id=None,
                subject=pattern,
            )
            tx.insert_memories([memory])
            return Change("created", memory)
        memory = next_version(
            current,
            now,
            content=content,
            importance=importance,
            metadata=metadata,
            event_time=item.timestamp,
            source=item.source,
        )
        tx.update_memory(memory)
        return Change("updated", memory)
