"""Fixtures of the CLI tests: the real ``agentmem-gateway`` command run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from servers import SECRET


def _base_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMEM_")}
    env["AGENTMEM_DATA_DIR"] = str(data_dir)
    env["AGENTMEM_JWT_SECRET"] = SECRET
    return env


Run = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="session")
def run_cli() -> Callable[[dict[str, str]], Run]:
    """``run_cli(base_env)`` is a ``cli`` runner for that environment (see ``cli``)."""

    def bind(base_env: dict[str, str]) -> Run:
        def run(
            *args: str,
            stdin: str | None = None,
            env: dict[str, str | None] | None = None,
            timeout: float = 30,
        ) -> subprocess.CompletedProcess[str]:
            merged = dict(base_env)
            for name, value in (env or {}).items():
                if value is None:
                    merged.pop(name, None)
                else:
                    merged[name] = value
            return subprocess.run(
                [sys.executable, "-m", "gateway", *args],
                input=stdin,
                env=merged,
                capture_output=True,
                text=True,
                timeout=timeout,
            )

        return run

    return bind


@pytest.fixture(scope="session")
def env_for() -> Callable[[Path], dict[str, str]]:
    """The environment of a command on ``data_dir``: no AGENTMEM_* of the caller, the secret."""
    return _base_env


@pytest.fixture
def cli_env(data_dir: Path) -> dict[str, str]:
    return _base_env(data_dir)


@pytest.fixture
def cli(run_cli: Callable[[dict[str, str]], Run], cli_env: dict[str, str]) -> Run:
    """Run ``python -m gateway ARGS`` on a fresh data dir; returns the completed process.

    ``stdin``: text to send; ``env``: variables to add (``None`` removes one).
    """
    return run_cli(cli_env)


@pytest.fixture
def json_lines() -> Callable[[str], list[Any]]:
    """Every line of ``text`` parsed as JSON (fails on any line that is not)."""
    return lambda text: [json.loads(line) for line in text.splitlines()]
