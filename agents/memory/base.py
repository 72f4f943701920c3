"""What the five memory agents share: the agent contract, ids, hashes and recording changes.

An agent turns ``MemoryWork`` into changes of memories inside a transaction it is given
(``apply_sync``, run in the store's writer thread with the transaction's ``Writes``, so
a whole batch is one call into that thread); it never commits, so its writes land
together with the pipeline's bookkeeping (applied markers, consumer offsets, history)
or not at all. Memory ids are
derived from what a memory is about (the source record, the user's block, the session),
so re-applying the same work after a crash computes the same ids.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from agents.config import MemoryType, PipelineConfig
from agents.embedding import normalize_text
from agents.store.sqlite import Change, Memory, MemoryStore, Transaction, Writes
from agents.work import MemoryWork

Applied = tuple[MemoryWork, list[Change]]
"""A work item and the changes it made (empty when it changed nothing)."""


def memory_id(*parts: str) -> str:
    """A stable id for what a memory is about (same parts, same id, in every process)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()
    return f"mem_{digest}"


def content_hash(content: str) -> str:
    """Hash of the normalized text: equal for texts differing only in case or spacing."""
    return hashlib.sha256(normalize_text(content).encode()).hexdigest()[:32]


def new_memory(work: MemoryWork, id: str, now: int, **fields: Any) -> Memory:
    """A version-1 memory from ``work``; ``fields`` override the defaults."""
    # A caller that has the hash already passes it: it is not computed a second time.
    hash_ = fields.pop("hash", None)
    values: dict[str, Any] = {
        "id": id,
        "organization_id": work.organization_id,
        "user_id": work.user_id,
        "memory_type": work.memory_type,
        "content": work.content,
        "importance": work.importance,
        "hash": hash_ if hash_ is not None else content_hash(work.content),
        "created_at": now,
        "updated_at": now,
        "agent_id": work.agent_id,
        "session_id": work.session_id,
        "metadata": memory_metadata(work),
        "subject": work.subject,
        "event_time": work.timestamp,
        "source": work.source,
    }
    values.update(fields)
    return Memory(**values)


def memory_metadata(work: MemoryWork) -> dict[str, Any]:
    """The metadata of a memory made from ``work``: the event's, with its type and rule."""
    metadata = dict(work.metadata)
    metadata["event_type"] = work.event_type
    metadata["rule"] = work.rule
    if work.event_id:
        metadata["event_id"] = work.event_id
    return metadata


def next_version(memory: Memory, now: int, **fields: Any) -> Memory:
    """The memory's next version with ``fields`` changed."""
    return msgspec.structs.replace(memory, version=memory.version + 1, updated_at=now, **fields)


async def record_changes(tx: Transaction, changes: Sequence[Change], now: int) -> None:
    """Append the changes to the history, which queues their memory updates: the
    pipeline's publisher produces every history row to its updates topic."""
    if changes:
        await tx.record_history(changes, now)


def record_changes_sync(tx: Writes, changes: Sequence[Change], now: int) -> None:
    """``record_changes`` inside a ``Transaction.run`` call."""
    tx.record_history(changes, now)


class MemoryAgent(abc.ABC):
    """One memory type's agent."""

    memory_type: ClassVar[MemoryType]

    def __init__(self, config: PipelineConfig, store: MemoryStore) -> None:
        self.config = config
        self.store = store

    @abc.abstractmethod
    def apply_sync(self, tx: Writes, items: Sequence[MemoryWork], now: int) -> list[Applied]:
        """Apply ``items`` in order (in the writer thread); returns each item's changes."""

    def prepare(self, items: Sequence[MemoryWork]) -> Any:
        """Work on ``items`` that needs no database, done in the event loop before their
        call into the writer, where it overlaps with another batch's SQLite work instead
        of lengthening the serial one. Returns it in a picklable form (``None`` when
        there is none) for ``adopt`` in the apply process. Nothing by default."""
        return None

    def adopt(self, prepared: Any) -> None:  # noqa: B027 (optional hook)
        """Use what ``prepare`` returned in another process, for the coming batch."""

    def forget(self) -> None:  # noqa: B027 (optional hook)
        """The transaction was rolled back: drop anything remembered from it."""

    async def apply(self, tx: Transaction, items: Sequence[MemoryWork], now: int) -> list[Applied]:
        """``apply_sync`` as one call inside ``tx``."""
        self.prepare(items)
        return await tx.run(self.apply_sync, items, now)
