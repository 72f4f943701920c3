"""Logging: JSON lines off a TTY, request ids bound to every line, no secrets written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from servers import SECRET, GatewayProcess
from wsclient import WsClient


async def test_server_log_is_json_and_never_holds_tokens_or_secrets(
    tmp_path: Path, make_token: Callable[..., str]
) -> None:
    data = tmp_path / "data"
    server = GatewayProcess(data, {"AGENTMEM_LOG_LEVEL": "debug"}).start()
    token = make_token("logged", "o1")
    try:
        # A token in a WebSocket URL (as browsers send it) and in an HTTP header.
        client = await WsClient.connect(server.url, token)
        await client.expect("welcome")
        await client.close()
        response = httpx.get(
            server.url + "/api/v1/topics/nope",
            headers={"authorization": f"Bearer {token}", "x-request-id": "req-42"},
        )
        assert response.status_code == 404
        assert response.headers["x-request-id"] == "req-42"
    finally:
        server.stop()
    text = (tmp_path / f"gateway-{server.port}.log").read_text()
    assert token not in text and SECRET not in text
    assert "token=<redacted>" in text, "the WebSocket access line is logged, redacted"
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all("event" in line and "level" in line and "timestamp" in line for line in lines)
