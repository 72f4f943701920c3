"""``/api/v1/memories`` and ``/api/v1/working-memory``: the memory API (docs/memory-api.md).

Every route authenticates the token and turns it into a ``MemoryFilter`` before anything
else: the organization is always the token's; the user is the token's, except for admin
tokens, which may name any user of their organization (``user_id``) and, when they name
none, read across the organization. A non-admin naming another user is refused (403),
never silently narrowed. Reads need the ``subscribe`` scope, writes ``publish``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from agents.config import MemoryType
from agents.store.filters import MemoryFilter
from agents.store.sqlite import now_ms
from gateway.auth.tokens import Principal
from gateway.errors import ErrorDetail, Forbidden, GatewayError, TooLarge
from gateway.http.auth import principal
from gateway.http.responses import JSON, error_body, read_body
from gateway.memory.requests import (
    BatchCreate,
    BatchDelete,
    InvalidRequest,
    MemoryPatch,
    MemoryServiceUnavailable,
    NewMemory,
    NewWorkingMemory,
    SearchRequest,
    check_content,
    check_fraction,
    check_id,
    convert,
    memory_type,
    parse_json,
    unwrap,
    version_view,
    view,
    working_view,
)
from gateway.memory.service import Draft, MemoryService

MAX_PAGE = 1_000
MAX_WORKING_TTL_S = 30 * 86_400


def service(request: Request) -> MemoryService:
    """The running memory service; 503 when this gateway has none."""
    found = getattr(request.app.state.services, "memories", None) or getattr(
        request.app.state, "memories", None
    )
    if not isinstance(found, MemoryService):
        raise MemoryServiceUnavailable(
            "The memory service is not running in this gateway. It runs in the gateway with "
            "AGENTMEM_MEMORY_PIPELINE=serve, or next to `agentmem-gateway agents` once the "
            "memory API is enabled; see docs/memory-api.md."
        )
    return found


def _max_body(request: Request) -> int:
    return int(request.app.state.services.settings.max_body_bytes)


def tenancy(
    who: Principal, user_id: str | None, *, write: bool, path: str = "$.user_id"
) -> MemoryFilter:
    """The filter a principal may use, for an optional requested user.

    Non-admin: its own user only (another user: 403). Admin: the named user, or without
    one its own user for writes and the whole organization for reads."""
    check_id(user_id, path)
    if user_id is not None and user_id != who.user_id and not who.is_admin:
        raise Forbidden(
            f"This token is for user {who.user_id!r} and may not use the memories of "
            f"{user_id!r}; only an admin token may name another user of its organization.",
            [ErrorDetail(path, "another user")],
        )
    if user_id is not None:
        return MemoryFilter.for_user(who.organization_id, user_id)
    if who.is_admin and not write:
        return MemoryFilter.organization_wide(who.organization_id)
    return MemoryFilter.for_user(who.organization_id, who.user_id)


def _ok(data: Any, status_code: int = 200, **extra: Any) -> JSON:
    return JSON({"data": data, "success": True, **extra}, status_code=status_code)


def _draft(who: Principal, item: NewMemory, path: str = "$") -> Draft:
    flt = tenancy(who, item.user_id, write=True, path=f"{path}.user_id")
    assert flt.user_id is not None
    check_content(item.content, f"{path}.content")
    check_fraction(item.importance, f"{path}.importance")
    check_id(item.agent_id, f"{path}.agent_id")
    check_id(item.session_id, f"{path}.session_id")
    kind: MemoryType = (
        memory_type(item.memory_type, f"{path}.memory_type") if item.memory_type else "episodic"
    )
    return Draft(
        organization_id=flt.organization_id,
        user_id=flt.user_id,
        content=item.content,
        memory_type=kind,
        importance=item.importance,
        agent_id=item.agent_id,
        session_id=item.session_id,
        metadata=item.metadata,
    )


# -- memories ------------------------------------------------------------------------------------


async def create_memory(request: Request) -> JSON:
    memories = service(request)
    who = principal(request, "publish")
    body = unwrap(parse_json(await read_body(request, _max_body(request))), "content")
    item = convert(body, NewMemory)
    created = await memories.create([_draft(who, item)])
    return _ok({"id": created[0].id, "message": "Memory created"}, 201)


def _time_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.lstrip("-").isdigit():
        return int(raw)
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"Query parameter {name}={raw!r} is not a time: give milliseconds since the epoch "
            "or an ISO 8601 date-time (2026-01-31T12:00:00Z).",
            [ErrorDetail(f"?{name}", "not a time")],
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def _number_param(request: Request, name: str, low: float, high: float) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidRequest(
            f"Query parameter {name}={raw!r} is not valid: expected a number from {low:g} to "
            f"{high:g}.",
            [ErrorDetail(f"?{name}", "out of range or not a number")],
        )
    return value


def _reader_filter(request: Request, who: Principal) -> MemoryFilter:
    q = request.query_params
    flt = tenancy(who, q.get("user_id") or None, write=False, path="?user_id")
    kind = q.get("memory_type") or q.get("type")
    return flt.replace(
        agent_id=check_id(q.get("agent_id") or None, "?agent_id"),
        session_id=check_id(q.get("session_id") or None, "?session_id"),
        memory_types=(memory_type(kind, "?memory_type"),) if kind else (),
        min_importance=_number_param(request, "min_importance", 0.0, 1.0),
        created_after=_time_param(request, "created_after"),
        created_before=_time_param(request, "created_before"),
    )


async def list_memories(request: Request) -> JSON:
    memories = service(request)
    who = principal(request, "subscribe")
    flt = _reader_filter(request, who)
    limit = int(_number_param(request, "limit", 1, MAX_PAGE) or 50)
    cursor = request.query_params.get("cursor") or None
    try:
        page = await memories.page(flt, limit, cursor)
    except ValueError as exc:
        raise InvalidRequest(
            f"{exc}; pass the next_cursor of a previous page unchanged.",
            [ErrorDetail("?cursor", "not a cursor")],
        ) from None
    return _ok(
        [view(m) for m in page.memories],
        pagination={"limit": limit, "next_cursor": page.next_cursor},
    )


def _one_filter(request: Request, who: Principal, write: bool) -> MemoryFilter:
    return tenancy(who, request.query_params.get("user_id") or None, write=False, path="?user_id")


async def get_memory(request: Request) -> JSON:
    memories = service(request)
    who = principal(request, "subscribe")
    memory = await memories.get(_one_filter(request, who, False), request.path_params["memory_id"])
    return _ok(view(memory))


async def update_memory(request: Request) -> JSON:
    memories = service(request)
    who = principal(request, "publish")
    body = unwrap(parse_json(await read_body(request, _max_body(request))), "content")
    patch = convert(body, MemoryPatch)
    if patch.memory_type is not None:
        raise InvalidRequest(
            "memory_type cannot change: delete the memory and create one of the new type.",
            [ErrorDetail("$.memory_type", "cannot change")],
        )
    if patch.content is not None:
        check_content(patch.content)
    check_fraction(patch.importance, "$.importance")
    check_id(patch.agent_id, "$.agent_id")
    # Reads and edits reach the same memories: an admin may edit any in its organization.
    updated = await memories.update(
        _one_filter(request, who, True),
        request.path_params["memory_id"],
        content=patch.content,
        importance=patch.importance,
        metadata=patch.metadata,
        agent_id=patch.agent_id,
    )
    return _ok(view(updated))


async def delete_memory(request: Request) -> JSON:
    memories = service(request)
    who = principal(request, "publish")
    memory_id = request.path_params["memory_id"]
    (deleted,) = await memories.delete(_one_filter(request, who, True), [memory_id])
    if deleted is None:
        from gateway.memory.requests import MemoryNotFound

        raise MemoryNotFound(
            f"No memory {memory_id!r} that this token may see (it never existed, was deleted "
            "or expired, or belongs to another user)."
        )
    return _ok({"id": deleted, "message": "Memory deleted"})


async def memory_history(request: Request) -> JSON:
    memories = service(request)
    who = principal(request, "subscribe")
    versions = await memories.history(
        _one_filter(request, who, False), request.path_params["memory_id"]
    )
    return _ok([version_view(v) for v in versions])


def _batch_limit(request: Request, count: int) -> None:
    limit = int(request.app.state.services.settings.max_batch_events)
    if count > limit:
        raise TooLarge(
            f"The batch has {count} items; the limit is {limit} (AGENTMEM_MAX_BATCH_EVENTS). "
            "Split it into several requests."
        )


async def batch_create(request: Request) -> JSON:
    memories = service(request)
    who = principal(request, "publish")
    body = parse_json(await read_body(request, _max_body(request)))
    items = (
        body if isinstance(body, list) else convert(unwrap(body, "memories"), BatchCreate).memories
    )
    _batch_limit(request, len(items))
    results: list[dict[str, Any]] = [{} for _ in items]
    drafts: list[tuple[int, Draft]] = []
    for index, raw in enumerate(items):
        path = f"$.memories[{index}]"
        try:
            drafts.append((index, _draft(who, convert(raw, NewMemory, path), path)))
        except GatewayError as error:
            results[index] = {"success": False, "error": error_body(error)}
    if drafts:
        created = await memories.create([d for _, d in drafts])
        for (index, _), memory in zip(drafts, created, strict=True):
            results[index] = {"success": True, "id": memory.id}
    done = sum(1 for r in results if r["success"])
    return JSON(
        {
            "success": done == len(results),
            "data": {"created": done, "failed": len(results) - done, "results": results},
        },
        status_code=201 if done == len(results) and results else 200,
    )


async def batch_delete(request: Request) -> JSON:
    memories = service(request)
    who = principal(request, "publish")
    body = parse_json(await read_body(request, _max_body(request)))
    if isinstance(body, list):
        body = {"ids": body}
    ids = convert(unwrap(body, "ids"), BatchDelete).ids
    _batch_limit(request, len(ids))
    flt = tenancy(who, request.query_params.get("user_id") or None, write=False, path="?user_id")
    deleted = await memories.delete(flt, ids)
    results = [
        {"id": memory_id, "deleted": True}
        if got is not None
        else {
            "id": memory_id,
            "deleted": False,
            "error": {"code": "not_found", "message": f"No memory {memory_id!r} to delete."},
        }
        for memory_id, got in zip(ids, deleted, strict=True)
    ]
    count = sum(1 for r in results if r["deleted"])
    return JSON(
        {
            "success": count == len(ids),
            "data": {"deleted": count, "not_found": len(ids) - count, "results": results},
        }
    )


async def search_memories(request: Request) -> JSON:
    memories = service(request)
    who = principal(request, "subscribe")
    body = unwrap(parse_json(await read_body(request, _max_body(request))), "query")
    search = convert(body, SearchRequest)
    if not search.query.strip():
        raise InvalidRequest(
            "query is empty: give the text to search for.", [ErrorDetail("$.query", "empty")]
        )
    if not 1 <= search.limit <= 100:
        raise InvalidRequest(
            f"limit = {search.limit} is out of range: use 1 to 100.",
            [ErrorDetail("$.limit", "expected 1 to 100")],
        )
    check_fraction(search.threshold, "$.threshold")
    check_fraction(search.min_importance, "$.min_importance")
    if search.max_age_days is not None and not search.max_age_days > 0:
        raise InvalidRequest(
            f"max_age_days = {search.max_age_days}: use a number of days above 0.",
            [ErrorDetail("$.max_age_days", "expected a number above 0")],
        )
    flt = tenancy(who, search.user_id, write=False)
    flt = flt.replace(
        agent_id=check_id(search.agent_id, "$.agent_id"),
        memory_types=(memory_type(search.memory_type),) if search.memory_type else (),
        min_importance=search.min_importance,
        created_after=(
            now_ms() - int(search.max_age_days * 86_400_000)
            if search.max_age_days is not None
            else None
        ),
    )
    hits = await memories.search(flt, search.query, limit=search.limit, threshold=search.threshold)
    return _ok(
        [
            {
                **view(h.memory),
                "score": round(h.score, 6),
                "scores": {
                    "relevance": round(h.relevance, 6),
                    "recency": round(h.recency, 6),
                    "importance": h.importance,
                    "keyword_rank": h.keyword_rank,
                    "vector_rank": h.vector_rank,
                    "similarity": None if h.similarity is None else round(h.similarity, 6),
                },
            }
            for h in hits
        ]
    )


# -- working memory ------------------------------------------------------------------------------


async def create_working_memory(request: Request) -> JSON:
    memories = service(request)
    who = principal(request, "publish")
    body = unwrap(parse_json(await read_body(request, _max_body(request))), "content")
    item = convert(body, NewWorkingMemory)
    flt = tenancy(who, item.user_id, write=True)
    assert flt.user_id is not None
    check_content(item.content)
    check_id(item.session_id, "$.session_id")
    check_id(item.agent_id, "$.agent_id")
    if not 0 <= item.priority <= 10:
        raise InvalidRequest(
            f"priority = {item.priority} is out of range: use an integer from 0 to 10.",
            [ErrorDetail("$.priority", "expected 0 to 10")],
        )
    if not 0 < item.expires_in_seconds <= MAX_WORKING_TTL_S:
        raise InvalidRequest(
            f"expires_in_seconds = {item.expires_in_seconds}: use more than 0 and at most "
            f"{MAX_WORKING_TTL_S} (30 days).",
            [ErrorDetail("$.expires_in_seconds", "out of range")],
        )
    now = now_ms()
    draft = Draft(
        organization_id=flt.organization_id,
        user_id=flt.user_id,
        content=item.content,
        memory_type="working",
        importance=item.priority / 10,
        agent_id=item.agent_id,
        session_id=item.session_id,
        metadata={**item.metadata, "priority": item.priority},
        expires_at=now + int(item.expires_in_seconds * 1000),
    )
    (created,) = await memories.create([draft])
    return _ok(
        {"id": created.id, "message": "Working memory created", "item": working_view(created)}, 201
    )


async def list_working_memory(request: Request) -> JSON:
    memories = service(request)
    who = principal(request, "subscribe")
    session_id = request.query_params.get("session_id")
    if not session_id:
        raise InvalidRequest(
            "session_id is required: GET /api/v1/working-memory?session_id=<session>.",
            [ErrorDetail("?session_id", "missing")],
        )
    flt = tenancy(who, request.query_params.get("user_id") or None, write=False, path="?user_id")
    flt = flt.replace(session_id=check_id(session_id, "?session_id"), memory_types=("working",))
    limit = int(_number_param(request, "limit", 1, MAX_PAGE) or 100)
    page = await memories.page(flt, limit, None)
    return _ok([working_view(m) for m in page.memories])


def routes() -> list[Route]:
    """The memory API's routes (``/api/v1/memories/batch`` before ``/{memory_id}``)."""
    return [
        Route("/api/v1/memories", create_memory, methods=["POST"]),
        Route("/api/v1/memories", list_memories, methods=["GET"]),
        Route("/api/v1/memories/search", search_memories, methods=["POST"]),
        Route("/api/v1/memories/batch", batch_create, methods=["POST"]),
        Route("/api/v1/memories/batch/delete", batch_delete, methods=["POST"]),
        Route("/api/v1/memories/{memory_id}", get_memory, methods=["GET"]),
        Route("/api/v1/memories/{memory_id}", update_memory, methods=["PATCH"]),
        Route("/api/v1/memories/{memory_id}", delete_memory, methods=["DELETE"]),
        Route("/api/v1/memories/{memory_id}/history", memory_history, methods=["GET"]),
        Route("/api/v1/working-memory", create_working_memory, methods=["POST"]),
        Route("/api/v1/working-memory", list_working_memory, methods=["GET"]),
    ]
