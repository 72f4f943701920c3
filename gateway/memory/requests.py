"""The memory API's request bodies and errors: decoding, validation, and how memories are shown.

Bodies are accepted bare (``{"content": ...}``) or wrapped the way some AgentMem clients
send them (``{"data": {...}}``). Memory types are accepted in any case and shown in lower
case; ``factual`` is an alias of ``semantic``. Unknown fields are ignored (clients differ
in what they send), wrong types and values out of range are refused with ``422
invalid_request`` and a ``details`` entry naming the field.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, TypeVar

import msgspec

from agents.config import MEMORY_TYPES, MemoryType
from agents.store.sqlite import Memory, MemoryVersion
from gateway.errors import ErrorDetail, GatewayError, InvalidFrame
from gateway.schemas.envelope import error_details

T = TypeVar("T")


class InvalidRequest(GatewayError):
    """A memory API request that is well-formed JSON but not a valid request."""

    code = "invalid_request"
    http_status = 422


class MemoryNotFound(GatewayError):
    code = "not_found"
    http_status = 404


class MemoryServiceUnavailable(GatewayError):
    code = "unavailable"
    http_status = 503
    temporary = True


TYPE_ALIASES: dict[str, MemoryType] = {"factual": "semantic", "fact": "semantic"}


def memory_type(value: str, path: str = "$.memory_type") -> MemoryType:
    """A memory type in any case (``factual`` = semantic); ``InvalidRequest`` otherwise."""
    key = value.strip().lower()
    if key in TYPE_ALIASES:
        return TYPE_ALIASES[key]
    for known in MEMORY_TYPES:
        if key == known:
            return known
    accepted = ", ".join((*MEMORY_TYPES, "factual"))
    raise InvalidRequest(
        f"Unknown memory type {value!r}: use one of {accepted} (any case).",
        [ErrorDetail(path, f"unknown memory type; accepted: {accepted}")],
    )


class NewMemory(msgspec.Struct, kw_only=True):
    content: str
    agent_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    memory_type: str | None = None
    importance: float = 0.5
    metadata: dict[str, Any] = {}


class MemoryPatch(msgspec.Struct, kw_only=True):
    content: str | None = None
    importance: float | None = None
    metadata: dict[str, Any] | None = None
    """Merged into the stored metadata; a key set to ``null`` is removed."""
    agent_id: str | None = None
    memory_type: str | None = None


class SearchRequest(msgspec.Struct, kw_only=True):
    query: str
    user_id: str | None = None
    agent_id: str | None = None
    memory_type: str | None = None
    limit: int = 10
    threshold: float | None = None
    min_importance: float | None = None
    max_age_days: float | None = None


class NewWorkingMemory(msgspec.Struct, kw_only=True):
    session_id: str
    content: str
    expires_in_seconds: float
    priority: int = 5
    """0 to 10; the memory's importance is ``priority / 10``."""
    user_id: str | None = None
    agent_id: str | None = None
    metadata: dict[str, Any] = {}


class BatchCreate(msgspec.Struct, kw_only=True):
    memories: list[Any]


class BatchDelete(msgspec.Struct, kw_only=True):
    ids: list[str]


_json = msgspec.json.Decoder()
_MISSING = re.compile(r"missing required field `([^`]+)`")
MAX_CONTENT_CHARS = 100_000


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise InvalidFrame("The body is empty: send a JSON object.")
    try:
        return _json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidFrame(f"The body is not valid JSON: {exc}.") from None


def unwrap(value: Any, marker: str) -> Any:
    """``{"data": {...}}`` -> ``{...}`` unless the object itself has ``marker``."""
    if (
        isinstance(value, dict)
        and marker not in value
        and isinstance(value.get("data"), dict | list)
    ):
        return value["data"]
    return value


def convert(value: Any, kind: type[T], prefix: str = "$") -> T:
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"Expected a JSON object at {prefix}.", [ErrorDetail(prefix, "expected an object")]
        )
    try:
        return msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError as exc:
        details = error_details(exc, prefix)
        missing = _MISSING.search(details[0].problem)
        if missing:
            path = f"{details[0].path}.{missing.group(1)}"
            details = [ErrorDetail(path, "missing")]
            raise InvalidRequest(
                f"Invalid request: {path} is missing. See docs/memory-api.md for the fields.",
                details,
            ) from None
        raise InvalidRequest(
            f"Invalid request: {details[0].problem} at {details[0].path}. "
            "See docs/memory-api.md for the accepted fields.",
            details,
        ) from None


def check_fraction(value: float | None, path: str) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise InvalidRequest(
            f"{path[2:]} = {value} is out of range: use a number from 0 to 1.",
            [ErrorDetail(path, "expected a number from 0 to 1")],
        )


def check_content(content: str, path: str = "$.content") -> str:
    if not content.strip():
        raise InvalidRequest(
            "content is empty: give the memory's text.", [ErrorDetail(path, "empty")]
        )
    if len(content) > MAX_CONTENT_CHARS:
        raise InvalidRequest(
            f"content has {len(content)} characters; the limit is {MAX_CONTENT_CHARS}.",
            [ErrorDetail(path, "too long")],
        )
    return content


def check_id(value: str | None, path: str) -> str | None:
    if value is not None and (not value.strip() or len(value) > 256):
        raise InvalidRequest(
            f"{path[2:]} must be a non-empty string of at most 256 characters.",
            [ErrorDetail(path, "empty or too long")],
        )
    return value


# -- how memories are shown --------------------------------------------------------------------


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return (
        dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )  # fmt: skip


def view(memory: Memory) -> dict[str, Any]:
    source = memory.source
    return {
        "id": memory.id,
        "organization_id": memory.organization_id,
        "user_id": memory.user_id,
        "agent_id": memory.agent_id,
        "session_id": memory.session_id,
        "memory_type": memory.memory_type,
        "content": memory.content,
        "importance": memory.importance,
        "metadata": memory.metadata,
        "version": memory.version,
        "access_count": memory.access_count,
        "created_at": iso(memory.created_at),
        "updated_at": iso(memory.updated_at),
        "expires_at": iso(memory.expires_at),
        "source": (
            {"topic": source.topic, "partition": source.partition, "offset": source.offset}
            if source
            else None
        ),
    }


def working_view(memory: Memory) -> dict[str, Any]:
    priority = memory.metadata.get("priority")
    return {
        "id": memory.id,
        "user_id": memory.user_id,
        "agent_id": memory.agent_id,
        "session_id": memory.session_id,
        "content": memory.content,
        "priority": priority if isinstance(priority, int) else round(memory.importance * 10),
        "metadata": memory.metadata,
        "created_at": iso(memory.created_at),
        "expires_at": iso(memory.expires_at),
    }


def version_view(version: MemoryVersion) -> dict[str, Any]:
    source = version.source
    return {
        "memory_id": version.memory_id,
        "version": version.version,
        "op": version.op,
        "content": version.content,
        "importance": version.importance,
        "metadata": version.metadata,
        "changed_at": iso(version.changed_at),
        "source": (
            {"topic": source.topic, "partition": source.partition, "offset": source.offset}
            if source
            else None
        ),
    }
