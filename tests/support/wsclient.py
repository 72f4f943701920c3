"""A thin test client for the gateway's WebSocket protocol, on the ``websockets`` library."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection


class WsClient:
    def __init__(self, connection: ClientConnection, binary: bool = False) -> None:
        self.connection = connection
        self.binary = binary
        self.pending: list[dict[str, Any]] = []

    @classmethod
    async def connect(
        cls, base_url: str, token: str | None = None, encoding: str = "json", **kwargs: Any
    ) -> WsClient:
        url = base_url.replace("http://", "ws://") + "/ws"
        if token is not None:
            url += f"?token={token}"
        connection = await websockets.connect(
            url,
            subprotocols=[f"agentmem.v1.{encoding}"],
            max_size=None,
            **kwargs,  # type: ignore[list-item]
        )
        return cls(connection, binary=encoding == "msgpack")

    async def send(self, frame: dict[str, Any]) -> None:
        if self.binary:
            await self.connection.send(msgspec.msgpack.encode(frame))
        else:
            await self.connection.send(json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        if self.pending:
            return self.pending.pop(0)
        raw = await asyncio.wait_for(self.connection.recv(), timeout)
        if isinstance(raw, bytes):
            decoded: dict[str, Any] = msgspec.msgpack.decode(raw)
        else:
            decoded = json.loads(raw)
        return decoded

    async def expect(self, op: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The next frame with ``op`` (and matching fields); other frames are kept for later."""
        skipped: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                frame = await self.recv(max(0.01, deadline - loop.time()))
                if frame.get("op") == op and all(frame.get(k) == v for k, v in match.items()):
                    return frame
                skipped.append(frame)
        finally:
            self.pending = skipped + self.pending

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close; the close code it sent."""
        try:
            while True:
                await asyncio.wait_for(self.connection.recv(), timeout)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    async def close(self) -> None:
        await self.connection.close()


def event(action: str = "clicked", **payload: Any) -> dict[str, Any]:
    return {"type": "user_interaction", "payload": {"action": action, **payload}}
