"""Fixtures for the memory pipeline: a real embedded log, real SQLite memory databases,
the project's real SmartModules on the engine."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agent_helpers import TOPICS_FILE

from agents import MemoryPipeline, MemoryStore, PipelineConfig
from gateway.smartmodules import SmartModuleEngine, SmartModuleRegistry
from gateway.streamlog.embedded import EmbeddedLog
from gateway.streamlog.topics import load_topics


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> SmartModuleRegistry:
    """One engine for the session: each module is compiled once."""
    engine = SmartModuleEngine(tmp_path_factory.mktemp("smartmodule-cache"))
    return SmartModuleRegistry(engine)


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EmbeddedLog]:
    embedded = EmbeddedLog(
        tmp_path / "data" / "log.sqlite3", topics=load_topics(TOPICS_FILE), poll_interval_ms=10
    )
    await embedded.open()
    yield embedded
    await embedded.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[MemoryStore]:
    memory = MemoryStore(tmp_path / "store" / "memory.sqlite3")
    await memory.open()
    yield memory
    await memory.close()


StartPipeline = Callable[..., Awaitable[MemoryPipeline]]


@pytest.fixture
async def start_pipeline(
    tmp_path: Path, log: EmbeddedLog, registry: SmartModuleRegistry
) -> AsyncIterator[StartPipeline]:
    """Start a ``MemoryPipeline`` over the test's log (config fields as keywords)."""
    started: list[MemoryPipeline] = []

    async def start(**fields: Any) -> MemoryPipeline:
        config = PipelineConfig(**fields)
        pipeline = MemoryPipeline(tmp_path / "data", log, config, registry=registry)
        await pipeline.start()
        started.append(pipeline)
        return pipeline

    yield start
    for pipeline in started:
        await pipeline.stop(5)
