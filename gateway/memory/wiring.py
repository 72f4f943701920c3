"""Adding the memory service and its routes to an app built by ``gateway.app.create_app``.

``install(app)`` is idempotent: when the app already serves ``/api/v1/memories`` and its
``Services`` has a ``memories`` service (the gateway wired it itself), it does nothing.
Otherwise it creates the ``MemoryService`` over the app's services, appends the routes
and wraps the lifespan so the service opens after the services (the pipeline's store is
open by then) and closes before them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette

from gateway.http.routes import memories as memory_routes
from gateway.memory.service import MemoryService


def install(app: Starlette) -> MemoryService:
    services: Any = app.state.services
    existing = getattr(services, "memories", None)
    if isinstance(existing, MemoryService):
        return existing
    service = MemoryService(services.settings, services.memory, services.metrics)
    app.state.memories = service
    paths = {getattr(route, "path", None) for route in app.router.routes}
    if "/api/v1/memories" not in paths:
        # Before the static routes' catch-all, if any.
        app.router.routes[0:0] = memory_routes.routes()
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: Starlette) -> AsyncIterator[None]:
        async with inner(application):
            await service.open()
            try:
                yield
            finally:
                await service.close()

    app.router.lifespan_context = lifespan
    return service
