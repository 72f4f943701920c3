"""``agentmem-gateway serve``: run the gateway (HTTP API) with uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from types import FrameType

import structlog
import uvicorn

from gateway.app import create_app
from gateway.cli.common import add_settings_flags, settings_from_args
from gateway.logging import configure_logging
from gateway.ws.hub import Hub

logger = structlog.get_logger(__name__)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway: HTTP API on --host:--port with the configured stream log.",
    )
    add_settings_flags(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    # The log's writer thread needs the GIL briefly around each commit; with the default
    # 5 ms switch interval a busy event loop makes every commit wait that long.
    sys.setswitchinterval(0.001)
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws_max_size=settings.ws_max_frame_bytes,
        # The gateway sends its own heartbeats (application pings it can see and measure).
        ws_ping_interval=None,
        ws_ping_timeout=None,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) + 5,
    )
    server = DrainingServer(config, app.state.services.hub, settings.drain_timeout_s)
    asyncio.run(_serve(server))
    return 0


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
            await asyncio.wait_for(self._hub.drain(self._timeout), self._timeout + 2)
        except Exception:
            logger.exception("drain_failed")
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal after shutting down; a completed drain exits with 0.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


async def _serve(server: uvicorn.Server) -> None:
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        for listener in server.servers:
            for sock in listener.sockets:
                host, port = sock.getsockname()[:2]
                logger.info(
                    "listening", url=f"http://{host}:{port}", console=f"http://{host}:{port}/"
                )
    await task
