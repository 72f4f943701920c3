"""``agentmem-gateway agents`` / ``python -m agents``: the standalone pipeline."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from agent_helpers import ROOT

from agents import cli
from agents.runner import DirectoryLock


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMEM_")}
    env["AGENTMEM_LOG_FORMAT"] = "json"
    return subprocess.run(
        [sys.executable, "-m", "agents", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def test_catches_up_and_exits(tmp_path: Path) -> None:
    out = run("--data-dir", str(tmp_path / "data"), "--exit-when-idle")
    assert out.returncode == 0, out.stderr + out.stdout
    assert (tmp_path / "data" / "memory.sqlite3").exists()
    assert "memory_pipeline_started" in out.stdout + out.stderr


def test_refuses_a_second_pipeline_on_the_same_data_directory(tmp_path: Path) -> None:
    lock = DirectoryLock(tmp_path / "data")
    lock.acquire()
    try:
        out = run("--data-dir", str(tmp_path / "data"), "--exit-when-idle")
    finally:
        lock.release()
    assert out.returncode == 1
    assert "a memory pipeline is already running on" in out.stderr
    assert f"(pid {os.getpid()})" in out.stderr


def test_bad_setting_is_a_usage_error(tmp_path: Path) -> None:
    out = run("--data-dir", str(tmp_path), "--durability", "sometimes")
    assert out.returncode == 2 and "--durability='sometimes' is not valid" in out.stderr


def test_registers_on_the_gateway_command() -> None:
    parser = argparse.ArgumentParser(prog="agentmem-gateway")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["agents", "--exit-when-idle", "--data-dir", "/tmp/x"])
    assert args.handler is cli.run and args.exit_when_idle and args.setting_data_dir == "/tmp/x"
