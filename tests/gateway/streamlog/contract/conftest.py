"""Backends for the stream log contract suite, and the redis-server processes it needs.

Every test of this directory that takes ``ctx`` runs once per backend:

* ``embedded``: an ``EmbeddedLog`` on a file in the test's temporary directory, group
  commits in its commit process;
* ``embedded-thread``: the same with group commits in the writer thread;
* ``redis``: a ``RedisLog`` on a real ``redis-server`` started once for the session on a
  free loopback port (in a temporary directory, no persistence), flushed before each test;
* ``fluvio``: a ``FluvioLog(endpoint, topics=..., dedup_window_s=...)`` from
  ``gateway.streamlog.fluvio``, only when ``AGENTMEM_FLUVIO_ENDPOINT`` names a cluster.
  Topic names get a per-test suffix there, since a cluster keeps topics between runs.
"""

from __future__ import annotations

import abc
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import RedisServer

from gateway.streamlog.interface import StreamLog, TopicSpec

FLUVIO_ENV = "AGENTMEM_FLUVIO_ENDPOINT"


# -- redis-server processes ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the session: memory only, which the contract's tests do not need."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), "--appendonly", "no").start()
    yield server
    server.stop()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start more servers (``factory(*options)``) for one test; all stopped at its end."""
    started: list[RedisServer] = []

    def start(*options: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}", *options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# -- backends ---------------------------------------------------------------------------------


class Backend(abc.ABC):
    """How the contract suite builds, re-opens and maintains one backend's logs."""

    name: str
    suffix = ""

    def topic(self, base: str) -> str:
        """The name a test's topic ``base`` has on this backend."""
        return base + self.suffix

    @abc.abstractmethod
    def make(self, topics: list[TopicSpec], **options: Any) -> StreamLog:
        """A new, unopened log instance on the backend's shared storage."""

    @abc.abstractmethod
    def child_setup(self) -> str:
        """Python source defining ``make_log()``: the same storage, from another process."""

    async def enforce_retention(self, log: StreamLog) -> None:
        enforce = getattr(log, "enforce_retention", None)
        if enforce is None:
            pytest.skip(f"the {self.name} backend cannot run retention on demand")
        await enforce()


class EmbeddedBackend(Backend):
    name = "embedded"

    def __init__(self, directory: Path, writer: str = "process") -> None:
        self.path = directory / "log.sqlite3"
        self.writer = writer

    def make(self, topics: list[TopicSpec], **options: Any) -> StreamLog:
        from gateway.streamlog.embedded import EmbeddedLog

        return EmbeddedLog(
            self.path, topics=topics, poll_interval_ms=10, writer=self.writer, **options
        )

    def child_setup(self) -> str:
        return (
            "from pathlib import Path\n"
            "from gateway.streamlog.embedded import EmbeddedLog\n"
            "def make_log():\n"
            f"    return EmbeddedLog(Path({str(self.path)!r}), writer={self.writer!r})\n"
        )


class RedisBackend(Backend):
    name = "redis"

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    def make(self, topics: list[TopicSpec], **options: Any) -> StreamLog:
        from gateway.streamlog.redis import RedisLog

        return RedisLog(self.server.url, topics=topics, **options)

    def child_setup(self) -> str:
        return (
            "from gateway.streamlog.redis import RedisLog\n"
            f"def make_log():\n    return RedisLog({self.server.url!r})\n"
        )


class FluvioBackend(Backend):
    name = "fluvio"

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.suffix = "-" + uuid.uuid4().hex[:8]

    def make(self, topics: list[TopicSpec], **options: Any) -> StreamLog:
        from gateway.streamlog.fluvio import FluvioLog

        # The cluster runs retention itself: there is no interval to pass.
        options.pop("retention_interval_s", None)
        log: StreamLog = FluvioLog(self.endpoint, topics=topics, **options)
        return log

    def child_setup(self) -> str:
        return (
            "from gateway.streamlog.fluvio import FluvioLog\n"
            f"def make_log():\n    return FluvioLog({self.endpoint!r})\n"
        )


@pytest.fixture(
    params=[
        "embedded",
        "embedded-thread",
        "redis",
        pytest.param("fluvio", marks=pytest.mark.fluvio),
    ],
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "embedded":
        return EmbeddedBackend(tmp_path)
    if request.param == "embedded-thread":
        return EmbeddedBackend(tmp_path, writer="thread")
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        with server.client() as client:
            client.flushall()
        return RedisBackend(server)
    endpoint = os.environ.get(FLUVIO_ENV)
    if not endpoint:
        pytest.skip("no Fluvio cluster: set AGENTMEM_FLUVIO_ENDPOINT")
    try:
        import gateway.streamlog.fluvio  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"{FLUVIO_ENV} is set but gateway.streamlog.fluvio cannot be imported: {exc}")
    return FluvioBackend(endpoint)


class Context:
    """One test's view of a backend: its topics, its main log and any further instances."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.events = backend.topic("events")
        self.single = backend.topic("single")
        self.topics = [
            TopicSpec(name=self.events, partitions=4),
            TopicSpec(name=self.single, partitions=1),
        ]
        self._opened: list[StreamLog] = []
        self.log: StreamLog

    def spec(self, base: str, partitions: int, **fields: Any) -> TopicSpec:
        return TopicSpec(name=self.backend.topic(base), partitions=partitions, **fields)

    async def open(self, topics: list[TopicSpec] | None = None, **options: Any) -> StreamLog:
        """Another log instance on the same storage (like another gateway process)."""
        log = self.backend.make(self.topics if topics is None else topics, **options)
        await log.open()  # a backend whose open fails releases what it took itself
        self._opened.append(log)
        return log

    async def close_all(self) -> None:
        for log in reversed(self._opened):
            await log.close()


@pytest.fixture
async def ctx(backend: Backend) -> AsyncIterator[Context]:
    context = Context(backend)
    context.log = await context.open()
    yield context
    await context.close_all()
