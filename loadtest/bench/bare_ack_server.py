"""The stack's ceiling: a bare Starlette/uvicorn WebSocket server that answers each publish
frame with an ack at once, with no validation, no log and no durability.

    python -m loadtest.bench.bare_ack_server PORT
"""

from __future__ import annotations

import sys

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket


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


app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        ws_ping_interval=None,
        ws_ping_timeout=None,
    )
