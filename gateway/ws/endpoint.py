"""The ``/ws`` endpoint: subprotocol negotiation, then a ``Session`` runs the connection."""

from __future__ import annotations

import contextlib

from starlette.websockets import WebSocket

from gateway.ws.codes import CloseCode
from gateway.ws.frames import SUBPROTOCOLS, Encoding
from gateway.ws.hub import Hub
from gateway.ws.session import Session


async def websocket_endpoint(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.services.hub
    subprotocol: str | None = None
    encoding: Encoding = "json"
    for offered in websocket.scope.get("subprotocols", []):
        if offered in SUBPROTOCOLS:
            subprotocol, encoding = offered, SUBPROTOCOLS[offered]
            break
    await websocket.accept(subprotocol=subprotocol)
    if hub.draining:
        with contextlib.suppress(Exception):
            await websocket.close(CloseCode.GOING_AWAY, "gateway shutting down; reconnect")
        return
    token = websocket.query_params.get("token")
    await Session(websocket, hub, encoding).run(token)
