"""``agentmem-gateway serve``: run the gateway (HTTP API) with uvicorn."""

from __future__ import annotations

import argparse
import asyncio

import structlog
import uvicorn

from gateway.app import create_app
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
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    asyncio.run(_serve(server))
    return 0


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
