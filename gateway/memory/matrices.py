"""``TenantMatrices``: memory vectors held in process, one float32 matrix per user.

The exact vector index keeps its whole index here, and the Qdrant index in local mode
answers its queries from here (its local collection stays the durable copy). Rows are
grouped by organization, then user, so a user's search multiplies that user's rows only
and an organization-wide search each of its users' blocks: no query ever reads another
organization's rows. The filter's other fields (agent, session, memory type, importance,
creation time, expiry) are NumPy masks over the block's parallel arrays.

Memory: ``dim * 4`` bytes per memory for the vector (1 KiB with the default embedder)
plus ~60 bytes of fields and the id.

Not thread safe by itself: callers serialize writes and searches with ``lock``, held only
for the in-memory work (never across a disk or network write), so a search waits at most
for one short batch of row updates.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from agents.store.filters import MemoryFilter

if TYPE_CHECKING:
    from gateway.memory.vectors import VectorPoint

_FIELDS = ("user", "agent", "session", "mtype", "importance", "created", "expires")
NEVER = 2**62
"""``expires`` of a memory that does not expire."""


class _Block:
    """One user's vectors: a growing float32 matrix and parallel field arrays."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.size = 0
        self.matrix = np.zeros((64, dim), dtype=np.float32)
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.user = np.zeros(64, dtype=np.int64)
        self.agent = np.zeros(64, dtype=np.int64)
        self.session = np.zeros(64, dtype=np.int64)
        self.mtype = np.zeros(64, dtype=np.int64)
        self.importance = np.zeros(64, dtype=np.float32)
        self.created = np.zeros(64, dtype=np.int64)
        self.expires = np.zeros(64, dtype=np.int64)
        # Strings of the equality fields as small integers, so the masks compare ints.
        self.codes: dict[str | None, int] = {None: 0}

    def code(self, value: str | None) -> int:
        found = self.codes.get(value)
        if found is None:
            found = self.codes[value] = len(self.codes)
        return found

    def _grow(self) -> None:
        capacity = len(self.matrix) * 2
        self.matrix = np.resize(self.matrix, (capacity, self.dim))
        for name in _FIELDS:
            setattr(self, name, np.resize(getattr(self, name), capacity))

    def put(self, point: VectorPoint, vector: npt.NDArray[np.float32]) -> None:
        row = self.rows.get(point.memory_id)
        if row is None:
            if self.size == len(self.matrix):
                self._grow()
            row = self.size
            self.size += 1
            self.rows[point.memory_id] = row
            self.ids.append(point.memory_id)
        self.matrix[row] = vector
        self.user[row] = self.code(point.user_id)
        self.agent[row] = self.code(point.agent_id)
        self.session[row] = self.code(point.session_id)
        self.mtype[row] = self.code(point.memory_type)
        self.importance[row] = point.importance
        self.created[row] = point.created_at
        self.expires[row] = point.expires_at if point.expires_at is not None else NEVER

    def remove(self, memory_id: str) -> None:
        row = self.rows.pop(memory_id, None)
        if row is None:
            return
        last = self.size - 1
        if row != last:
            # The last row moves into the hole: the rows stay dense.
            moved = self.ids[last]
            self.rows[moved] = row
            self.ids[row] = moved
            self.matrix[row] = self.matrix[last]
            for name in _FIELDS:
                array = getattr(self, name)
                array[row] = array[last]
        self.ids.pop()
        self.size = last

    def mask(self, flt: MemoryFilter, now: int) -> npt.NDArray[np.bool_] | None:
        """Rows admitted by ``flt`` (None: every row); an unknown value admits none."""
        n = self.size
        mask: npt.NDArray[np.bool_] | None = None

        def both(condition: npt.NDArray[np.bool_]) -> None:
            nonlocal mask
            mask = condition if mask is None else mask & condition

        for array, value in (
            (self.user, flt.user_id),
            (self.agent, flt.agent_id),
            (self.session, flt.session_id),
        ):
            if value is not None:
                code = self.codes.get(value)
                if code is None:
                    return np.zeros(n, dtype=bool)
                both(array[:n] == code)
        if flt.memory_types:
            codes = [self.codes[t] for t in flt.memory_types if t in self.codes]
            both(np.isin(self.mtype[:n], codes))
        if flt.min_importance is not None:
            both(self.importance[:n] >= flt.min_importance)
        if flt.created_after is not None:
            both(self.created[:n] >= flt.created_after)
        if flt.created_before is not None:
            both(self.created[:n] < flt.created_before)
        if not flt.include_expired:
            both(self.expires[:n] > now)
        return mask

    def top(
        self, vector: npt.NDArray[np.float32], flt: MemoryFilter, limit: int, now: int
    ) -> list[tuple[str, float]]:
        n = self.size
        if n == 0:
            return []
        mask = self.mask(flt, now)
        scores = self.matrix[:n] @ vector
        admitted = n
        if mask is not None:
            admitted = int(np.count_nonzero(mask))
            if admitted == 0:
                return []
            scores = np.where(mask, scores, -np.inf)
        k = min(limit, admitted)
        top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
        ids = self.ids
        return [(ids[int(i)], float(scores[i])) for i in top if scores[i] > -np.inf]


class TenantMatrices:
    """Every indexed memory's vector and filter fields, grouped by organization and user."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.lock = threading.Lock()
        self._blocks: dict[str, dict[str, _Block]] = {}
        self._owner: dict[str, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._owner)

    def put(self, point: VectorPoint, vector: npt.NDArray[np.float32]) -> None:
        owner = (point.organization_id, point.user_id)
        if self._owner.get(point.memory_id, owner) != owner:
            # A memory moved to another user (or organization): out of the old block.
            self.remove(point.memory_id)
        users = self._blocks.setdefault(point.organization_id, {})
        block = users.get(point.user_id)
        if block is None:
            block = users[point.user_id] = _Block(self.dim)
        block.put(point, vector)
        self._owner[point.memory_id] = owner

    def put_many(
        self, points: Sequence[VectorPoint], vectors: npt.NDArray[np.float32], chunk: int = 256
    ) -> None:
        """``put`` each, taking ``lock`` per chunk so searches interleave with a big batch."""
        for start in range(0, len(points), chunk):
            with self.lock:
                for i in range(start, min(len(points), start + chunk)):
                    self.put(points[i], vectors[i])

    def remove(self, memory_id: str) -> None:
        owner = self._owner.pop(memory_id, None)
        if owner is not None:
            self._blocks[owner[0]][owner[1]].remove(memory_id)

    def remove_many(self, memory_ids: Sequence[str]) -> None:
        with self.lock:
            for memory_id in memory_ids:
                self.remove(memory_id)

    def _scope(self, flt: MemoryFilter) -> list[_Block]:
        users = self._blocks.get(flt.organization_id)
        if not users:
            return []
        if flt.user_id is not None:
            block = users.get(flt.user_id)
            return [block] if block is not None else []
        return list(users.values())

    def rows(self, flt: MemoryFilter) -> int:
        """How many rows a search with ``flt`` multiplies (a measure of its cost)."""
        return sum(b.size for b in self._scope(flt))

    def search(
        self, vector: npt.NDArray[np.float32], flt: MemoryFilter, limit: int, now: int
    ) -> list[tuple[str, float]]:
        """Up to ``limit`` ``(memory_id, cosine)`` admitted by ``flt``, best first."""
        found: list[tuple[str, float]] = []
        with self.lock:
            for block in self._scope(flt):
                found.extend(block.top(vector, flt, limit, now))
        found.sort(key=lambda hit: (-hit[1], hit[0]))
        return found[:limit]
