"""Turning redis-py exceptions into the gateway's errors.

A failure to reach Redis, or a Redis that refuses writes for a while (loading its data,
out of memory, a read-only replica, a failed snapshot), is ``Unavailable``: temporary, the
client retries. Every message says where Redis was expected and what to check. Other
errors (a bug, a command Redis does not know) propagate unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit

from redis import exceptions as rexc

from gateway.errors import Unavailable

_REFUSALS = {
    "OOM": "Redis is out of memory (maxmemory); raise maxmemory or shorten retention",
    "READONLY": "the Redis server is a read-only replica; point AGENTMEM_REDIS_URL at the primary",
    "MISCONF": "Redis refuses writes after a failed snapshot; check its disk and logs",
    "LOADING": "Redis is loading its data set",
    "MASTERDOWN": "the Redis replica lost its primary",
    "NOREPLICAS": "not enough Redis replicas are connected",
    "BUSY": "Redis is busy running a script",
}


def describe_url(url: str) -> str:
    """``host:port/db`` of a Redis URL, without credentials (for messages and logs)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    db = parts.path.lstrip("/") or "0"
    return f"{parts.scheme}://{host}:{port}/{db}"


def unavailable(where: str, exc: BaseException) -> Unavailable | None:
    """The ``Unavailable`` error for ``exc``, or ``None`` when it is not a temporary failure."""
    if isinstance(exc, (rexc.ConnectionError, rexc.TimeoutError, OSError)):
        return Unavailable(
            f"Redis at {where} is unreachable ({exc or type(exc).__name__}). Check that it is "
            "running and that AGENTMEM_REDIS_URL points at it; retry shortly."
        )
    if isinstance(exc, rexc.ResponseError):
        text = str(exc)
        code = text.split(" ", 1)[0].upper()
        reason = _REFUSALS.get(code)
        if reason is None and isinstance(exc, rexc.OutOfMemoryError):
            reason = _REFUSALS["OOM"]
        if reason is None and isinstance(exc, rexc.ReadOnlyError):
            reason = _REFUSALS["READONLY"]
        if reason is not None:
            return Unavailable(f"Redis at {where} refused the operation: {reason} ({text}).")
    return None


@contextlib.contextmanager
def mapped(where: str) -> Iterator[None]:
    """Re-raise temporary Redis failures inside the block as ``Unavailable``."""
    try:
        yield
    except (rexc.RedisError, OSError) as exc:
        error = unavailable(where, exc)
        if error is None:
            raise
        raise error from exc
