"""``agentmem-gateway topics list|describe|create``."""

from __future__ import annotations

import json
import re

import pytest

DECLARED = {
    "agent-actions": (8, "3d"),
    "audit-logs": (8, "90d"),
    "chat-messages": (16, "14d"),
    "memory-updates": (32, "30d"),
    "system-metrics": (4, "1d"),
    "user-events": (16, "7d"),
}
LINE = re.compile(r"^(\S+)\s+partitions=(\d+)\s+retention=(\S+)$")


def _listing(stdout: str) -> dict[str, tuple[int, str]]:
    rows = {}
    for line in stdout.splitlines():
        match = LINE.match(line)
        assert match, f"unexpected output line: {line!r}"
        rows[match[1]] = (int(match[2]), match[3])
    return rows


def test_list_shows_the_declared_topics(cli) -> None:
    result = cli("topics", "list")
    assert result.returncode == 0, result.stderr
    rows = _listing(result.stdout)
    assert rows == DECLARED
    assert list(rows) == sorted(rows)


def test_describe_prints_json_with_every_partition(cli) -> None:
    result = cli("topics", "describe", "system-metrics")
    assert result.returncode == 0, result.stderr
    description = json.loads(result.stdout)
    assert description["spec"]["name"] == "system-metrics"
    assert description["spec"]["partitions"] == 4
    assert description["spec"]["retention_ms"] == 86_400_000
    assert description["partitions"] == [
        {"partition": p, "start_offset": 0, "end_offset": 0} for p in range(4)
    ]


def test_describe_unknown_topic_exits_1(cli) -> None:
    result = cli("topics", "describe", "no-such-topic")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Unknown topic 'no-such-topic'" in result.stderr
    assert "user-events" in result.stderr


def test_create_then_describe_then_create_again(cli) -> None:
    created = cli(
        "topics",
        "create",
        "clicks",
        "-p",
        "3",
        "--retention",
        "1h",
        "--max-partition-bytes",
        "1MiB",
    )
    assert created.returncode == 0, created.stderr
    assert "clicks" in created.stdout and "3 partitions" in created.stdout

    described = cli("topics", "describe", "clicks")
    assert described.returncode == 0, described.stderr
    description = json.loads(described.stdout)
    assert description["spec"]["partitions"] == 3
    assert description["spec"]["retention_ms"] == 3_600_000
    assert description["spec"]["max_partition_bytes"] == 1 << 20
    assert [p["partition"] for p in description["partitions"]] == [0, 1, 2]

    assert _listing(cli("topics", "list").stdout)["clicks"] == (3, "1h")

    again = cli("topics", "create", "clicks", "-p", "3")
    assert again.returncode == 1
    assert "already exists" in again.stderr


def test_create_defaults_to_one_partition_kept_forever(cli) -> None:
    assert cli("topics", "create", "plain").returncode == 0
    assert _listing(cli("topics", "list").stdout)["plain"] == (1, "forever")


def test_create_a_declared_topic_exits_1(cli) -> None:
    result = cli("topics", "create", "user-events", "-p", "16")
    assert result.returncode == 1
    assert "already exists" in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(["Bad_Name"], "not a valid topic name", id="bad-name"),
        pytest.param(["t", "-p", "0"], "--partitions must be from 1 to 1024", id="no-partitions"),
        pytest.param(["t", "--retention", "5x"], "not a duration", id="bad-retention"),
        pytest.param(["t", "--max-partition-bytes", "5q"], "not a size", id="bad-size"),
    ],
)
def test_create_refuses_bad_options_with_exit_2(cli, args, says) -> None:
    result = cli("topics", "create", *args)
    assert result.returncode == 2
    assert says in result.stderr
    assert result.stdout == ""
