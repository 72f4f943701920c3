"""The stack's ceiling: a bare Starlette/uvicorn server that answers each publish with an
ack at once, with no validation, no log and no durability.

    python -m loadtest.bench.bare_ack_server PORT

WebSocket ``/ws``: each ``publish`` frame gets an ``ack``, each ``publish_batch`` a
``batch_ack``. HTTP ``POST /api/v1/stream/events``: the body is read and a fixed ack is
returned, the ceiling of the HTTP ingest route. Runs on the gateway's uvicorn stack
(``loadtest.bench.bare``).
"""

from __future__ import annotations

import sys

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from loadtest.bench.bare import serve


class _Publish(msgspec.Struct):
    id: int
    op: str = ""
    events: list[msgspec.Raw] = []


_decode = msgspec.json.Decoder(_Publish).decode
_encode = msgspec.json.Encoder().encode


async def endpoint(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol="agentmem.v1.json")
    offset = 0
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        frame = _decode(message.get("text") or message.get("bytes") or b"")
        offset += 1
        if frame.op == "publish_batch":
            reply = {
                "op": "batch_ack",
                "id": frame.id,
                "results": [{"partition": 0, "offset": offset}] * len(frame.events),
            }
        else:
            reply = {
                "op": "ack",
                "id": frame.id,
                "topic": "t",
                "partition": 0,
                "offset": offset,
                "duplicate": False,
            }
        await websocket.send({"type": "websocket.send", "text": _encode(reply).decode()})


_HTTP_ACK = (
    b'{"success":true,"id":"b3e3874ac49f4a84992f8de36ecb0f80","topic":"user-events",'
    b'"partition":0,"offset":0,"timestamp":1763000000797,"duplicate":false}'
)


async def ingest(request: Request) -> Response:
    await request.body()
    return Response(_HTTP_ACK, media_type="application/json")


app = Starlette(
    routes=[
        WebSocketRoute("/ws", endpoint),
        Route("/api/v1/stream/events", ingest, methods=["POST"]),
    ]
)

if __name__ == "__main__":
    serve(app, int(sys.argv[1]))
