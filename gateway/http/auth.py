"""Authenticating an HTTP request from its ``Authorization: Bearer`` header."""

from __future__ import annotations

from starlette.requests import Request

from gateway.auth.tokens import Principal
from gateway.errors import Unauthorized
from gateway.services import Services


def principal(request: Request, scope: str | None = None) -> Principal:
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if not header:
        raise Unauthorized("No token: send `Authorization: Bearer <token>`.")
    if kind.lower() != "bearer" or not token.strip():
        raise Unauthorized("The Authorization header must be `Bearer <token>`.")
    services: Services = request.app.state.services
    who = services.tokens.verify(token.strip())
    if scope is not None:
        who.require(scope)
    return who
