"""Health, readiness, metrics, request ids, unknown routes and methods, graceful stop."""

from __future__ import annotations

import re
import signal
import subprocess

import httpx
import pytest
from servers import GatewayProcess

EVENTS = "/api/v1/stream/events"


def test_health(client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready(client) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready" and body["log"] == "ok"
    assert "memory" in body  # the memory store is part of readiness


def test_metrics_count_records_and_requests(client, tenant, make_event, metrics) -> None:
    produced = ("agentmem_records_produced_total", (("topic", "audit-logs"),))
    ok = ("agentmem_http_requests_total", (("route", "publish_event"), ("status", "200")))
    refused = ("agentmem_http_requests_total", (("route", "publish_event"), ("status", "422")))
    error = ("agentmem_errors_total", (("code", "invalid_event"),))
    commits = ("agentmem_log_group_commits_total", ())
    committed = ("agentmem_log_committed_records_total", ())
    before = metrics(client)

    for _ in range(2):
        response = client.post(
            EVENTS,
            headers=tenant.headers(),
            json={"topic": "audit-logs", "event": make_event("log_entry")},
        )
        assert response.status_code == 200
    response = client.post(
        EVENTS, headers=tenant.headers(), json={"topic": "audit-logs", "event": make_event()}
    )
    assert response.status_code == 422

    after = metrics(client)
    assert after[produced] == before.get(produced, 0) + 2
    assert after[ok] == before.get(ok, 0) + 2
    assert after[refused] == before.get(refused, 0) + 1
    assert after[error] == before.get(error, 0) + 1
    # Other parts of the shared gateway may write to the log meanwhile: at least these.
    assert after[commits] >= before[commits] + 1
    assert after[committed] >= before[committed] + 2

    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert re.search(
        r'^agentmem_records_produced_total\{topic="audit-logs"\} \d', response.text, re.M
    )
    assert "agentmem_http_requests_total{" in response.text


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/api/v1/topics", "/nowhere"])
def test_request_id_is_echoed(client, path) -> None:
    response = client.get(path, headers={"x-request-id": "trace-abc-123"})
    assert response.headers["x-request-id"] == "trace-abc-123"


def test_request_id_is_generated_when_absent(client) -> None:
    first = client.get("/health").headers["x-request-id"]
    second = client.get("/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert first != second


def test_long_request_id_is_cut_to_64_characters(client) -> None:
    response = client.get("/health", headers={"x-request-id": "r" * 100})
    assert response.headers["x-request-id"] == "r" * 64


@pytest.mark.parametrize(
    "path", ["/nowhere", "/api/v1", "/api/v1/stream", "/api/v1/topics/user-events/records/0"]
)
def test_unknown_route_is_404_json(client, path) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"code": "not_found", "message": "Not Found"}


WRONG_METHODS = [
    ("GET", EVENTS),
    ("PUT", "/api/v1/stream/batch"),
    ("DELETE", "/api/v1/topics"),
    ("POST", "/api/v1/topics/user-events"),
    ("POST", "/api/v1/topics/user-events/records"),
    ("POST", "/health"),
]


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
def test_wrong_method_is_405_json(client, method, path) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "method_not_allowed"


def test_405_names_the_allowed_methods(client) -> None:
    response = client.get(EVENTS)
    assert response.headers.get("allow") == "POST"


def _publish(process: GatewayProcess, token: str, count: int) -> list[dict]:
    acks = []
    with httpx.Client(base_url=process.url, timeout=10) as http:
        for number in range(count):
            response = http.post(
                EVENTS,
                headers={"Authorization": f"Bearer {token}"},
                json={
                    "topic": "audit-logs",
                    "key": "stop",
                    "event": {
                        "type": "log_entry",
                        "id": f"before-stop-{number}",
                        "payload": {"level": "info", "message": "m"},
                    },
                },
            )
            assert response.status_code == 200
            acks.append(response.json())
    return acks


def _terminate(process: GatewayProcess) -> int:
    assert process.proc is not None
    process.proc.send_signal(signal.SIGTERM)
    try:
        return process.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the gateway did not stop within 5 s of SIGTERM")


def test_sigterm_exits_0_promptly_and_keeps_acknowledged_records(data_dir, make_token) -> None:
    token = make_token()
    process = GatewayProcess(data_dir).start()
    try:
        acks = _publish(process, token, 5)
        assert _terminate(process) == 0
    finally:
        process.stop()

    again = GatewayProcess(data_dir).start()
    try:
        partition, first = acks[0]["partition"], acks[0]["offset"]
        response = httpx.get(
            f"{again.url}/api/v1/topics/audit-logs/records",
            params={"partition": partition, "offset": first},
            headers={"Authorization": f"Bearer {token}"},
        )
        ids = [r["data"]["id"] for r in response.json()["records"]]
        assert ids == [f"before-stop-{n}" for n in range(5)]
    finally:
        again.stop()
