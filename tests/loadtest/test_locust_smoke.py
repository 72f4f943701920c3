"""A short locust run against a real gateway: every kind of user, headless, CSV reports.

locust monkey-patches the standard library with gevent as it is imported, so it runs in a
child process (``python -m loadtest.locust.run``) and is never imported here.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import SECRET, GatewayProcess

REPO = Path(__file__).resolve().parents[2]
SOURCE_TYPES = (
    "user_interaction", "app_event", "sensor_data", "realtime_message",
    "chat_message", "agent_action", "api_call", "log_entry",
)  # fmt: skip
USER_CLASSES = (
    "PublisherUser", "BatchPublisherUser", "SubscriberUser", "HttpIngestUser", "MemorySearchUser",
)  # fmt: skip


def rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open(newline="") as file:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(file)}


def count(row: dict[str, str] | None, column: str) -> int:
    return 0 if row is None else int(row[column])


def test_locust_smoke_run(gateway: GatewayProcess, tmp_path: Path) -> None:
    for module in ("locust", "websocket"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is not installed: pip install -e '.[loadtest]'")
    report = tmp_path / "report"
    command = [
        sys.executable, "-m", "loadtest.locust.run",
        "--host", gateway.url,
        "--shape", "steady",
        "--users", "18", "--spawn-rate", "18",  # 6 publishers, 4 subscribers, 4 HTTP, 2 + 2
        "--duration", "7s",
        "--report-dir", str(report),
        "--identities", "2",
        "--think-time", "0.1",
        "--delivery-timeout", "5",
    ]  # fmt: skip
    env = {**os.environ, "AGENTMEM_JWT_SECRET": SECRET}
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=90, check=False
    )
    output = done.stdout + done.stderr
    # Exit status 1 only means some request failed (the search API may not exist yet).
    assert done.returncode in (0, 1), output
    assert time.monotonic() - started < 40, output

    stats_path = report / "locust_stats.csv"
    assert stats_path.exists(), output
    assert (report / "report.html").exists()
    stats = rows(stats_path)

    spawned = re.search(r"All users spawned: (\{.*?\})", output)
    assert spawned is not None, output
    counts = json.loads(spawned.group(1))
    assert all(counts.get(name, 0) >= 2 for name in USER_CLASSES), counts

    for event_type in SOURCE_TYPES:
        row = stats.get(("WS", f"publish->ack {event_type}"))
        assert count(row, "Request Count") > 0, f"no publish of {event_type}\n{output}"
        assert count(row, "Failure Count") == 0, output
    batch = stats.get(("WS", "publish_batch->batch_ack"))
    assert count(batch, "Request Count") > 0 and count(batch, "Failure Count") == 0, output
    for path in ("/api/v1/stream/events", "/api/v1/stream/batch"):
        row = stats.get(("POST", path))
        assert count(row, "Request Count") > 0 and count(row, "Failure Count") == 0, output
    subscribed = stats.get(("WS", "subscribe->subscribed"))
    assert count(subscribed, "Request Count") > 0 and count(subscribed, "Failure Count") == 0
    delivered = sum(
        count(row, "Request Count")
        for (kind, name), row in stats.items()
        if kind == "WS" and name.startswith("publish->delivery ")
    )
    assert delivered > 0, output
    assert count(stats.get(("POST", "/api/v1/memories/search")), "Request Count") > 0

    for failure in ("lost delivery", "duplicate delivery", "late delivery"):
        assert count(stats.get(("DELIVERY", failure)), "Failure Count") == 0, output
    summary = re.search(
        r"deliveries: (\d+) expected, (\d+) received, (\d+) lost, (\d+) late, (\d+) duplicate",
        output,
    )
    assert summary is not None, output
    expected, received, lost, late, duplicate = map(int, summary.groups())
    assert expected > 0 and received >= expected, output
    assert (lost, late, duplicate) == (0, 0, 0), output
    assert ("WS", "session closed") not in stats, output
