"""``agentmem-gateway serve``: run the gateway (HTTP API) with uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

import structlog

from gateway.cli.common import add_settings_flags, settings_from_args
from gateway.logging import configure_logging

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
    # The whole server, imported only to serve: other commands start faster without it.
    import uvicorn

    from gateway.app import create_app
    from gateway.server import DrainingServer, ws_protocol

    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws=ws_protocol(settings.ws_implementation),
        ws_max_size=settings.ws_max_frame_bytes,
        # The gateway sends its own heartbeats (application pings it can see and measure).
        ws_ping_interval=None,
        ws_ping_timeout=None,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) + 5,
    )
    server = DrainingServer(config, app.state.services.hub, settings.drain_timeout_s)
    with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
        runner.run(_serve(server))
    return 0


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for the ``event_loop`` setting (None: asyncio's default)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit(
                "AGENTMEM_EVENT_LOOP=uvloop, but uvloop is not installed: install it "
                "(pip install uvloop) or choose asyncio."
            ) from None
        return None
    return uvloop.new_event_loop


async def _serve(server: Any) -> None:
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
