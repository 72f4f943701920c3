"""``agentmem-gateway produce`` and ``consume``, on their own and next to a running gateway."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import httpx
import pytest

from gateway.streamlog.partitioner import partition_for_key


def log_line(message: str, **envelope: object) -> str:
    return json.dumps(
        {"type": "log_entry", "payload": {"level": "info", "message": message}, **envelope}
    )


@pytest.fixture
def produce(cli, json_lines):
    """Produce ``lines`` to ``topic``; returns the acknowledgements (exit status must be 0)."""

    def run(topic: str, lines: list[str], *args: str) -> list[dict]:
        result = cli("produce", topic, *args, stdin="\n".join(lines) + "\n")
        assert result.returncode == 0, result.stderr
        return json_lines(result.stdout)

    return run


@pytest.fixture
def consume(cli, json_lines):
    """Consume with ``args``; returns the records printed (exit status must be 0)."""

    def run(*args: str) -> list[dict]:
        result = cli("consume", *args)
        assert result.returncode == 0, result.stderr
        return json_lines(result.stdout)

    return run


def test_produce_writes_valid_lines_and_reports_invalid_ones(cli, json_lines, consume) -> None:
    lines = [
        log_line("first", id="e1"),
        log_line("second", id="e2"),
        "{not json",
        json.dumps(
            {
                "type": "chat_message",
                "payload": {"conversation_id": "c", "role": "user", "content": "x"},
            }
        ),
        "",
        json.dumps({"type": "log_entry", "payload": {"level": "loud", "message": "m"}}),
        log_line("third", id="e3"),
    ]
    result = cli("produce", "audit-logs", "--key", "svc-1", stdin="\n".join(lines) + "\n")

    assert result.returncode == 1
    acks = json_lines(result.stdout)
    partition = partition_for_key(b"svc-1", 8)
    assert acks == [
        {
            "id": f"e{n + 1}",
            "topic": "audit-logs",
            "partition": partition,
            "offset": n,
            "duplicate": False,
        }
        for n in range(3)
    ]
    errors = result.stderr.splitlines()
    assert any(line.startswith("line 3: invalid_frame: ") for line in errors)
    assert any(
        line.startswith("line 4: invalid_event: ") and "log_entry" in line for line in errors
    )
    assert any(line.startswith("line 6: invalid_event: ") and "level" in line for line in errors)
    assert not any(line.startswith("line 5:") for line in errors)

    records = consume("audit-logs", "-B", "-d")
    assert [r["data"]["id"] for r in records] == ["e1", "e2", "e3"]
    assert [r["data"]["payload"]["message"] for r in records] == ["first", "second", "third"]
    for record in records:
        assert (record["topic"], record["partition"], record["key"]) == (
            "audit-logs",
            partition,
            "svc-1",
        )
        assert record["data"]["organization_id"] == "default"
        assert record["data"]["user_id"] == "cli"


def test_produce_stamps_org_and_user(produce, consume) -> None:
    produce(
        "audit-logs",
        [log_line("mine"), log_line("for bob", user_id="bob")],
        "--org",
        "acme",
        "--user",
        "ops",
    )
    records = consume("audit-logs", "-B", "-d")
    owners = sorted((r["data"]["organization_id"], r["data"]["user_id"]) for r in records)
    assert owners == [("acme", "bob"), ("acme", "ops")]


def test_produce_may_write_pipeline_topics(produce, consume) -> None:
    update = {
        "type": "memory_update",
        "payload": {
            "op": "created",
            "memory_id": "m1",
            "memory_type": "core",
            "organization_id": "acme",
            "user_id": "u1",
        },
    }
    (ack,) = produce("memory-updates", [json.dumps(update)], "--key", "u1")
    assert ack["partition"] == partition_for_key(b"u1", 32)
    records = consume("memory-updates", "-p", str(ack["partition"]), "-B", "-d")
    assert [r["data"]["type"] for r in records] == ["memory_update"]


def test_produce_raw_writes_lines_as_they_are(produce, consume) -> None:
    acks = produce("system-metrics", ["not json at all", '{"any": "json"}'], "--raw", "--key", "k")
    assert [a["id"] for a in acks] == [None, None]
    records = consume("system-metrics", "-B", "-d")
    assert records[0]["encoding"] == "base64"
    assert base64.b64decode(records[0]["data"]) == b"not json at all"
    assert "encoding" not in records[1]
    assert records[1]["data"] == {"any": "json"}


def test_produce_writes_an_event_id_once_per_organization(produce, consume) -> None:
    (first,) = produce("audit-logs", [log_line("once", id="same")], "--org", "acme")
    again = produce("audit-logs", [log_line("once", id="same")] * 2, "--org", "acme")
    assert again == [{**first, "duplicate": True}] * 2
    (other,) = produce("audit-logs", [log_line("once", id="same")], "--org", "globex")
    assert other["duplicate"] is False
    raw = produce("audit-logs", ['{"id": "same"}'] * 2, "--raw")
    assert [r["duplicate"] for r in raw] == [False, False]
    records = consume("audit-logs", "-B", "-d")
    assert len(records) == 4


def test_produce_to_unknown_topic_exits_1(cli) -> None:
    result = cli("produce", "no-such-topic", stdin=log_line("x") + "\n")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Unknown topic 'no-such-topic'" in result.stderr


@pytest.fixture(scope="module")
def metrics_log(tmp_path_factory, run_cli, env_for) -> tuple[object, list[dict]]:
    """A log whose system-metrics holds ten keyless records: (cli on it, acknowledgements).

    Keyless records go round-robin from partition 0, so partitions 0 and 1 hold three records
    each and partitions 2 and 3 two each.
    """
    data_dir = tmp_path_factory.mktemp("metrics-log")
    cli = run_cli(env_for(data_dir))
    lines = [log_line(f"m{n}", id=f"m{n}") for n in range(10)]
    result = cli("produce", "system-metrics", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    acks = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["partition"] for a in acks] == [0, 1, 2, 3] * 2 + [0, 1]
    return cli, acks


@pytest.fixture
def consume_metrics(metrics_log, json_lines):
    cli, _ = metrics_log

    def run(*args: str) -> list[dict]:
        result = cli("consume", "system-metrics", *args)
        assert result.returncode == 0, result.stderr
        return json_lines(result.stdout)

    return run


def test_consume_from_beginning_prints_every_record_and_exits(consume_metrics, metrics_log) -> None:
    _, acks = metrics_log
    records = consume_metrics("-B", "-d")
    assert sorted(r["data"]["id"] for r in records) == sorted(a["id"] for a in acks)
    for record in records:
        assert set(record) == {"topic", "partition", "offset", "timestamp", "key", "data"}
        assert record["key"] is None
    # Within a partition, records come in offset order.
    by_partition: dict[int, list[int]] = {}
    for record in records:
        by_partition.setdefault(record["partition"], []).append(record["offset"])
    assert by_partition == {0: [0, 1, 2], 1: [0, 1, 2], 2: [0, 1], 3: [0, 1]}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["-B", "-d", "-n", "4"], 4, id="count-with-d"),
        pytest.param(["-B", "-n", "2"], 2, id="count-without-d"),
        pytest.param(["-B", "-d", "-n", "50"], 10, id="count-above-what-is-stored"),
    ],
)
def test_consume_count(consume_metrics, args, expected) -> None:
    assert len(consume_metrics(*args)) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["-p", "2", "-B", "-d"], [(2, 0, "m2"), (2, 1, "m6")], id="one-partition"),
        pytest.param(
            ["-p", "0", "-p", "3", "-B", "-d"],
            [(0, 0, "m0"), (0, 1, "m4"), (0, 2, "m8"), (3, 0, "m3"), (3, 1, "m7")],
            id="two-partitions",
        ),
        pytest.param(["-p", "1", "--offset", "1", "-d"], [(1, 1, "m5"), (1, 2, "m9")], id="offset"),
        pytest.param(["-p", "1", "--offset", "9", "-d"], [], id="offset-past-the-end"),
        pytest.param(
            ["-p", "1", "--offset", "1", "-n", "1"], [(1, 1, "m5")], id="offset-and-count"
        ),
        pytest.param(["-d"], [], id="from-the-end"),
    ],
)
def test_consume_selection(consume_metrics, args, expected) -> None:
    records = consume_metrics(*args)
    got = [(r["partition"], r["offset"], r["data"]["id"]) for r in records]
    assert sorted(got) == expected


def test_consume_empty_topic_with_d_exits_at_once(consume) -> None:
    assert consume("chat-messages", "-B", "-d") == []


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        pytest.param(["audit-logs", "-n", "0"], 2, "--count must be at least 1", id="count-0"),
        pytest.param(["audit-logs", "--offset", "-1"], 2, "--offset must be 0 or more", id="neg"),
        pytest.param(["audit-logs", "-p", "8", "-d"], 1, "partitions 0 to 7", id="no-partition"),
        pytest.param(["no-such-topic", "-d"], 1, "Unknown topic", id="unknown-topic"),
    ],
)
def test_consume_refusals(cli, args, status, says) -> None:
    result = cli("consume", *args)
    assert result.returncode == status
    assert says in result.stderr
    assert result.stdout == ""


def test_consume_follows_new_records(cli, cli_env, produce, json_lines) -> None:
    key = "follow"
    partition = partition_for_key(key.encode(), 8)
    assert cli("topics", "list").returncode == 0  # the log exists before both commands start
    # From offset 0 of an empty partition: the consumer cannot miss what is produced next.
    consumer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "consume",
            "agent-actions",
            "-p",
            str(partition),
            "--offset",
            "0",
            "-n",
            "2",
        ],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        action = {"type": "agent_action", "payload": {"agent_id": "a", "action": "step"}}
        produce(
            "agent-actions",
            [json.dumps({**action, "id": f"live-{n}"}) for n in range(2)],
            "--key",
            key,
        )
        stdout, stderr = consumer.communicate(timeout=20)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    assert consumer.returncode == 0, stderr
    assert [r["data"]["id"] for r in json_lines(stdout)] == ["live-0", "live-1"]


def test_consume_sees_records_produced_over_http(gateway, cli, make_token, json_lines) -> None:
    key = "over-http"
    headers = {"Authorization": f"Bearer {make_token(user='ann', org='acme')}"}
    acks = []
    for n in range(3):
        response = httpx.post(
            gateway.url + "/api/v1/stream/events",
            headers=headers,
            json={
                "topic": "user-events",
                "key": key,
                "event": {
                    "type": "user_interaction",
                    "id": f"http-{n}",
                    "payload": {"action": "a"},
                },
            },
        )
        assert response.status_code == 200, response.text
        acks.append(response.json())
    partition = partition_for_key(key.encode(), 16)
    assert {a["partition"] for a in acks} == {partition}

    result = cli(
        "consume",
        "user-events",
        "-p",
        str(partition),
        "-B",
        "-d",
        env={"AGENTMEM_DATA_DIR": str(gateway.data_dir)},
    )
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stdout)
    assert [(r["offset"], r["data"]["id"]) for r in records] == [
        (a["offset"], a["id"]) for a in acks
    ]
    assert all(r["data"]["organization_id"] == "acme" for r in records)
    assert all(r["data"]["user_id"] == "ann" for r in records)
