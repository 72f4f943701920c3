"""The one filter grammar over memories, and the tenancy-scoped queries built on it.

``MemoryFilter`` names which memories a query may touch. Its tenancy is not optional:
``organization_id`` is required, and ``user_id`` is either one user or, only when built
with ``MemoryFilter.organization_wide`` (an admin's query), every user of the
organization. ``where`` compiles the whole filter to one SQL condition, and the vector
indexes (``gateway.memory.vectors``) translate the same fields; no caller writes its own
tenancy clause, so none can forget it.

The query functions here (``select``, ``fetch_ids``, ``keyword_candidates``,
``history``) read through ``MemoryStore.fetch`` (the read connection) and always apply
``where``; they never return memories outside the filter.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from agents.config import MEMORY_TYPES, MemoryType
from agents.store.schema import MEMORY_COLUMNS
from agents.store.sqlite import (
    HISTORY_COLUMNS,
    Memory,
    MemoryStore,
    MemoryVersion,
    memory_from_row,
    now_ms,
    version_from_row,
)


class MemoryFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which memories a query sees. Build it with ``for_user`` or ``organization_wide``."""

    organization_id: str
    user_id: str | None
    """One user, or ``None`` for every user of the organization (``organization_wide``)."""
    agent_id: str | None = None
    session_id: str | None = None
    memory_types: tuple[MemoryType, ...] = ()
    """Empty: every type."""
    min_importance: float | None = None
    created_after: int | None = None
    """Milliseconds since the epoch, inclusive."""
    created_before: int | None = None
    """Milliseconds since the epoch, exclusive."""
    include_expired: bool = False
    """Working memories past ``expires_at`` are hidden unless this is set."""

    def __post_init__(self) -> None:
        if not self.organization_id:
            raise ValueError("a memory filter needs an organization id")
        if self.user_id == "":
            raise ValueError(
                "a memory filter's user id is empty; use MemoryFilter.organization_wide "
                "for every user of an organization"
            )
        unknown = [t for t in self.memory_types if t not in MEMORY_TYPES]
        if unknown:
            raise ValueError(
                f"unknown memory type {unknown[0]!r}; known: {', '.join(MEMORY_TYPES)}"
            )

    @classmethod
    def for_user(cls, organization_id: str, user_id: str, **fields: Any) -> MemoryFilter:
        if not user_id:
            raise ValueError("a memory filter for one user needs a non-empty user id")
        return cls(organization_id=organization_id, user_id=user_id, **fields)

    @classmethod
    def organization_wide(cls, organization_id: str, **fields: Any) -> MemoryFilter:
        """Every user of the organization: for principals allowed to see them (admins)."""
        return cls(organization_id=organization_id, user_id=None, **fields)

    def replace(self, **fields: Any) -> MemoryFilter:
        return msgspec.structs.replace(self, **fields)

    def where(
        self, alias: str = "", now: int | None = None, *, by_key: bool = False
    ) -> tuple[str, list[Any]]:
        """The SQL condition (tenancy first) and its parameters; ``alias``: table prefix.
        ``by_key``: the rows are found by another condition (ids): the filter's columns
        are written ``+col`` so SQLite checks them on each row instead of scanning an
        index of them."""
        p = ("+" if by_key else "") + (f"{alias}." if alias else "")
        clauses = [f"{p}organization_id = ?"]
        params: list[Any] = [self.organization_id]
        if self.user_id is not None:
            clauses.append(f"{p}user_id = ?")
            params.append(self.user_id)
        for column, value in (("agent_id", self.agent_id), ("session_id", self.session_id)):
            if value is not None:
                clauses.append(f"{p}{column} = ?")
                params.append(value)
        if self.memory_types:
            clauses.append(f"{p}memory_type IN ({', '.join('?' * len(self.memory_types))})")
            params.extend(self.memory_types)
        if self.min_importance is not None:
            clauses.append(f"{p}importance >= ?")
            params.append(self.min_importance)
        if self.created_after is not None:
            clauses.append(f"{p}created_at >= ?")
            params.append(self.created_after)
        if self.created_before is not None:
            clauses.append(f"{p}created_at < ?")
            params.append(self.created_before)
        if not self.include_expired:
            clauses.append(f"({p}expires_at IS NULL OR {p}expires_at > ?)")
            params.append(now_ms() if now is None else now)
        return " AND ".join(clauses), params

    def admits(self, memory: Memory, now: int | None = None) -> bool:
        """The same condition as ``where``, on a memory in hand."""
        at = now_ms() if now is None else now
        return (
            memory.organization_id == self.organization_id
            and (self.user_id is None or memory.user_id == self.user_id)
            and (self.agent_id is None or memory.agent_id == self.agent_id)
            and (self.session_id is None or memory.session_id == self.session_id)
            and (not self.memory_types or memory.memory_type in self.memory_types)
            and (self.min_importance is None or memory.importance >= self.min_importance)
            and (self.created_after is None or memory.created_at >= self.created_after)
            and (self.created_before is None or memory.created_at < self.created_before)
            and (self.include_expired or memory.expires_at is None or memory.expires_at > at)
        )


class Page(msgspec.Struct, frozen=True):
    memories: list[Memory]
    next_cursor: str | None


_COLUMNS = ", ".join(f"m.{c.strip()}" for c in MEMORY_COLUMNS.split(","))


def encode_cursor(created_at: int, rowid: int) -> str:
    return base64.urlsafe_b64encode(f"{created_at}.{rowid}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """``(created_at, rowid)``; ``ValueError`` for a cursor this module did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, rowid = raw.split(".")
        return int(created), int(rowid)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a cursor of this API: {cursor!r}") from exc


async def select(
    store: MemoryStore, flt: MemoryFilter, *, limit: int, cursor: str | None = None
) -> Page:
    """Memories admitted by ``flt``, newest first (``created_at``, then insertion order),
    one page at a time: pass the returned ``next_cursor`` to get the next page."""
    where, params = flt.where("m")
    if cursor is not None:
        created, rowid = decode_cursor(cursor)
        where += " AND (m.created_at < ? OR (m.created_at = ? AND m.rowid < ?))"
        params += [created, created, rowid]
    rows = await store.fetch(
        f"SELECT {_COLUMNS}, m.rowid FROM memories m WHERE {where} "
        "ORDER BY m.created_at DESC, m.rowid DESC LIMIT ?",
        [*params, limit + 1],
    )
    memories = [memory_from_row(r[:-1]) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(int(last[12]), int(last[-1]))
    return Page(memories, next_cursor)


async def fetch_ids(store: MemoryStore, flt: MemoryFilter, ids: Sequence[str]) -> dict[str, Memory]:
    """The memories among ``ids`` that ``flt`` admits, by id."""
    found: dict[str, Memory] = {}
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        where, params = flt.where("m", by_key=True)
        rows = await store.fetch(
            f"SELECT {_COLUMNS} FROM memories m WHERE m.id IN ({', '.join('?' * len(chunk))}) "
            f"AND {where}",
            [*chunk, *params],
        )
        for row in rows:
            memory = memory_from_row(row)
            found[memory.id] = memory
    return found


_QUERY_WORDS = re.compile(r"[^\W_]+", re.UNICODE)
QUERY_STOPWORDS = frozenset(
    (
        *("a", "an", "and", "are", "as", "at", "be", "by", "can", "did", "do", "does", "for"),
        *("from", "has", "have", "how", "i", "in", "is", "it", "me", "my", "of", "on", "or"),
        *("our", "the", "their", "they", "this", "to", "was", "we", "what", "when", "where"),
        *("which", "who", "why", "with", "you", "your", "about", "any", "user", "users"),
    )
)


COMMON_TERM_SHARE = 0.05
"""A query term found in more than this share of all memories (and in more than
``COMMON_TERM_MIN_DOCS``) is treated as a stopword by the keyword search."""
COMMON_TERM_MIN_DOCS = 1_000


def query_terms(text: str) -> list[str]:
    """The words of ``text`` to match: less common function words, at most 32."""
    words = [w for w in _QUERY_WORDS.findall(text.casefold()) if w not in QUERY_STOPWORDS]
    if not words:
        words = _QUERY_WORDS.findall(text.casefold())
    return list(dict.fromkeys(words))[:32]


def match_expression(terms: Sequence[str]) -> str | None:
    """The FTS5 query: the terms joined by OR, each quoted; ``None`` without terms."""
    if not terms:
        return None
    return " OR ".join('"' + w.replace('"', "") + '"' for w in terms)


async def document_frequencies(store: MemoryStore, terms: Sequence[str]) -> dict[str, int]:
    """How many memories (all tenants) hold each term. Counting reads the term's whole
    posting list, so callers cache the answers (``TermStatistics``)."""
    if not terms:
        return {}
    marks = ", ".join("?" * len(terms))
    rows = await store.fetch(
        f"SELECT term, doc FROM memories_fts_vocab WHERE term IN ({marks})", list(terms)
    )
    found = {str(r[0]): int(r[1]) for r in rows}
    return {t: found.get(t, 0) for t in terms}


class TermStatistics:
    """Cached document frequencies, and which query terms are selective enough to match.

    Terms in more than ``COMMON_TERM_SHARE`` of the memories (and more than
    ``COMMON_TERM_MIN_DOCS``) weigh little in BM25 but make the index score a large part
    of the database for every query: they are left out, like stopwords. Counts are cached
    for ``ttl_s``; they move slowly, and a stale count only matters for terms near the
    threshold, which small databases never reach."""

    def __init__(self, store: MemoryStore, *, ttl_s: float = 300.0, size: int = 100_000) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.size = size
        self._docs: dict[str, tuple[float, int]] = {}
        self._total: tuple[float, int] = (-1e18, 0)

    async def selective(self, terms: Sequence[str]) -> list[str]:
        if not terms:
            return []
        now = time.monotonic()
        if now - self._total[0] > 1.0:
            rows = await self.store.fetch("SELECT coalesce(max(rowid), 0) FROM memories")
            self._total = (now, int(rows[0][0]))
        limit = max(COMMON_TERM_MIN_DOCS, COMMON_TERM_SHARE * self._total[1])
        if self._total[1] <= COMMON_TERM_MIN_DOCS:
            return list(terms)  # no term can be too common yet: nothing to count
        stale = [t for t in terms if now - self._docs.get(t, (-1e18, 0))[0] > self.ttl_s]
        if stale:
            if len(self._docs) + len(stale) > self.size:
                self._docs.clear()
            for term, docs in (await document_frequencies(self.store, stale)).items():
                self._docs[term] = (now, docs)
        return [t for t in terms if self._docs[t][1] <= limit]


async def keyword_candidates(
    store: MemoryStore, flt: MemoryFilter, terms: Sequence[str], limit: int
) -> list[tuple[str, float]]:
    """Ids of the memories admitted by ``flt`` that contain any of ``terms`` (see
    ``query_terms``, ``TermStatistics``), best BM25 first, with the BM25 score (lower is
    better, as SQLite gives it)."""
    expression = match_expression(terms)
    if expression is None:
        return []
    where, params = flt.where("m")
    rows = await store.fetch(
        "SELECT m.id, bm25(memories_fts) AS rank FROM memories_fts "
        "JOIN memories m ON m.rowid = memories_fts.rowid "
        f"WHERE memories_fts MATCH ? AND {where} ORDER BY rank LIMIT ?",
        [expression, *params, limit],
    )
    return [(str(r[0]), float(r[1])) for r in rows]


async def history(store: MemoryStore, flt: MemoryFilter, memory_id: str) -> list[MemoryVersion]:
    """Every version of one memory within the filter's tenancy, oldest first (the history
    outlives deletion, so only the tenancy part of the filter applies)."""
    sql = (
        f"SELECT {HISTORY_COLUMNS} FROM memory_history WHERE organization_id = ? AND memory_id = ?"
    )
    params: list[Any] = [flt.organization_id, memory_id]
    if flt.user_id is not None:
        sql += " AND user_id = ?"
        params.append(flt.user_id)
    rows = await store.fetch(sql + " ORDER BY id", params)
    return [version_from_row(r) for r in rows]
