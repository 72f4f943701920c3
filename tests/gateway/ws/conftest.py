from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import GatewayProcess
from wsclient import WsClient

Connect = Callable[..., Awaitable[WsClient]]


@pytest.fixture(scope="module")
def ws_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway shared by the tests of a module that need no special settings."""
    data = tmp_path_factory.mktemp("ws") / "data"
    data.mkdir()
    process = GatewayProcess(data).start()
    yield process
    process.stop()


@pytest.fixture
def custom_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start a gateway with settings: ``custom_gateway(ws_heartbeat_s="0.5")``."""
    started: list[GatewayProcess] = []

    def start(**settings: str) -> GatewayProcess:
        data = tmp_path / f"data{len(started)}"
        data.mkdir()
        env = {f"AGENTMEM_{k.upper()}": v for k, v in settings.items()}
        process = GatewayProcess(data, env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
async def connect(
    ws_gateway: GatewayProcess, make_token: Callable[..., str]
) -> AsyncIterator[Connect]:
    opened: list[WsClient] = []

    async def open_client(
        user: str = "u1",
        org: str = "o1",
        scopes: tuple[str, ...] = ("publish", "subscribe"),
        encoding: str = "json",
        server: GatewayProcess | None = None,
        **kwargs: Any,
    ) -> WsClient:
        token = make_token(user, org, scopes)
        client = await WsClient.connect((server or ws_gateway).url, token, encoding, **kwargs)
        welcome = await client.expect("welcome")
        assert welcome["user_id"] == user
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()
