"""Request size limits, with and without a Content-Length header."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

ROUTES = ["/api/v1/stream/events", "/api/v1/stream/batch"]


def _chunks(data: bytes, size: int = 500) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _send(http, path: str, headers: dict, data: bytes, chunked: bool):
    if chunked:
        # A generator body goes out with Transfer-Encoding: chunked and no Content-Length.
        request = http.build_request("POST", path, headers=headers, content=_chunks(data))
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
        return http.send(request)
    return http.post(path, headers=headers, content=data)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("route", ROUTES)
def test_body_over_the_limit_is_413(
    limited_client, tenant, limits, produced_total, route, chunked
) -> None:
    limit = limits["AGENTMEM_MAX_BODY_BYTES"]
    before = produced_total(limited_client)
    response = _send(limited_client, route, tenant.headers(), b" " * (limit + 1), chunked)
    assert response.status_code == 413, response.text
    error = response.json()
    assert error["code"] == "too_large"
    assert "AGENTMEM_MAX_BODY_BYTES" in error["message"]
    assert str(limit) in error["message"]
    assert produced_total(limited_client) == before


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("route", ROUTES)
def test_body_at_the_limit_is_read(limited_client, tenant, limits, route, chunked) -> None:
    # Exactly the limit: read and parsed (whitespace only, so not JSON: 400, not 413).
    limit = limits["AGENTMEM_MAX_BODY_BYTES"]
    response = _send(limited_client, route, tenant.headers(), b" " * limit, chunked)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_frame"


def test_valid_event_sent_chunked_is_accepted(limited_client, tenant, make_event) -> None:
    body = json.dumps({"topic": "user-events", "event": make_event()}).encode()
    response = _send(limited_client, ROUTES[0], tenant.headers(), body, chunked=True)
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True


def test_event_over_max_event_bytes_is_413(limited_client, tenant, make_event, limits) -> None:
    event = make_event()
    event["payload"]["context"] = {"blob": "x" * limits["AGENTMEM_MAX_EVENT_BYTES"]}
    response = limited_client.post(
        ROUTES[0], headers=tenant.headers(), json={"topic": "user-events", "event": event}
    )
    assert response.status_code == 413, response.text
    error = response.json()
    assert error["code"] == "too_large"
    assert "AGENTMEM_MAX_EVENT_BYTES" in error["message"]


def test_token_is_checked_before_the_body(limited_client, limits) -> None:
    response = limited_client.post(
        ROUTES[0], content=b" " * (limits["AGENTMEM_MAX_BODY_BYTES"] + 1)
    )
    assert response.status_code == 401
