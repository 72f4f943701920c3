"""The memory API of a gateway whose pipeline runs apart (``memory_pipeline=off``).

The gateway opens the memory database itself (SQLite WAL: two processes share it) and
its writes wait in the outbox until the standalone pipeline, ``agentmem-gateway
agents``, publishes them to ``memory-updates``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.streamlog.partitioner import partition_for_key


def test_gateway_without_pipeline_serves_memories(
    tmp_path: Path, make_token: Callable[..., str], start_gateway: Callable[..., Any]
) -> None:
    gateway = start_gateway(tmp_path / "apart", {"AGENTMEM_MEMORY_PIPELINE": "off"})
    headers = {"Authorization": f"Bearer {make_token(user='ann', org='acme')}"}
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as api:
            made = api.post(
                "/api/v1/memories", json={"content": "Ann rides a red bicycle"}, headers=headers
            )
            assert made.status_code == 201, made.text
            memory_id = made.json()["data"]["id"]
            found = api.post("/api/v1/memories/search", json={"query": "bicycle"}, headers=headers)
            assert [m["id"] for m in found.json()["data"]] == [memory_id]
            partition = partition_for_key(b"ann", 32)

            def updates() -> list[str]:
                response = api.get(
                    "/api/v1/topics/memory-updates/records",
                    params={"partition": partition},
                    headers=headers,
                )
                return [r["data"]["id"] for r in response.json()["records"]]

            assert updates() == []  # waiting in the outbox: no pipeline runs yet
            env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMEM_")}
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "agents",
                    "--data-dir",
                    str(gateway.data_dir),
                    "--exit-when-idle",
                ],
                env={**env, "AGENTMEM_JWT_SECRET": gateway.env["AGENTMEM_JWT_SECRET"]},
                capture_output=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr.decode()[-2000:]
            assert updates() == [f"{memory_id}:1:created"]
    finally:
        gateway.stop()
