"""The uvicorn server of the gateway, with a graceful drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import socket
from types import FrameType

import structlog
import uvicorn

from gateway import heap
from gateway.ws.hub import Hub

logger = structlog.get_logger(__name__)


def ws_protocol(implementation: str) -> str | type[asyncio.Protocol]:
    """uvicorn's ``ws`` argument for the ``ws_implementation`` setting."""
    if implementation == "gateway":
        from gateway.ws.transport import GatewayWebSocketProtocol

        return GatewayWebSocketProtocol
    return implementation


class DrainingServer(uvicorn.Server):
    """uvicorn, but SIGTERM/SIGINT first drain the WebSocket sessions.

    Draining answers every publish in flight and closes sessions with the reconnect-range
    "going away" code before uvicorn stops listening and closes connections itself. A second
    signal stops at once.
    """

    def __init__(self, config: uvicorn.Config, hub: Hub, timeout: float) -> None:
        super().__init__(config)
        self._hub = hub
        self._timeout = timeout
        self._draining: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            # Start-up state is long-lived: keep full collections from walking it.
            heap.settle()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is not None or self._loop is None or not self.started:
            super().handle_exit(sig, frame)
            return
        # Signal handlers run between bytecodes: hand the work to the loop and wake it.
        self._loop.call_soon_threadsafe(self._start_drain, sig, frame)

    def _start_drain(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is None:
            logger.info("draining", signal=sig, timeout_s=self._timeout)
            self._draining = asyncio.create_task(self._drain_then_exit(sig, frame))

    async def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        try:
            async with asyncio.timeout(self._timeout + 2):
                await self._hub.drain(self._timeout)
        except Exception:
            logger.exception("drain_failed")
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal after shutting down; a completed drain exits with 0.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()
