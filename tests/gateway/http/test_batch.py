"""``POST /api/v1/stream/batch``: per-item results in order, partial success, limits."""

from __future__ import annotations

import json

import pytest

from gateway.streamlog.partitioner import partition_for_key

BATCH = "/api/v1/stream/batch"


def stored(client, headers, topic: str, partition: int, offset: int) -> dict:
    response = client.get(
        f"/api/v1/topics/{topic}/records",
        params={"partition": partition, "offset": offset, "limit": 1},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    records = response.json()["records"]
    assert len(records) == 1 and records[0]["offset"] == offset
    return records[0]


def test_invalid_items_do_not_fail_the_valid_ones(
    client, tenant, unique_key, make_event, produced_total
) -> None:
    key = unique_key()
    items = [
        {"key": key, "event": make_event()},  # batch topic: user-events
        {"event": {"type": "teleport", "payload": {}}},
        5,
        {"topic": "chat-messages", "key": key, "event": make_event("chat_message")},
        {"topic": "no-such-topic", "event": make_event()},
        {"topic": "memory-updates", "event": make_event("memory_update")},
        {"event": make_event(organization_id="someone-else")},
        {"event": make_event(user_id="another-user")},
        {"topic": "agent-actions", "event": make_event("chat_message")},
        {"key": key, "event": make_event(id="last-one")},
    ]
    before = produced_total(client)
    response = client.post(
        BATCH, headers=tenant.headers(), json={"topic": "user-events", "events": items}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is False
    assert (body["processed"], body["failed"]) == (3, 7)
    results = body["results"]
    assert len(results) == len(items)
    assert [r["success"] for r in results] == [
        True,
        False,
        False,
        True,
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    errors = {i: r["error"] for i, r in enumerate(results) if not r["success"]}
    assert {i: e["code"] for i, e in errors.items()} == {
        1: "invalid_event",
        2: "invalid_event",
        4: "unknown_topic",
        5: "forbidden",
        6: "forbidden",
        7: "forbidden",
        8: "invalid_event",
    }
    # Paths point into the batch.
    assert errors[1]["details"][0]["path"] == "$.events[1].event.type"
    assert errors[2]["details"][0]["path"] == "$.events[2]"
    assert all(set(e) <= {"code", "message", "details"} and e["message"] for e in errors.values())

    assert [results[i]["topic"] for i in (0, 3, 9)] == [
        "user-events",
        "chat-messages",
        "user-events",
    ]
    assert results[0]["partition"] == partition_for_key(key.encode(), 16)
    assert results[3]["partition"] == partition_for_key(key.encode(), 16)
    assert results[9]["id"] == "last-one"
    for i in (0, 3, 9):
        record = stored(
            client,
            tenant.headers(),
            results[i]["topic"],
            results[i]["partition"],
            results[i]["offset"],
        )
        assert record["data"]["id"] == results[i]["id"]
        assert record["data"]["organization_id"] == tenant.org
        assert record["timestamp"] == results[i]["timestamp"]
    assert produced_total(client) == before + 3


def test_all_valid_items_to_several_topics(client, tenant, unique_key, make_event) -> None:
    key = unique_key()
    items = [
        {"topic": "user-events", "key": key, "event": make_event()},
        {"topic": "agent-actions", "key": key, "event": make_event("agent_action")},
        {"topic": "user-events", "key": key, "event": make_event()},
        {"topic": "audit-logs", "key": key, "event": make_event("log_entry")},
        {"topic": "user-events", "key": key, "event": make_event()},
    ]
    response = client.post(BATCH, headers=tenant.headers(), json={"events": items})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["success"], body["processed"], body["failed"]) == (True, 5, 0)
    results = body["results"]
    assert [r["topic"] for r in results] == [i["topic"] for i in items]
    partitions = {"user-events": 16, "agent-actions": 8, "audit-logs": 8}
    for result in results:
        assert result["success"] is True
        assert set(result) == {
            "success",
            "id",
            "topic",
            "partition",
            "offset",
            "timestamp",
            "duplicate",
        }
        assert result["partition"] == partition_for_key(key.encode(), partitions[result["topic"]])
    # Items of one topic are written together, in item order, with consecutive offsets.
    offsets = [r["offset"] for r in results if r["topic"] == "user-events"]
    assert offsets == [offsets[0], offsets[0] + 1, offsets[0] + 2]
    assert len({r["id"] for r in results}) == 5
    for result in results:
        record = stored(
            client, tenant.headers(), result["topic"], result["partition"], result["offset"]
        )
        assert record["data"]["id"] == result["id"]


def test_item_topic_overrides_the_batch_topic(client, tenant, make_event) -> None:
    response = client.post(
        BATCH,
        headers=tenant.headers(),
        json={
            "topic": "audit-logs",
            "events": [
                {"event": make_event("log_entry")},
                {"topic": "system-metrics", "event": make_event("log_entry")},
            ],
        },
    )
    assert response.status_code == 200
    assert [r["topic"] for r in response.json()["results"]] == ["audit-logs", "system-metrics"]


def test_item_without_any_topic_fails_alone(client, tenant, make_event) -> None:
    response = client.post(
        BATCH,
        headers=tenant.headers(),
        json={"events": [{"event": make_event()}, {"topic": "user-events", "event": make_event()}]},
    )
    assert response.status_code == 200
    first, second = response.json()["results"]
    assert first["error"]["code"] == "invalid_event"
    assert first["error"]["details"][0]["path"] == "$.topic"
    assert second["success"] is True


def test_empty_batch(client, tenant) -> None:
    response = client.post(BATCH, headers=tenant.headers(), json={"events": []})
    assert response.status_code == 200
    assert response.json() == {"success": True, "processed": 0, "failed": 0, "results": []}


@pytest.mark.parametrize(
    ("body", "status", "code", "path"),
    [
        pytest.param(b"{nope", 400, "invalid_frame", None, id="malformed-json"),
        pytest.param(b"[]", 422, "invalid_event", "$", id="not-an-object"),
        pytest.param(b"{}", 422, "invalid_event", "$", id="no-events"),
        pytest.param(b'{"events": {}}', 422, "invalid_event", "$.events", id="events-not-a-list"),
        pytest.param(
            b'{"events": [], "topic": 1}', 422, "invalid_event", "$.topic", id="topic-not-a-string"
        ),
    ],
)
def test_bad_batch_bodies(client, tenant, body, status, code, path) -> None:
    response = client.post(BATCH, headers=tenant.headers(), content=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["code"] == code
    if path is not None:
        assert error["details"][0]["path"] == path


def test_batch_over_max_batch_events_is_413(
    limited_client, tenant, make_event, limits, produced_total
) -> None:
    most = limits["AGENTMEM_MAX_BATCH_EVENTS"]
    item = {"topic": "user-events", "event": make_event()}
    before = produced_total(limited_client)
    response = limited_client.post(
        BATCH, headers=tenant.headers(), json={"events": [item] * (most + 1)}
    )
    assert response.status_code == 413, response.text
    error = response.json()
    assert error["code"] == "too_large"
    assert "AGENTMEM_MAX_BATCH_EVENTS" in error["message"]
    assert produced_total(limited_client) == before

    response = limited_client.post(BATCH, headers=tenant.headers(), json={"events": [item] * most})
    assert response.status_code == 200
    assert response.json()["processed"] == most
    assert produced_total(limited_client) == before + most


def test_oversized_item_fails_alone(limited_client, tenant, make_event, limits) -> None:
    big = make_event()
    big["payload"]["context"] = {"blob": "x" * limits["AGENTMEM_MAX_EVENT_BYTES"]}
    response = limited_client.post(
        BATCH,
        headers=tenant.headers(),
        json={"topic": "user-events", "events": [{"event": big}, {"event": make_event()}]},
    )
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert first["success"] is False
    assert first["error"]["code"] == "too_large"
    assert "AGENTMEM_MAX_EVENT_BYTES" in first["error"]["message"]
    assert second["success"] is True


def test_batch_results_are_json_in_item_order_for_many_items(client, tenant, make_event) -> None:
    # Interleave valid and invalid items to check the order is the items' order.
    items = []
    for number in range(40):
        if number % 3 == 0:
            items.append({"event": {"type": "user_interaction", "payload": {"action": ""}}})
        else:
            items.append({"event": make_event(id=f"item-{number}")})
    response = client.post(
        BATCH,
        headers=tenant.headers(),
        content=json.dumps({"topic": "user-events", "events": items}).encode(),
    )
    body = response.json()
    for number, result in enumerate(body["results"]):
        if number % 3 == 0:
            assert (
                result["error"]["details"][0]["path"] == f"$.events[{number}].event.payload.action"
            )
        else:
            assert result["id"] == f"item-{number}"
    assert body["processed"] + body["failed"] == 40
    assert body["failed"] == 14


def test_repeated_event_ids_are_written_once(client, tenant, make_event, produced_total) -> None:
    first = client.post(
        BATCH,
        headers=tenant.headers(),
        json={"topic": "audit-logs", "events": [{"event": make_event("log_entry", id="b-1")}]},
    ).json()["results"][0]
    before = produced_total(client)
    response = client.post(
        BATCH,
        headers=tenant.headers(),
        json={
            "topic": "audit-logs",
            "events": [
                {"event": make_event("log_entry", id="b-1")},  # written by the first request
                {"event": make_event("log_entry", id="b-2")},
                {"event": make_event("log_entry", id="b-2")},  # repeated within the batch
            ],
        },
    )
    body = response.json()
    assert (body["success"], body["processed"], body["failed"]) == (True, 3, 0)
    one, two, three = body["results"]
    assert one == {**first, "duplicate": True}
    assert two["duplicate"] is False
    assert three == {**two, "duplicate": True}
    assert produced_total(client) == before + 1
