"""The benchmarks' ``--target`` mode against a real running gateway, in short runs.

The gateway is started the way ``make run`` starts it (memory pipeline in the process, the
default limits), and the benchmarks find it by URL, as a newcomer's run would. Figures are
not judged here (speed goals live in docs/benchmarks.md); what is checked is that every
table was measured against that gateway beside its bare ceiling, with every event,
delivery and memory update accounted for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import SECRET, GatewayProcess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("target") / "data"
    env = {"AGENTMEM_MEMORY_PIPELINE": "serve", "AGENTMEM_LOG_LEVEL": "warning"}
    process = GatewayProcess(data, env).start()
    yield process
    process.stop()


def bench(*args: str, secret: str | None = SECRET, timeout: float = 120) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "AGENTMEM_JWT_SECRET"}
    if secret is not None:
        env["AGENTMEM_JWT_SECRET"] = secret
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    assert data["gateway"]["started_by_benchmark"] is False
    assert data["machine"]["cores"] >= 1 and data["machine"]["versions"]["uvicorn"]
    assert len(data["machine"]["load_at_start"]) == 3
    return data


def test_suite_measures_http_ingest_and_memory_updates_of_a_running_gateway(
    running: GatewayProcess, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    code, output = bench(
        "loadtest.bench", "--target", running.url, "--quick", "--out-dir", str(out),
        "--only", "http_ingest", "--only", "memory_update_ws",
    )  # fmt: skip
    assert code == 0, output
    assert "versions: Python" in output and "load average at start" in output, output
    assert {p.stem for p in out.glob("*.json")} == {"http_ingest", "memory_update_ws"}

    [ingest] = report(out / "http_ingest.json")["results"]
    assert ingest["gateway_per_s"] > 0 and ingest["bare_per_s"] > 0
    assert ingest["raw_sqlite_rows_per_s"] > 0 and ingest["generator_cpu"] > 0

    memory = report(out / "memory_update_ws.json")
    [row] = memory["results"]
    assert row["published"] > 0 and row["updates"] == row["published"], row
    assert row["p99_ms"] >= row["p50_ms"] > 0
    assert memory["bare"]["delivered_share"] == 1.0


def test_fan_out_delivers_every_event_to_every_subscriber_beside_the_bare_server(
    running: GatewayProcess, tmp_path: Path
) -> None:
    out = tmp_path / "fanout.json"
    code, output = bench(
        "loadtest.bench.fanout_ws", "--target", running.url, "--subscribers", "30,120",
        "--deliveries", "3000", "--duration", "0.5", "--receiver-processes", "2",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    data = report(out)
    assert [r["subscribers"] for r in data["fan_out"]] == [30, 120]
    for raw in data["raw"]:
        for side in ("gateway", "bare"):
            result = raw[side]
            # 120 subscribers are two users of the run: more than one user's share.
            assert result["delivered_share"] == 1.0, (side, result)
            assert result["connections_lost"] == 0
            assert result["receiver_processes"] == 2 and result["receiver_cpu"] > 0
        assert raw["bare"]["server_cpu"] is not None  # started here, so measured
        assert raw["gateway"]["server_cpu"] is None  # a target's process is not ours


def test_publish_benchmark_runs_against_the_target(running: GatewayProcess, tmp_path: Path) -> None:
    out = tmp_path / "ws.json"
    code, output = bench(
        "loadtest.bench.ws_gateway", "--target", running.url, "--duration", "0.3",
        "--skip-fanout", "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    rows = report(out)["publish"]
    assert [r["scenario"] for r in rows] == [
        "publish, 1 conn x window 64",
        "publish, 50 conn x window 16, median of 3 pairs",
        "publish, 500 conn x window 2",
        "publish, 50 conn x window 16, client event ids",
        "publish_batch of 100, 10 conn x window 4",
        "fixed 5,000 events/s, 50 conn",
    ]
    for row in rows:
        assert row["gateway_events_per_s"] > 0 and row["bare_events_per_s"] > 0, row
    low, high = map(float, rows[1]["share_range"].split("-"))
    assert low <= rows[1]["share_of_bare"] <= high


def test_a_wrong_secret_is_named_with_its_fix(running: GatewayProcess) -> None:
    code, output = bench(
        "loadtest.bench.http_ingest", "--target", running.url, "--requests", "10",
        secret="not-the-secret-of-this-gateway-0123456789",
    )  # fmt: skip
    assert code != 0
    assert "refuses tokens signed with this secret" in output and "--jwt-secret" in output


def test_memory_updates_are_skipped_when_the_target_runs_no_pipeline(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    out = tmp_path / "memory.json"
    code, output = bench(
        "loadtest.bench.memory_update_ws", "--target", gateway.url, "--duration", "0.2",
        "--probe-seconds", "2", "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    assert "skipped: no memory update" in output
    assert "AGENTMEM_MEMORY_PIPELINE=serve" in json.loads(out.read_text())["skipped"]
