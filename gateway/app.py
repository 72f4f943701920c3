"""The application factory: one Starlette app serving the HTTP API and ``/ws``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from gateway.errors import GatewayError
from gateway.http.context import RequestContext
from gateway.http.responses import JSON, error_response
from gateway.http.routes import health, ingest, memories, smartmodules, topics
from gateway.http.static import static_routes
from gateway.services import Services
from gateway.settings import Settings
from gateway.ws.endpoint import websocket_endpoint

logger = structlog.get_logger(__name__)


def create_app(settings: Settings) -> Starlette:
    services = Services(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.open()
        try:
            yield
        finally:
            await services.close()

    routes = [
        Route("/health", health.health, methods=["GET"]),
        Route("/ready", health.ready, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        Route("/api/v1/stream/events", ingest.publish_event, methods=["POST"]),
        Route("/api/v1/stream/batch", ingest.publish_batch, methods=["POST"]),
        Route("/api/v1/topics", topics.list_topics, methods=["GET"]),
        Route("/api/v1/topics/{name}", topics.describe_topic, methods=["GET"]),
        Route("/api/v1/topics/{name}/records", topics.read_records, methods=["GET"]),
        Route("/api/v1/smartmodules", smartmodules.list_smartmodules, methods=["GET"]),
        *memories.routes(),
        WebSocketRoute("/ws", websocket_endpoint),
        *static_routes(),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )
    app.state.services = services
    app.add_middleware(RequestContext, metrics=services.metrics)
    return app


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    services: Services = request.app.state.services
    services.metrics.errors.labels(exc.code).inc()
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSON(
        {"code": code, "message": str(exc.detail)},
        status_code=exc.status_code,
        headers=dict(exc.headers or {}),
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.error("unexpected_error", exc_info=exc, path=request.url.path)
    return JSON(
        {"code": "internal", "message": "The gateway failed to handle this request; see its log."},
        status_code=500,
    )
