"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError
from gateway.http.responses import JSON
from gateway.services import Services


async def health(request: Request) -> JSON:
    return JSON({"status": "ok"})


async def ready(request: Request) -> JSON:
    """Ready when the log accepts writes now."""
    services: Services = request.app.state.services
    try:
        await services.log.check_writable()
    except GatewayError as error:
        return JSON({"status": "unavailable", "log": error.message}, status_code=503)
    except Exception as exc:
        return JSON({"status": "unavailable", "log": str(exc)}, status_code=503)
    body: dict[str, object] = {"status": "ready", "log": "ok"}
    ok, parts = services.memories.readiness()
    body["memory"] = parts
    if not ok:
        return JSON({**body, "status": "unavailable"}, status_code=503)
    return JSON(body)


async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    services.metrics.produce_queue.set(services.log.queued_records)
    services.metrics.log_writer_restarts.set(services.log.writer_restarts)
    services.metrics.ws_send_queue.set(services.hub.queued_frames())
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
