"""The stack's fan-out ceiling: a bare Starlette/uvicorn WebSocket server that sends every
published event to every subscribed connection, with no validation, no log, no filters and
no send queues.

    python -m loadtest.bench.bare_fanout_server PORT

A connection that sends ``{"op": "subscribe", ...}`` is answered ``subscribed`` and from
then on receives an ``event`` frame, shaped like the gateway's, for each ``publish`` any
connection sends; the publisher gets an ``ack``. Frames go out one ``send`` after another
from the publisher's own task, which is the least work the stack can do per delivery.
"""

from __future__ import annotations

import sys

import msgspec
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from loadtest.bench.bare import serve


class _Frame(msgspec.Struct):
    op: str
    id: int = 0
    sub: str = "s"
    topic: str = "system-metrics"
    event: msgspec.Raw = msgspec.Raw(b"null")


_decode = msgspec.json.Decoder(_Frame).decode
_subscribers: dict[WebSocket, bytes] = {}
_offset = 0


async def endpoint(websocket: WebSocket) -> None:
    global _offset
    await websocket.accept(subprotocol="agentmem.v1.json")
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = _decode(message.get("text") or message.get("bytes") or b"")
            if frame.op == "publish":
                _offset += 1
                event = bytes(frame.event)
                for subscriber, prefix in list(_subscribers.items()):
                    text = b'%s,"partition":0,"offset":%d,"data":%s}' % (prefix, _offset, event)
                    try:
                        await subscriber.send({"type": "websocket.send", "text": text.decode()})
                    except Exception:  # a subscriber that went away: the others go on
                        _subscribers.pop(subscriber, None)
                reply = b'{"op":"ack","id":%d,"topic":"%s","partition":0,"offset":%d}' % (
                    frame.id,
                    frame.topic.encode(),
                    _offset,
                )
            elif frame.op == "subscribe":
                _subscribers[websocket] = b'{"op":"event","sub":"%s","topic":"%s"' % (
                    frame.sub.encode(),
                    frame.topic.encode(),
                )
                reply = b'{"op":"subscribed","id":%d,"sub":"%s","topic":"%s","positions":{}}' % (
                    frame.id,
                    frame.sub.encode(),
                    frame.topic.encode(),
                )
            else:
                continue
            await websocket.send({"type": "websocket.send", "text": reply.decode()})
    finally:
        _subscribers.pop(websocket, None)


app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])

if __name__ == "__main__":
    serve(app, int(sys.argv[1]))
