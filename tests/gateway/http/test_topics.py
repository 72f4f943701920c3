"""``/api/v1/topics``: the declared topics, offsets per partition, reading records, tenancy."""

from __future__ import annotations

import pytest

from gateway.streamlog.partitioner import partition_for_key

DECLARED = {
    "user-events": 16,
    "agent-actions": 8,
    "memory-updates": 32,
    "chat-messages": 16,
    "system-metrics": 4,
    "audit-logs": 8,
}
EVENTS = "/api/v1/stream/events"


def test_list_topics(client, tenant) -> None:
    response = client.get("/api/v1/topics", headers=tenant.headers())
    assert response.status_code == 200
    topics = {t["name"]: t for t in response.json()["topics"]}
    assert {name: t["partitions"] for name, t in topics.items()} == DECLARED
    assert topics["memory-updates"]["client_writable"] is False
    assert all(t["client_writable"] for name, t in topics.items() if name != "memory-updates")
    assert topics["audit-logs"]["event_types"] == ["log_entry"]
    assert topics["user-events"]["retention_ms"] == 7 * 86_400_000
    assert topics["user-events"]["compression"] == "gzip"
    assert set(topics["chat-messages"]) == {
        "name",
        "partitions",
        "retention_ms",
        "max_partition_bytes",
        "compression",
        "event_types",
        "client_writable",
        "description",
    }


@pytest.mark.parametrize(("name", "partitions"), DECLARED.items())
def test_describe_topic_lists_every_partition(client, tenant, name, partitions) -> None:
    response = client.get(f"/api/v1/topics/{name}", headers=tenant.headers())
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == name
    assert [p["partition"] for p in body["partitions"]] == list(range(partitions))
    for p in body["partitions"]:
        assert 0 <= p["start_offset"] <= p["end_offset"]


def test_end_offset_moves_after_produces(client, tenant, unique_key, make_event) -> None:
    key = unique_key()
    target = partition_for_key(key.encode(), 8)

    def offsets() -> dict[int, tuple[int, int]]:
        body = client.get("/api/v1/topics/agent-actions", headers=tenant.headers()).json()
        return {p["partition"]: (p["start_offset"], p["end_offset"]) for p in body["partitions"]}

    before = offsets()
    acks = []
    for _ in range(3):
        response = client.post(
            EVENTS,
            headers=tenant.headers(),
            json={"topic": "agent-actions", "key": key, "event": make_event("agent_action")},
        )
        acks.append(response.json())
    after = offsets()

    start, end = before[target]
    assert after[target] == (start, end + 3)
    assert [a["offset"] for a in acks] == [end, end + 1, end + 2]
    assert {p: o for p, o in after.items() if p != target} == {
        p: o for p, o in before.items() if p != target
    }


def test_read_records_pages_by_offset_and_limit(client, tenant, unique_key, make_event) -> None:
    key = unique_key()
    acks = [
        client.post(
            EVENTS,
            headers=tenant.headers(),
            json={"topic": "chat-messages", "key": key, "event": make_event("chat_message")},
        ).json()
        for _ in range(4)
    ]
    partition, first = acks[0]["partition"], acks[0]["offset"]

    def page(**params: int) -> dict:
        response = client.get(
            "/api/v1/topics/chat-messages/records",
            params={"partition": partition, **params},
            headers=tenant.headers(),
        )
        assert response.status_code == 200, response.text
        return response.json()

    body = page(offset=first + 1, limit=2)
    assert (body["topic"], body["partition"]) == ("chat-messages", partition)
    assert [r["offset"] for r in body["records"]] == [first + 1, first + 2]
    assert [r["data"]["id"] for r in body["records"]] == [a["id"] for a in acks[1:3]]
    assert body["next_offset"] == first + 3

    rest = page(offset=body["next_offset"])
    assert [r["offset"] for r in rest["records"]] == [first + 3]
    assert rest["next_offset"] == first + 4

    # Past the end: no records, next_offset stays where it was asked.
    end = page(offset=first + 4)
    assert end == {
        "topic": "chat-messages",
        "partition": partition,
        "records": [],
        "next_offset": first + 4,
    }


def test_read_defaults_to_partition_0_from_offset_0(client, tenant) -> None:
    response = client.get("/api/v1/topics/audit-logs/records", headers=tenant.headers())
    assert response.status_code == 200
    body = response.json()
    assert body["partition"] == 0
    assert all(r["partition"] == 0 for r in body["records"])


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"partition": "16"}, "partition"),
        ({"partition": "-1"}, "partition"),
        ({"partition": "one"}, "partition"),
        ({"partition": "1.5"}, "partition"),
        ({"partition": ""}, "partition"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "abc"}, "offset"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "lots"}, "limit"),
    ],
)
def test_bad_query_parameters_are_422(client, tenant, params, name) -> None:
    response = client.get(
        "/api/v1/topics/user-events/records", params=params, headers=tenant.headers()
    )
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == "invalid_event"
    assert error["details"][0]["path"] == f"?{name}"
    assert name in error["message"]


@pytest.mark.parametrize("params", [{"partition": "15"}, {"limit": "1000"}, {"limit": "1"}])
def test_query_parameters_at_their_bounds_are_accepted(client, tenant, params) -> None:
    response = client.get(
        "/api/v1/topics/user-events/records", params=params, headers=tenant.headers()
    )
    assert response.status_code == 200, response.text


def test_describe_unknown_topic_is_404(client, tenant) -> None:
    response = client.get("/api/v1/topics/no-such-topic", headers=tenant.headers())
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_topic"


@pytest.mark.parametrize(
    ("reader", "scopes", "sees"),
    [
        pytest.param("publisher", ("subscribe",), True, id="the-publisher"),
        pytest.param("teammate", ("subscribe",), False, id="same-org-other-user"),
        pytest.param("teammate", ("subscribe", "admin"), True, id="same-org-admin"),
        pytest.param("outsider", ("subscribe",), False, id="other-org"),
        pytest.param("outsider", ("subscribe", "admin"), False, id="other-org-admin"),
    ],
)
def test_reads_show_only_records_the_token_may_see(
    client, tenant, unique_key, make_event, reader, scopes, sees
) -> None:
    key = unique_key()
    acks = [
        client.post(
            EVENTS,
            headers=tenant.headers(),
            json={"topic": "user-events", "key": key, "event": make_event()},
        ).json()
        for _ in range(3)
    ]
    partition, first = acks[0]["partition"], acks[0]["offset"]
    assert partition == partition_for_key(key.encode(), 16)
    identity = {
        "publisher": {},
        "teammate": {"user": f"{tenant.user}-teammate"},
        "outsider": {"org": f"{tenant.org}-other", "user": tenant.user},
    }[reader]
    headers = tenant.headers(*scopes, **identity)
    response = client.get(
        "/api/v1/topics/user-events/records",
        params={"partition": partition, "offset": first, "limit": 3},
        headers=headers,
    )
    assert response.status_code == 200
    body = response.json()
    ids = [r["data"]["id"] for r in body["records"]]
    assert ids == ([a["id"] for a in acks] if sees else [])
    # Hidden records still advance the position, so a reader can page past them.
    assert body["next_offset"] == first + 3
    reader_org = identity.get("org", tenant.org)
    assert all(r["data"]["organization_id"] == reader_org for r in body["records"])
