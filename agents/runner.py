"""Running the memory pipeline: inside the gateway (``MemoryPipeline``) or on its own
(``run_pipeline``, behind ``agentmem-gateway agents``).

Either way one pipeline works on a data directory at a time: it holds an exclusive lock
on ``<data_dir>/memory.lock`` (released by the kernel even on ``kill -9``), because two
consumers applying the same records would race on the same memories.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

import structlog

from agents.config import PipelineConfig
from agents.errors import PipelineError, PipelineLocked
from agents.pipeline.apply_process import ApplyProcess
from agents.pipeline.worker import PipelineWorker
from agents.store.sqlite import MemoryStore
from gateway.streamlog.interface import StreamLog

if TYPE_CHECKING:
    from gateway.settings import Settings
    from gateway.smartmodules import SmartModuleRegistry

logger = structlog.get_logger(__name__)


def memory_database_path(data_dir: Path) -> Path:
    return data_dir / "memory.sqlite3"


ORPHAN_WAIT_S = 15.0
"""How long a starting pipeline waits for the apply process of a pipeline whose process
died (it finishes its batch and exits once it sees its parent gone)."""


def _lock(handle: IO[str]) -> None:
    """``flock`` the file; when the recorded holder is dead, its apply process may still
    hold the lock for a moment: wait for it (up to ``ORPHAN_WAIT_S``)."""
    deadline = time.monotonic() + ORPHAN_WAIT_S
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            if not holder.isdigit() or _alive(int(holder)) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DirectoryLock:
    """An exclusive ``flock`` on ``<data_dir>/memory.lock``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "memory.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held until release)
        try:
            _lock(handle)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise PipelineLocked(
                f"a memory pipeline is already running on {self.path.parent} (pid {holder}); "
                "run one pipeline per data directory: either `agentmem-gateway agents` or the "
                "gateway with its memory pipeline enabled, not both"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def fileno(self) -> int | None:
        """The locked descriptor: a child that inherits it keeps the directory locked
        until it exits, even when this process dies first."""
        return None if self._file is None else self._file.fileno()

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class MemoryPipeline:
    """The pipeline over a log someone else opened (the gateway's, in ``serve``).

    ``start`` opens ``<data_dir>/memory.sqlite3``, takes the directory lock and starts the
    worker; it raises ``PipelineConfigError`` or ``PipelineLocked`` without starting.
    A failure while running is logged (``memory_pipeline_failed``) and stops the pipeline
    only; ``failure`` tells what happened.
    """

    def __init__(
        self,
        data_dir: Path,
        log: StreamLog,
        config: PipelineConfig | None = None,
        *,
        registry: SmartModuleRegistry | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.log = log
        self.config = config or PipelineConfig(smartmodule_cache_dir=data_dir / "smartmodule-cache")
        self.store = MemoryStore(memory_database_path(data_dir), durability=self.config.durability)
        self.worker = PipelineWorker(log, self.store, self.config, registry=registry)
        self.process: ApplyProcess | None = None
        """The agents' transactions' child process (``apply_process``)."""
        self._lock = DirectoryLock(data_dir)
        self._watch: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        log: StreamLog,
        *,
        registry: SmartModuleRegistry | None = None,
        config: PipelineConfig | None = None,
    ) -> MemoryPipeline:
        return cls(
            settings.data_dir,
            log,
            config or PipelineConfig.from_settings(settings),
            registry=registry,
        )

    async def start(self) -> None:
        self._lock.acquire()
        try:
            await self.store.open()
            if self.config.apply_process:
                self.process = ApplyProcess(
                    self.store.path,
                    self.config.durability,
                    self.config,
                    inherit_fd=self._lock.fileno(),
                )
                await self.process.start()
                self.worker.apply_in(self.process)
            await self.worker.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._close_process()
            with contextlib.suppress(Exception):
                await self.store.close()
            self._lock.release()
            raise
        self._watch = asyncio.create_task(self._supervise(), name="memory-pipeline")

    async def _supervise(self) -> None:
        try:
            await self.worker.wait()
        except PipelineError as exc:
            self.failure = exc.__cause__ or exc
            logger.error("memory_pipeline_failed", error=str(exc), exc_info=self.failure)

    async def wait(self) -> None:
        """Until the pipeline stops; raises ``PipelineError`` when it failed."""
        if self._watch is not None:
            await asyncio.shield(self._watch)
        if self.failure is not None:
            raise PipelineError(f"the memory pipeline failed: {self.failure}") from self.failure

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker (see ``PipelineWorker.stop``), close the database, unlock."""
        if self._watch is None:
            return
        await self.worker.stop(timeout)
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        self._watch = None
        await self._close_process()
        await self.store.close()
        self._lock.release()

    async def _close_process(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            await process.close()


async def run_pipeline(
    settings: Settings,
    *,
    config: PipelineConfig | None = None,
    stop: asyncio.Event | None = None,
    exit_when_idle: bool = False,
) -> None:
    """The standalone pipeline: opens the configured log and SmartModule registry itself,
    runs until ``stop`` is set (or, with ``exit_when_idle``, until it has caught up with
    the log), then stops cleanly. Raises ``PipelineError`` subclasses on failure."""
    from gateway import heap
    from gateway.services import open_registry
    from gateway.streamlog.factory import open_log

    log = open_log(settings)
    await log.open()
    try:
        pipeline = MemoryPipeline.from_settings(
            settings, log, registry=open_registry(settings), config=config
        )
        await pipeline.start()
        heap.settle()
        try:
            waiters = [asyncio.create_task(pipeline.wait())]
            if stop is not None:
                waiters.append(asyncio.create_task(_until(stop)))
            if exit_when_idle:
                waiters.append(asyncio.create_task(pipeline.worker.wait_idle(float("inf"))))
            done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                task.result()  # a failure is raised here
        finally:
            await pipeline.stop(settings_timeout(settings))
    finally:
        await log.close()


async def _until(event: asyncio.Event) -> None:
    await event.wait()


def settings_timeout(settings: object) -> float:
    value = getattr(settings, "drain_timeout_s", 10.0)
    return float(value) if isinstance(value, int | float) else 10.0
