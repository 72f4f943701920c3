"""``POST /api/v1/stream/events`` and ``POST /api/v1/stream/batch``: durable ingest over HTTP.

Both answer only after the log has committed the records. In a batch each item stands
alone: an invalid item gets an error result and does not stop the valid ones, which are
written together (atomically per topic); results come back in the order of the items.
The event ``id`` is the idempotency key, as on the WebSocket: an event whose id the
organization already wrote to the topic within the dedup window is not written again, and
the answer names the original position with ``"duplicate": true``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from starlette.requests import Request

from gateway.auth.tokens import Principal
from gateway.errors import ErrorDetail, GatewayError, InvalidEvent, TooLarge
from gateway.http.auth import principal
from gateway.http.responses import JSON, error_body, read_body
from gateway.schemas.envelope import (
    PublishRequest,
    batch_decoder,
    check_topic,
    decode_json,
    encode_event,
    idempotency_key,
    publish_decoder,
    stamp,
)
from gateway.services import Services
from gateway.streamlog.interface import NewRecord


def prepare(
    services: Services, who: Principal, request: PublishRequest, default_topic: str | None = None
) -> tuple[str, NewRecord, str]:
    """Validate one publish for ``who``: (topic, record to write, event id)."""
    topic = request.topic or default_topic
    if topic is None:
        raise InvalidEvent(
            'No topic: give "topic" in the body (or for the whole batch).',
            [ErrorDetail(path="$.topic", problem="missing")],
        )
    spec = services.log.topic(topic)
    check_topic(spec, request.event)
    chosen = bool(request.event.id)
    event = stamp(
        request.event,
        organization_id=who.organization_id,
        user_id=who.user_id,
        may_act_for_users=who.is_admin,
    )
    value = encode_event(event, services.settings.max_event_bytes)
    key = request.key.encode() if request.key is not None else None
    assert event.id is not None
    dedup = idempotency_key(who.organization_id, event.id, chosen)
    return topic, NewRecord(value=value, key=key, idempotency_key=dedup), event.id


async def publish_event(request: Request) -> JSON:
    services: Services = request.app.state.services
    who = principal(request, "publish")
    body = await read_body(request, services.settings.max_body_bytes)
    publish = decode_json(publish_decoder, body)
    topic, record, event_id = prepare(services, who, publish)
    started = time.perf_counter()
    produced = await services.log.produce(
        topic, record.key, record.value, idempotency_key=record.idempotency_key
    )
    services.metrics.produce_latency.observe(time.perf_counter() - started)
    if not produced.duplicate:
        services.metrics.produced.labels(topic).inc()
    return JSON(
        {
            "success": True,
            "id": event_id,
            "topic": topic,
            "partition": produced.partition,
            "offset": produced.offset,
            "timestamp": produced.timestamp,
            "duplicate": produced.duplicate,
        }
    )


async def publish_batch(request: Request) -> JSON:
    services: Services = request.app.state.services
    who = principal(request, "publish")
    body = await read_body(request, services.settings.max_body_bytes)
    batch = decode_json(batch_decoder, body)
    limit = services.settings.max_batch_events
    if len(batch.events) > limit:
        raise TooLarge(
            f"The batch has {len(batch.events)} events; the limit is {limit} "
            "(AGENTMEM_MAX_BATCH_EVENTS). Split it into several requests."
        )
    results: list[dict[str, Any]] = [{} for _ in batch.events]
    by_topic: dict[str, list[tuple[int, NewRecord, str]]] = defaultdict(list)
    for index, raw in enumerate(batch.events):
        try:
            item = decode_json(publish_decoder, raw, prefix=f"$.events[{index}]")
            topic, record, event_id = prepare(services, who, item, batch.topic)
        except GatewayError as error:
            services.metrics.errors.labels(error.code).inc()
            results[index] = {"success": False, "error": error_body(error)}
        else:
            by_topic[topic].append((index, record, event_id))
    for topic, items in by_topic.items():
        try:
            produced = await services.log.produce_batch(topic, [record for _, record, _ in items])
        except GatewayError as error:
            for index, _, _ in items:
                results[index] = {"success": False, "error": error_body(error)}
            continue
        services.metrics.produced.labels(topic).inc(sum(1 for p in produced if not p.duplicate))
        for (index, _, event_id), where in zip(items, produced, strict=True):
            results[index] = {
                "success": True,
                "id": event_id,
                "topic": topic,
                "partition": where.partition,
                "offset": where.offset,
                "timestamp": where.timestamp,
                "duplicate": where.duplicate,
            }
    processed = sum(1 for r in results if r["success"])
    return JSON(
        {
            "success": processed == len(results),
            "processed": processed,
            "failed": len(results) - processed,
            "results": results,
        }
    )
