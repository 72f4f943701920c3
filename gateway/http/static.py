"""The live event console: the page in ``static/`` at ``/``, the JavaScript SDK's ES modules
at ``/sdk/``, and ``GET /api/v1/dev/token`` handing a development token to the page.

Both directories are found relative to the repository (``static/`` and ``clients/js/src``);
a gateway installed without them serves the API only. Files are served as they are, with
no build step, and revalidated by the browser on every load (``Cache-Control: no-cache``
with an ``ETag``), so a changed page shows up on reload.
"""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.staticfiles import StaticFiles

from gateway.http.responses import JSON
from gateway.services import Services

REPOSITORY = Path(__file__).resolve().parents[2]
STATIC_DIR = REPOSITORY / "static"
SDK_DIR = REPOSITORY / "clients" / "js" / "src"

DEV_USER = "dev"
DEV_ORGANIZATION = "dev"
DEV_SCOPES = ("publish", "subscribe", "admin")
DEV_TOKEN_TTL_S = 3_600
"""The page asks for a fresh development token on every reconnect and token refresh."""

_NOT_SERVED = {"README.md"}
_CACHE_HEADERS = {"Cache-Control": "no-cache"}


def static_routes(static_dir: Path = STATIC_DIR, sdk_dir: Path = SDK_DIR) -> list[BaseRoute]:
    """Routes of the console: put them after the API routes of the app."""
    routes: list[BaseRoute] = [Route("/api/v1/dev/token", dev_token, methods=["GET"])]
    if sdk_dir.is_dir():
        routes.append(_directory_route("/sdk", sdk_dir, "console_sdk"))
    if static_dir.is_dir():
        routes.extend(_page_routes(static_dir))
    return routes


# -- the development token ----------------------------------------------------------------------


async def dev_token(request: Request) -> Response:
    """A token for user ``dev`` of organization ``dev`` (every scope, one hour).

    Only a gateway signing with its generated development secret (``AGENTMEM_JWT_SECRET``
    unset) answers, and only to a loopback client that addressed it by a loopback name (so
    a web page on another site cannot reach it by rebinding its DNS name to 127.0.0.1).
    Anything else is answered as an unknown route.
    """
    services: Services = request.app.state.services
    refusal = _dev_token_refusal(request, services)
    if refusal is not None:
        return JSON(
            {"code": "not_found", "message": refusal},
            status_code=404,
            headers={"Cache-Control": "no-store"},
        )
    token = services.tokens.mint(DEV_USER, DEV_ORGANIZATION, DEV_SCOPES, DEV_TOKEN_TTL_S)
    return JSON(
        {
            "token": token,
            "user_id": DEV_USER,
            "organization_id": DEV_ORGANIZATION,
            "scopes": list(DEV_SCOPES),
            "expires_at": (int(time.time()) + DEV_TOKEN_TTL_S) * 1000,
        },
        headers={"Cache-Control": "no-store"},
    )


def _dev_token_refusal(request: Request, services: Services) -> str | None:
    """Why this request gets no development token, or None when it may have one."""
    if services.settings.jwt_secret is not None:
        return (
            "No development token: this gateway signs tokens with AGENTMEM_JWT_SECRET; "
            "mint one with `agentmem-gateway token`."
        )
    client = request.client.host if request.client is not None else ""
    if not _is_loopback_address(client) or not _is_loopback_host(request.headers.get("host")):
        return "Development tokens are given to loopback clients (127.0.0.1, ::1) only."
    return None


def _is_loopback_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _is_loopback_host(header: str | None) -> bool:
    """Whether a ``Host`` header names this machine: localhost or a loopback address."""
    if not header:
        return False
    if header.startswith("["):
        name = header[1 : header.find("]")] if "]" in header else ""
    else:
        name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    name = name.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost") or _is_loopback_address(name)


# -- files --------------------------------------------------------------------------------------


def _page_routes(static_dir: Path) -> list[BaseRoute]:
    """``/`` is ``index.html``; each top-level file and folder of ``static/`` has its own
    route, so paths that are neither still reach the API's JSON 404 and 405 answers."""
    index = static_dir / "index.html"

    async def console_page(request: Request) -> Response:
        return FileResponse(index, headers=_CACHE_HEADERS)

    routes: list[BaseRoute] = []
    if index.is_file():
        routes.append(Route("/", console_page, methods=["GET", "HEAD"]))
    for entry in sorted(static_dir.iterdir()):
        if entry.name.startswith(".") or entry.name in _NOT_SERVED:
            continue
        if entry.is_dir():
            routes.append(_directory_route(f"/{entry.name}", entry, "console_files"))
        elif entry.is_file():
            routes.append(_file_route(f"/{entry.name}", entry))
    return routes


def _file_route(path: str, file: Path) -> Route:
    async def console_file(request: Request) -> Response:
        return FileResponse(file, headers=_CACHE_HEADERS)

    return Route(path, console_file, methods=["GET", "HEAD"])


def _directory_route(prefix: str, directory: Path, name: str) -> Route:
    """``prefix/<path>`` served from ``directory`` (never outside it), 404 for the rest."""
    files = StaticFiles(directory=directory)

    async def endpoint(request: Request) -> Response:
        response = await files.get_response(_relative(request.path_params["path"]), request.scope)
        response.headers.update(_CACHE_HEADERS)
        return response

    endpoint.__name__ = name
    return Route(prefix + "/{path:path}", endpoint, methods=["GET", "HEAD"])


def _relative(url_path: str) -> str:
    """A URL path as ``StaticFiles`` expects it; it refuses anything outside its directory."""
    return os.path.normpath(os.path.join(*url_path.split("/")))
