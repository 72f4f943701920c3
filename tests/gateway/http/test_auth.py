"""Tokens on every protected route: missing, malformed, expired, forged, lacking a scope."""

from __future__ import annotations

import time

import jwt
import pytest
from servers import SECRET

from gateway.auth.tokens import TokenAuthority

ROUTES = [
    ("POST", "/api/v1/stream/events", "publish"),
    ("POST", "/api/v1/stream/batch", "publish"),
    ("GET", "/api/v1/topics", None),
    ("GET", "/api/v1/topics/user-events", None),
    ("GET", "/api/v1/topics/user-events/records", "subscribe"),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _ in ROUTES]

_OTHER_SECRET = "another-secret-0123456789abcdef-0123456789"


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "u1",
        "org": "o1",
        "scopes": ["publish", "subscribe"],
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _bearer(token: str) -> str:
    return f"Bearer {token}"


BAD_CREDENTIALS = [
    pytest.param(None, "No token", id="no-header"),
    pytest.param("", "No token", id="empty-header"),
    pytest.param("Basic dTE6cGFzc3dvcmQ=", "Bearer <token>", id="basic-scheme"),
    pytest.param("Bearer", "Bearer <token>", id="bearer-without-token"),
    pytest.param("Token abc.def.ghi", "Bearer <token>", id="other-scheme"),
    pytest.param("Bearer not-a-jwt", "not a valid HS256 JWT", id="garbage-token"),
    pytest.param(
        _bearer(TokenAuthority(SECRET).mint("u1", "o1", ttl_s=-60)), "expired", id="expired"
    ),
    pytest.param(_bearer(TokenAuthority(_OTHER_SECRET).mint("u1", "o1")), "signature", id="forged"),
    pytest.param(
        _bearer(jwt.encode(_claims(org=None), SECRET, algorithm="HS256")), "'org'", id="no-org"
    ),
    pytest.param(
        _bearer(jwt.encode(_claims(exp=None), SECRET, algorithm="HS256")), "'exp'", id="no-exp"
    ),
    pytest.param(
        _bearer(jwt.encode(_claims(), None, algorithm="none")),
        "not a valid HS256 JWT",
        id="unsigned",
    ),
    pytest.param(
        _bearer(jwt.encode(_claims(scopes={"publish": True}), SECRET, algorithm="HS256")),
        "scopes",
        id="scopes-not-a-list",
    ),
]


@pytest.mark.parametrize(("authorization", "says"), BAD_CREDENTIALS)
@pytest.mark.parametrize(("method", "path", "scope"), ROUTES, ids=ROUTE_IDS)
def test_bad_credentials_are_401_with_www_authenticate(
    client, produced_total, method, path, scope, authorization, says
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    before = produced_total(client)
    response = client.request(
        method, path, headers=headers, json={"topic": "user-events", "events": []}
    )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()
    assert error["code"] == "unauthorized"
    assert says in error["message"]
    assert produced_total(client) == before


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        pytest.param((), set(), id="no-scopes"),
        pytest.param(("subscribe",), {"subscribe"}, id="subscribe"),
        pytest.param(("publish",), {"publish"}, id="publish"),
        pytest.param(("admin",), {"publish", "subscribe"}, id="admin-implies-all"),
    ],
)
@pytest.mark.parametrize(("method", "path", "scope"), ROUTES, ids=ROUTE_IDS)
def test_scopes(client, tenant, make_event, method, path, scope, scopes, allowed) -> None:
    token = TokenAuthority(SECRET).mint(tenant.user, tenant.org, scopes)
    body = {"topic": "user-events", "event": make_event()}
    if path.endswith("batch"):
        body = {"topic": "user-events", "events": [{"event": make_event()}]}
    response = client.request(method, path, headers={"Authorization": f"Bearer {token}"}, json=body)
    if scope is None or scope in allowed:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 403, response.text
        assert "www-authenticate" not in response.headers
        error = response.json()
        assert error["code"] == "forbidden"
        assert repr(scope) in error["message"]
        assert f"--scopes {scope}" in error["message"]
