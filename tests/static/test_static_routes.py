"""The console's routes: the page at ``/``, the SDK at ``/sdk/``, the development token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import GatewayProcess
from starlette.requests import Request

from gateway.app import create_app
from gateway.auth.tokens import TokenAuthority, development_secret
from gateway.http.static import dev_token
from gateway.settings import Settings

DEV_TOKEN = "/api/v1/dev/token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway with a configured secret for this module."""
    data_dir = tmp_path_factory.mktemp("routes") / "data"
    data_dir.mkdir()
    process = GatewayProcess(data_dir).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway with its development secret (no ``AGENTMEM_JWT_SECRET``) for this module."""
    data_dir = tmp_path_factory.mktemp("dev-routes") / "data"
    data_dir.mkdir()
    process = GatewayProcess(data_dir)
    process.env.pop("AGENTMEM_JWT_SECRET", None)
    yield process.start()
    process.stop()


def test_the_page_and_the_sdk_are_served(server: GatewayProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<title>agentmem console</title>" in page.text
        assert page.headers["cache-control"] == "no-cache"
        for path in ("/js/main.js", "/sdk/index.js", "/sdk/client.js"):
            module = http.get(path)
            assert module.status_code == 200, path
            # Browsers run ES modules only when served with a JavaScript type.
            assert "javascript" in module.headers["content-type"], path
        assert "export { Client }" in http.get("/sdk/index.js").text
        assert http.get("/console.css").headers["content-type"].startswith("text/css")
        etag = http.get("/js/main.js").headers["etag"]
        assert http.get("/js/main.js", headers={"if-none-match": etag}).status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/js/no-such-module.js",
        "/sdk/no-such-module.js",
        "/sdk/%2e%2e/package.json",
        "/js/%2e%2e/%2e%2e/pyproject.toml",
        "/README.md",
        "/nowhere",
    ],
)
def test_other_paths_are_json_404s(server: GatewayProcess, path: str) -> None:
    response = httpx.get(server.url + path, timeout=5)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_the_page_is_only_read(server: GatewayProcess) -> None:
    for path in ("/", "/js/main.js", "/sdk/index.js"):
        response = httpx.post(server.url + path, timeout=5)
        assert response.status_code == 405, path
        assert response.json()["code"] == "method_not_allowed"


def test_no_development_token_with_a_configured_secret(server: GatewayProcess) -> None:
    response = httpx.get(server.url + DEV_TOKEN, timeout=5)
    assert response.status_code == 404
    assert "AGENTMEM_JWT_SECRET" in response.json()["message"]


def test_development_token_for_loopback_clients(dev_server: GatewayProcess) -> None:
    response = httpx.get(dev_server.url + DEV_TOKEN, timeout=5)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    who = TokenAuthority(development_secret(dev_server.data_dir)).verify(body["token"])
    assert (who.user_id, who.organization_id) == ("dev", "dev")
    assert who.scopes == {"publish", "subscribe", "admin"}
    assert body["scopes"] == ["publish", "subscribe", "admin"]
    # The token is one the gateway takes.
    topics = httpx.get(
        dev_server.url + "/api/v1/topics",
        headers={"Authorization": f"Bearer {body['token']}"},
        timeout=5,
    )
    assert topics.status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "10.0.0.1", "[2001:db8::1]"])
def test_no_development_token_for_other_host_names(dev_server: GatewayProcess, host: str) -> None:
    """A page of another site whose name resolves to 127.0.0.1 (DNS rebinding) gets none."""
    response = httpx.get(dev_server.url + DEV_TOKEN, headers={"host": host}, timeout=5)
    assert response.status_code == 404


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8080", "[::1]:8080", "app.localhost"])
def test_loopback_host_names_are_accepted(dev_server: GatewayProcess, host: str) -> None:
    response = httpx.get(dev_server.url + DEV_TOKEN, headers={"host": host}, timeout=5)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("client", "status"),
    [
        ("127.0.0.1", 200),
        ("127.8.9.10", 200),
        ("::1", 200),
        ("::ffff:127.0.0.1", 200),
        ("192.0.2.10", 404),
        ("2001:db8::5", 404),
        ("::ffff:192.0.2.10", 404),
    ],
)
async def test_development_token_only_for_loopback_addresses(
    tmp_path: Path, client: str, status: int
) -> None:
    """The client address as the server saw it (no test can connect from elsewhere)."""
    app = create_app(Settings(data_dir=tmp_path))
    request = Request(
        {
            "type": "http",
            "method": "GET",
            "path": DEV_TOKEN,
            "headers": [(b"host", b"127.0.0.1:8080")],
            "client": (client, 50_000),
            "app": app,
        }
    )
    response = await dev_token(request)
    body = json.loads(bytes(response.body))
    assert response.status_code == status
    if status == 404:
        assert "loopback" in body["message"]
        assert "token" not in body
    else:
        assert TokenAuthority(development_secret(tmp_path)).verify(body["token"]).user_id == "dev"
