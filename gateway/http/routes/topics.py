"""``/api/v1/topics``: the declared topics, their partitions and offsets, and reading records."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from gateway.auth.tenancy import visible_to
from gateway.errors import ErrorDetail, InvalidEvent
from gateway.http.auth import principal
from gateway.http.responses import JSON
from gateway.schemas.record_view import view
from gateway.services import Services
from gateway.streamlog.interface import TopicSpec

MAX_READ = 1_000


def topic_summary(spec: TopicSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "partitions": spec.partitions,
        "retention_ms": spec.retention_ms,
        "max_partition_bytes": spec.max_partition_bytes,
        "compression": spec.compression,
        "event_types": list(spec.event_types),
        "client_writable": spec.client_writable,
        "description": spec.description,
    }


async def list_topics(request: Request) -> JSON:
    services: Services = request.app.state.services
    principal(request)
    return JSON({"topics": [topic_summary(s) for s in services.log.topics()]})


async def describe_topic(request: Request) -> JSON:
    services: Services = request.app.state.services
    principal(request)
    description = await services.log.describe_topic(request.path_params["name"])
    return JSON(
        {
            **topic_summary(description.spec),
            "partitions": [
                {
                    "partition": p.partition,
                    "start_offset": p.start_offset,
                    "end_offset": p.end_offset,
                }
                for p in description.partitions
            ],
        }
    )


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidEvent(
            f"Query parameter {name}={raw!r} is not valid: "
            f"expected an integer from {low} to {high}.",
            [ErrorDetail(path=f"?{name}", problem="out of range or not an integer")],
        )
    return value


async def read_records(request: Request) -> JSON:
    """Records of one partition from an offset; only those the caller may see are listed."""
    services: Services = request.app.state.services
    who = principal(request, "subscribe")
    name = request.path_params["name"]
    spec = services.log.topic(name)
    partition = _int_param(request, "partition", 0, 0, spec.partitions - 1)
    offset = _int_param(request, "offset", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, MAX_READ)
    records = await services.log.read(name, partition, offset, limit)
    next_offset = records[-1].offset + 1 if records else offset
    return JSON(
        {
            "topic": name,
            "partition": partition,
            "records": [view(r) for r in records if visible_to(who, r.value)],
            "next_offset": next_offset,
        }
    )
