"""The core agent: a few named, size-limited blocks always in an agent's context.

Each block (``core_blocks``: name -> size limit in characters; ``human`` holds what the
user said about themselves, ``persona`` how the agent should present itself) is one
memory per user, made of lines. A line may have a subject ("name", "role"): a new line
with the same subject replaces the old one. When a block would exceed its limit, its
oldest lines are moved out to semantic memory (nothing is lost), and a single line
longer than the limit goes to semantic memory instead. Blocks are editable through
``upsert_line``, ``remove_line`` and ``replace_block``; every edit is a new version with
the previous one in the history, and a memory update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from agents.config import PipelineConfig
from agents.errors import BlockTooLarge, UnknownBlock
from agents.memory.base import (
    Applied,
    MemoryAgent,
    content_hash,
    memory_id,
    next_version,
    record_changes_sync,
)
from agents.memory.semantic import SemanticAgent
from agents.store.sqlite import Change, Memory, MemoryStore, Writes, now_ms
from agents.work import MemoryWork, Source


class Line(msgspec.Struct, frozen=True):
    text: str
    subject: str | None = None


class CoreAgent(MemoryAgent):
    memory_type = "core"

    def __init__(self, config: PipelineConfig, store: MemoryStore, semantic: SemanticAgent) -> None:
        super().__init__(config, store)
        self.semantic = semantic

    def block_id(self, organization_id: str, user_id: str, block: str) -> str:
        return memory_id("core", organization_id, user_id, block)

    def limit(self, block: str) -> int:
        try:
            return self.config.core_blocks[block]
        except KeyError:
            raise UnknownBlock(
                f"core memory block {block!r} is not configured; configured blocks: "
                f"{', '.join(sorted(self.config.core_blocks))}"
            ) from None

    def apply_sync(self, tx: Writes, items: Sequence[MemoryWork], now: int) -> list[Applied]:
        results: list[Applied] = []
        for item in items:
            block = item.block if item.block in self.config.core_blocks else "human"
            line = Line(item.content.strip(), item.subject)
            if len(line.text) > self.limit(block):
                # Too long for the block: keep it as a fact instead.
                fact = msgspec.structs.replace(item, memory_type="semantic")
                results.append((item, self.semantic.remember(tx, fact, now)))
                continue
            results.append((item, self._upsert(tx, item, block, line, now)))
        return results

    # -- edits ----------------------------------------------------------------------------------

    def _load(self, tx: Writes, organization_id: str, user_id: str, block: str) -> Memory | None:
        return tx.memory(
            organization_id=organization_id,
            user_id=user_id,
            memory_id=self.block_id(organization_id, user_id, block),
        )

    def _upsert(
        self, tx: Writes, item: MemoryWork, block: str, line: Line, now: int
    ) -> list[Change]:
        current = self._load(tx, item.organization_id, item.user_id, block)
        lines = _lines(current)
        if line in lines:
            return []  # already there, word for word: nothing changes
        if line.subject is not None and any(old.subject == line.subject for old in lines):
            lines = [line if old.subject == line.subject else old for old in lines]
        else:
            lines.append(line)
        kept, evicted = _fit(lines, self.limit(block), keep=line)
        changes = self._write(
            tx,
            current,
            item.organization_id,
            item.user_id,
            block,
            kept,
            now,
            source=item.source,
            importance=item.importance,
            agent_id=item.agent_id,
            event_time=item.timestamp,
            extra={"event_id": item.event_id, "rule": item.rule} if item.event_id else {},
        )
        for old in evicted:
            fact = msgspec.structs.replace(
                item,
                memory_type="semantic",
                content=old.text,
                subject=old.subject,
                metadata={"evicted_from_block": block},
                rule=f"core block {block} full",
            )
            changes += self.semantic.remember(tx, fact, now)
        return changes

    def _write(
        self,
        tx: Writes,
        current: Memory | None,
        organization_id: str,
        user_id: str,
        block: str,
        lines: list[Line],
        now: int,
        *,
        source: Source | None,
        importance: float = 1.0,
        agent_id: str | None = None,
        event_time: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> list[Change]:
        content = "\n".join(line.text for line in lines)
        metadata: dict[str, Any] = {
            "block": block,
            "limit": self.limit(block),
            "lines": msgspec.to_builtins(lines),
            **(extra or {}),
        }
        if current is None:
            memory = Memory(
                id=self.block_id(organization_id, user_id, block),
                organization_id=organization_id,
                user_id=user_id,
                memory_type="core",
                content=content,
                importance=max(importance, 0.9),
                hash=content_hash(content),
                created_at=now,
                updated_at=now,
                agent_id=agent_id,
                metadata=metadata,
                subject=block,
                event_time=event_time,
                source=source,
            )
            tx.insert_memories([memory])
            return [Change("created", memory)]
        memory = next_version(
            current,
            now,
            content=content,
            hash=content_hash(content),
            metadata=metadata,
            importance=max(current.importance, importance),
            event_time=event_time or current.event_time,
            source=source,
        )
        tx.update_memory(memory)
        return [Change("updated", memory)]

    # -- the editing API (each call is one transaction with its memory updates) ----------------

    async def upsert_line(
        self,
        *,
        organization_id: str,
        user_id: str,
        block: str,
        text: str,
        subject: str | None = None,
    ) -> list[Change]:
        """Add a line to a block, or replace the line with the same subject. Raises
        ``BlockTooLarge`` when the line alone exceeds the block's limit; older lines that
        no longer fit move to semantic memory."""
        line = Line(text.strip(), subject)
        if len(line.text) > self.limit(block):
            raise BlockTooLarge(
                f"a {len(line.text)}-character line does not fit core block {block!r} "
                f"(limit {self.limit(block)}); shorten it or store it as a semantic memory"
            )
        return await self._edit(self._upsert_line, organization_id, user_id, block, line)

    def _upsert_line(
        self, tx: Writes, now: int, organization_id: str, user_id: str, block: str, line: Line
    ) -> list[Change]:
        current = self._load(tx, organization_id, user_id, block)
        lines = _lines(current)
        if line.subject is not None and any(old.subject == line.subject for old in lines):
            lines = [line if old.subject == line.subject else old for old in lines]
        elif line not in lines:
            lines.append(line)
        else:
            return []
        kept, evicted = _fit(lines, self.limit(block), keep=line)
        changes = self._write(tx, current, organization_id, user_id, block, kept, now, source=None)
        for old in evicted:
            changes += self.semantic.remember(
                tx, _edit_work(organization_id, user_id, old, block, now), now, from_log=False
            )
        return changes

    async def _edit(self, edit: Callable[..., list[Change]], *args: Any) -> list[Change]:
        """One edit as one transaction with its history (which queues its updates)."""
        now = now_ms()

        def run(tx: Writes) -> list[Change]:
            changes = edit(tx, now, *args)
            record_changes_sync(tx, changes, now)
            return changes

        async with self.store.transaction() as tx:
            return await tx.run(run)

    async def remove_line(
        self, *, organization_id: str, user_id: str, block: str, subject: str
    ) -> list[Change]:
        """Remove the line with ``subject`` from a block (kept in the block's history)."""
        self.limit(block)
        return await self._edit(self._remove_line, organization_id, user_id, block, subject)

    def _remove_line(
        self, tx: Writes, now: int, organization_id: str, user_id: str, block: str, subject: str
    ) -> list[Change]:
        current = self._load(tx, organization_id, user_id, block)
        lines = _lines(current)
        kept = [line for line in lines if line.subject != subject]
        if current is None or len(kept) == len(lines):
            return []
        return self._write(tx, current, organization_id, user_id, block, kept, now, source=None)

    async def replace_block(
        self, *, organization_id: str, user_id: str, block: str, content: str
    ) -> list[Change]:
        """Set a block's whole content (one line per text line, ``subject: text`` lines
        keep their subject). Raises ``BlockTooLarge`` over the limit."""
        limit = self.limit(block)
        if len(content) > limit:
            raise BlockTooLarge(
                f"{len(content)} characters do not fit core block {block!r} (limit {limit}); "
                "shorten the content"
            )
        lines = [_parse_line(text) for text in content.splitlines() if text.strip()]
        return await self._edit(self._replace_block, organization_id, user_id, block, lines)

    def _replace_block(
        self,
        tx: Writes,
        now: int,
        organization_id: str,
        user_id: str,
        block: str,
        lines: list[Line],
    ) -> list[Change]:
        current = self._load(tx, organization_id, user_id, block)
        return self._write(tx, current, organization_id, user_id, block, lines, now, source=None)

    async def block(self, *, organization_id: str, user_id: str, block: str) -> Memory | None:
        """The block's current memory, ``None`` when nothing was written to it yet."""
        return await self.store.get(
            organization_id=organization_id,
            user_id=user_id,
            memory_id=self.block_id(organization_id, user_id, block),
        )


def _lines(memory: Memory | None) -> list[Line]:
    if memory is None:
        return []
    return msgspec.convert(memory.metadata.get("lines", []), list[Line])


def _fit(lines: list[Line], limit: int, keep: Line) -> tuple[list[Line], list[Line]]:
    """Drop the oldest lines (never ``keep``) until the block fits its limit."""
    kept = list(lines)
    evicted: list[Line] = []
    while len("\n".join(line.text for line in kept)) > limit:
        victim = next(line for line in kept if line is not keep)
        kept.remove(victim)
        evicted.append(victim)
    return kept, evicted


def _parse_line(text: str) -> Line:
    head, sep, _ = text.partition(":")
    subject = head.strip().lower() if sep and 0 < len(head.strip()) <= 40 else None
    return Line(text.strip(), subject)


def _edit_work(organization_id: str, user_id: str, line: Line, block: str, now: int) -> MemoryWork:
    """Work for a line evicted by an API edit. There is no source record: this source
    only makes the new memory's id unique, and is not stored (``from_log=False``)."""
    return MemoryWork(
        source=Source("core-edit", 0, now, 0),
        memory_type="semantic",
        rule=f"core block {block} full",
        organization_id=organization_id,
        user_id=user_id,
        content=line.text,
        importance=0.9,
        timestamp=now,
        event_type="core_edit",
        subject=line.subject,
        metadata={"evicted_from_block": block},
    )
