"""Vector indexes of memories: Qdrant (local mode or a server) and an exact in-process one.

One collection per embedding model: ``memories-<model>``. Its embedding model name and
dimension are recorded with it (Qdrant: the collection's metadata; exact: its ``meta``
table) and checked on every open: a collection made by another model or dimension is
refused with ``VectorIndexMismatch`` rather than searched with incomparable vectors.

Each point carries the memory's id and the fields the filter grammar
(``agents.store.filters.MemoryFilter``) tests: organization, user, agent, session, memory
type, importance, creation time. ``search`` applies the filter's tenancy and fields in
the index; the service hydrates the hits from SQLite with the same filter again, so a
stale point can never surface a memory the caller may not see.

- ``QdrantIndex`` (``qdrant``): ``qdrant-client``; embedded local mode under
  ``<data_dir>/qdrant`` by default, a Qdrant server when a URL is given. Local mode is
  plain Python and NumPy: every filtered query walks every point's payload in Python
  (measured: 0.4 s unfiltered and 4 s filtered per query at 100,000 points), and one
  process at a time may open the directory. It suits development and small data; use a
  Qdrant server (``AGENTMEM_MEMORY_QDRANT_URL``) or ``exact`` beyond ~10,000 memories.
- ``ExactIndex`` (``exact``): vectors in ``<data_dir>/vectors/<collection>.sqlite3``,
  held in memory per organization as one float32 matrix; a search is one matrix-vector
  product over the organization's rows and a NumPy mask for the filter. Exact (no
  approximate recall loss); memory is ``dim * 4`` bytes per memory (1 KiB with the default
  embedder).

Calls are blocking and run in a worker thread (``asyncio.to_thread``), one at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from agents.store.filters import MemoryFilter
from agents.store.sqlite import now_ms


class VectorIndexMismatch(RuntimeError):
    """The stored collection was made with another embedding model or dimension."""


class VectorIndexUnavailable(RuntimeError):
    """The index cannot be opened (a missing package, a directory in use, a server down)."""


class VectorPoint(msgspec.Struct, frozen=True, kw_only=True):
    memory_id: str
    organization_id: str
    user_id: str
    agent_id: str | None
    session_id: str | None
    memory_type: str
    importance: float
    created_at: int
    expires_at: int | None


def collection_name(model: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    return f"memories-{slug}"


def point_uuid(memory_id: str) -> str:
    """Qdrant ids are integers or UUIDs: a stable UUID per memory id."""
    return str(uuid.UUID(bytes=hashlib.blake2b(memory_id.encode(), digest_size=16).digest()))


class VectorIndex(Protocol):
    backend: str
    collection: str
    model: str
    dim: int

    async def open(self) -> bool:
        """Open or create the collection; True when it was created now (empty)."""
        ...

    async def close(self) -> None: ...

    async def upsert(
        self, points: Sequence[VectorPoint], vectors: npt.NDArray[np.float32]
    ) -> None: ...

    async def delete(self, memory_ids: Sequence[str]) -> None: ...

    async def search(
        self, vector: npt.NDArray[np.float32], flt: MemoryFilter, limit: int
    ) -> list[tuple[str, float]]:
        """Up to ``limit`` ``(memory_id, cosine)`` admitted by ``flt``, best first."""
        ...

    async def count(self) -> int: ...


def _metadata(model: str, dim: int) -> dict[str, Any]:
    return {"embedding_model": model, "dim": dim, "distance": "cosine"}


def _check(
    collection: str, where: str, model: Any, dim: Any, want_model: str, want_dim: int
) -> None:
    if model != want_model or dim != want_dim:
        raise VectorIndexMismatch(
            f"vector collection {collection!r} in {where} holds {model or 'unknown'!s} vectors "
            f"of dimension {dim}, but the configured embedder is {want_model} ({want_dim}). "
            "Use the embedder it was built with, or delete the collection to rebuild it from "
            "the memory database (it is re-indexed on the next start)."
        )


# -- Qdrant --------------------------------------------------------------------------------------


class QdrantIndex:
    """A Qdrant collection through ``qdrant-client``: local mode at ``path`` or a server."""

    backend = "qdrant"

    def __init__(
        self,
        model: str,
        dim: int,
        *,
        path: Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        if (path is None) == (url is None):
            raise ValueError("give the Qdrant index either a local path or a server URL")
        self.model = model
        self.dim = dim
        self.path = path
        self.url = url
        self.api_key = api_key
        self.collection = collection_name(model)
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return self.url or str(self.path)

    async def open(self) -> bool:
        return await asyncio.to_thread(self._open)

    def _open(self) -> bool:
        try:
            from qdrant_client import QdrantClient, models
        except ImportError as exc:
            raise VectorIndexUnavailable(
                f"the qdrant vector index needs qdrant-client ({exc}): pip install qdrant-client"
            ) from None
        try:
            if self.url is not None:
                client = QdrantClient(url=self.url, api_key=self.api_key, timeout=10)
            else:
                assert self.path is not None
                self.path.mkdir(parents=True, exist_ok=True)
                client = QdrantClient(path=str(self.path))
        except RuntimeError as exc:
            # Local mode locks its directory: one process at a time.
            raise VectorIndexUnavailable(
                f"cannot open the Qdrant directory {self.path}: {exc}. Another process uses "
                "it; give each gateway its own data directory or use a Qdrant server."
            ) from None
        created = False
        try:
            if client.collection_exists(self.collection):
                config = client.get_collection(self.collection).config
                meta = config.metadata or {}
                vectors = config.params.vectors
                size = getattr(vectors, "size", None)
                _check(
                    self.collection, self.where, meta.get("embedding_model"), size,
                    self.model, self.dim,
                )  # fmt: skip
            else:
                client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(
                        size=self.dim, distance=models.Distance.COSINE
                    ),
                    metadata=_metadata(self.model, self.dim),
                )
                created = True
                if self.url is not None:
                    for field, schema in (
                        ("organization_id", models.PayloadSchemaType.KEYWORD),
                        ("user_id", models.PayloadSchemaType.KEYWORD),
                        ("agent_id", models.PayloadSchemaType.KEYWORD),
                        ("memory_type", models.PayloadSchemaType.KEYWORD),
                        ("created_at", models.PayloadSchemaType.INTEGER),
                        ("importance", models.PayloadSchemaType.FLOAT),
                    ):
                        client.create_payload_index(self.collection, field, schema)
        except VectorIndexMismatch:
            client.close()
            raise
        except Exception as exc:
            client.close()
            raise VectorIndexUnavailable(f"Qdrant at {self.where} failed: {exc}") from exc
        self._client = client
        return created

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)

    def _c(self) -> Any:
        if self._client is None:
            raise VectorIndexUnavailable(f"the Qdrant index {self.collection} is not open")
        return self._client

    async def upsert(self, points: Sequence[VectorPoint], vectors: npt.NDArray[np.float32]) -> None:
        if not points:
            return
        from qdrant_client import models

        batch = models.Batch(
            ids=[point_uuid(p.memory_id) for p in points],
            vectors=vectors.tolist(),
            payloads=[msgspec.structs.asdict(p) for p in points],
        )
        await asyncio.to_thread(self._locked, "upsert", self.collection, batch, wait=True)

    async def delete(self, memory_ids: Sequence[str]) -> None:
        if not memory_ids:
            return
        from qdrant_client import models

        selector = models.PointIdsList(points=[point_uuid(m) for m in memory_ids])
        await asyncio.to_thread(self._locked, "delete", self.collection, selector, wait=True)

    def _locked(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return getattr(self._c(), method)(*args, **kwargs)

    async def search(
        self, vector: npt.NDArray[np.float32], flt: MemoryFilter, limit: int
    ) -> list[tuple[str, float]]:
        if not np.any(vector):
            return []
        response = await asyncio.to_thread(
            self._locked,
            "query_points",
            self.collection,
            query=vector.tolist(),
            query_filter=qdrant_filter(flt),
            limit=limit,
            with_payload=["memory_id"],
        )
        return [(str(p.payload["memory_id"]), float(p.score)) for p in response.points]

    async def count(self) -> int:
        result = await asyncio.to_thread(self._locked, "count", self.collection, exact=True)
        return int(result.count)


def qdrant_filter(flt: MemoryFilter, now: int | None = None) -> Any:
    """``MemoryFilter`` as a Qdrant filter: the same fields, tenancy first."""
    from qdrant_client import models

    def match(key: str, value: Any) -> Any:
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))

    must: list[Any] = [match("organization_id", flt.organization_id)]
    if flt.user_id is not None:
        must.append(match("user_id", flt.user_id))
    if flt.agent_id is not None:
        must.append(match("agent_id", flt.agent_id))
    if flt.session_id is not None:
        must.append(match("session_id", flt.session_id))
    if flt.memory_types:
        must.append(
            models.FieldCondition(
                key="memory_type", match=models.MatchAny(any=[str(t) for t in flt.memory_types])
            )
        )
    if flt.min_importance is not None:
        must.append(
            models.FieldCondition(key="importance", range=models.Range(gte=flt.min_importance))
        )
    if flt.created_after is not None or flt.created_before is not None:
        must.append(
            models.FieldCondition(
                key="created_at",
                range=models.Range(gte=flt.created_after, lt=flt.created_before),
            )
        )
    if not flt.include_expired:
        must.append(
            models.Filter(
                should=[
                    models.IsNullCondition(is_null=models.PayloadField(key="expires_at")),
                    models.FieldCondition(
                        key="expires_at", range=models.Range(gt=now_ms() if now is None else now)
                    ),
                ]
            )
        )
    return models.Filter(must=must)


# -- exact ---------------------------------------------------------------------------------------


class _Block:
    """One user's vectors: a growing float32 matrix and parallel field arrays."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.size = 0
        self.matrix = np.zeros((64, dim), dtype=np.float32)
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.points: list[VectorPoint] = []
        self.user = np.zeros(64, dtype=np.int64)
        self.agent = np.zeros(64, dtype=np.int64)
        self.session = np.zeros(64, dtype=np.int64)
        self.mtype = np.zeros(64, dtype=np.int64)
        self.importance = np.zeros(64, dtype=np.float32)
        self.created = np.zeros(64, dtype=np.int64)
        self.expires = np.zeros(64, dtype=np.int64)
        self.codes: dict[str | None, int] = {None: 0}

    def code(self, value: str | None) -> int:
        found = self.codes.get(value)
        if found is None:
            found = self.codes[value] = len(self.codes)
        return found

    def _grow(self) -> None:
        capacity = len(self.matrix) * 2
        self.matrix = np.resize(self.matrix, (capacity, self.dim))
        for name in ("user", "agent", "session", "mtype", "importance", "created", "expires"):
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
            self.points.append(point)
        else:
            self.points[row] = point
        self.matrix[row] = vector
        self.user[row] = self.code(point.user_id)
        self.agent[row] = self.code(point.agent_id)
        self.session[row] = self.code(point.session_id)
        self.mtype[row] = self.code(point.memory_type)
        self.importance[row] = point.importance
        self.created[row] = point.created_at
        self.expires[row] = point.expires_at if point.expires_at is not None else 2**62

    def remove(self, memory_id: str) -> None:
        row = self.rows.pop(memory_id, None)
        if row is None:
            return
        last = self.size - 1
        if row != last:
            # The last row moves into the hole.
            moved = self.ids[last]
            self.rows[moved] = row
            self.ids[row] = moved
            self.points[row] = self.points[last]
            self.matrix[row] = self.matrix[last]
            for name in ("user", "agent", "session", "mtype", "importance", "created", "expires"):
                array = getattr(self, name)
                array[row] = array[last]
        self.ids.pop()
        self.points.pop()
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


class ExactIndex:
    """Exact cosine search in process; vectors persisted in a SQLite file of their own.

    Vectors are held per organization and user (one matrix each), so a user's search
    reads that user's rows only and an organization-wide search each of its users'."""

    backend = "exact"

    def __init__(self, model: str, dim: int, *, directory: Path) -> None:
        self.model = model
        self.dim = dim
        self.collection = collection_name(model)
        self.path = directory / f"{self.collection}.sqlite3"
        self._db: sqlite3.Connection | None = None
        self._blocks: dict[str, dict[str, _Block]] = {}
        self._owner: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    async def open(self) -> bool:
        return await asyncio.to_thread(self._open)

    def _open(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (memory_id TEXT PRIMARY KEY, point BLOB NOT NULL, "
            "vector BLOB NOT NULL)"
        )
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        created = not meta
        if created:
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("embedding_model", self.model), ("dim", str(self.dim))],
            )
        else:
            try:
                _check(
                    self.collection, str(self.path), meta.get("embedding_model"),
                    int(meta.get("dim", "0")), self.model, self.dim,
                )  # fmt: skip
            except VectorIndexMismatch:
                db.close()
                raise
        decoder = msgspec.msgpack.Decoder(VectorPoint)
        for _, point, vector in db.execute("SELECT memory_id, point, vector FROM vectors"):
            self._put(decoder.decode(point), np.frombuffer(vector, dtype=np.float32))
        self._db = db
        return created

    def _put(self, point: VectorPoint, vector: npt.NDArray[np.float32]) -> None:
        owner = (point.organization_id, point.user_id)
        if self._owner.get(point.memory_id, owner) != owner:
            self._remove(point.memory_id)
        users = self._blocks.setdefault(point.organization_id, {})
        block = users.get(point.user_id)
        if block is None:
            block = users[point.user_id] = _Block(self.dim)
        block.put(point, vector)
        self._owner[point.memory_id] = owner

    def _remove(self, memory_id: str) -> None:
        owner = self._owner.pop(memory_id, None)
        if owner is not None:
            self._blocks[owner[0]][owner[1]].remove(memory_id)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise VectorIndexUnavailable(f"the exact vector index {self.path} is not open")
        return self._db

    async def upsert(self, points: Sequence[VectorPoint], vectors: npt.NDArray[np.float32]) -> None:
        if points:
            await asyncio.to_thread(self._upsert, points, vectors)

    def _upsert(self, points: Sequence[VectorPoint], vectors: npt.NDArray[np.float32]) -> None:
        encoder = msgspec.msgpack.Encoder()
        with self._lock:
            db = self._conn()
            db.execute("BEGIN")
            db.executemany(
                "INSERT OR REPLACE INTO vectors (memory_id, point, vector) VALUES (?, ?, ?)",
                [
                    (p.memory_id, encoder.encode(p), vectors[i].astype(np.float32).tobytes())
                    for i, p in enumerate(points)
                ],
            )
            db.execute("COMMIT")
            for i, p in enumerate(points):
                self._put(p, vectors[i])

    async def delete(self, memory_ids: Sequence[str]) -> None:
        if memory_ids:
            await asyncio.to_thread(self._delete, memory_ids)

    def _delete(self, memory_ids: Sequence[str]) -> None:
        with self._lock:
            db = self._conn()
            db.executemany("DELETE FROM vectors WHERE memory_id = ?", [(m,) for m in memory_ids])
            for memory_id in memory_ids:
                self._remove(memory_id)

    async def search(
        self, vector: npt.NDArray[np.float32], flt: MemoryFilter, limit: int
    ) -> list[tuple[str, float]]:
        users = self._blocks.get(flt.organization_id)
        if not users or not np.any(vector):
            return []
        if flt.user_id is not None:
            block = users.get(flt.user_id)
            blocks = [block] if block is not None else []
        else:
            blocks = list(users.values())
        rows = sum(b.size for b in blocks)
        if rows == 0:
            return []
        # A product over ~20,000 rows takes about a millisecond: beyond, a worker thread.
        if rows < 20_000:
            return self._search(blocks, vector, flt, limit)
        return await asyncio.to_thread(self._search, blocks, vector, flt, limit)

    def _search(
        self,
        blocks: list[_Block],
        vector: npt.NDArray[np.float32],
        flt: MemoryFilter,
        limit: int,
    ) -> list[tuple[str, float]]:
        now = now_ms()
        found: list[tuple[str, float]] = []
        with self._lock:
            for block in blocks:
                n = block.size
                if n == 0:
                    continue
                mask = block.mask(flt, now)
                scores = block.matrix[:n] @ vector
                admitted = n
                if mask is not None:
                    admitted = int(np.count_nonzero(mask))
                    if admitted == 0:
                        continue
                    scores = np.where(mask, scores, -np.inf)
                k = min(limit, admitted)
                top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
                ids = block.ids
                found.extend((ids[int(i)], float(scores[i])) for i in top if scores[i] > -np.inf)
        found.sort(key=lambda hit: (-hit[1], hit[0]))
        return found[:limit]

    async def count(self) -> int:
        return len(self._owner)
