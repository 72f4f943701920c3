"""``GET /api/v1/smartmodules``: the SmartModules subscriptions may name in ``filters``."""

from __future__ import annotations

from starlette.requests import Request

from gateway.http.auth import principal
from gateway.http.responses import JSON
from gateway.services import Services


async def list_smartmodules(request: Request) -> JSON:
    services: Services = request.app.state.services
    principal(request)
    return JSON(
        {
            "smartmodules": [
                {
                    "name": info.name,
                    "kind": str(info.kind.value if hasattr(info.kind, "value") else info.kind),
                    "description": info.description,
                    "params": info.params,
                    "builtin": info.builtin,
                }
                for info in services.smartmodules.list()
            ]
        }
    )
