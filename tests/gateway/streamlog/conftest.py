from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.streamlog.embedded import EmbeddedLog
from gateway.streamlog.interface import TopicSpec

TOPICS = [
    TopicSpec(name="events", partitions=4),
    TopicSpec(name="single", partitions=1),
]


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EmbeddedLog]:
    embedded = EmbeddedLog(tmp_path / "log.sqlite3", topics=TOPICS, poll_interval_ms=10)
    await embedded.open()
    yield embedded
    await embedded.close()
