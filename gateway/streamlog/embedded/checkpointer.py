"""WAL checkpoints in their own thread and connection, off the commit path.

SQLite's automatic checkpoint runs inside the ``COMMIT`` that crosses the WAL size
threshold: that commit, and every producer waiting on it, stalls for the copy and its
fsyncs (tens to hundreds of milliseconds on a busy disk). Here the writer's automatic
checkpoint is raised to a safety-net size (``WRITER_AUTOCHECKPOINT_PAGES``) and a
checkpointer runs ``PASSIVE`` checkpoints every ``interval`` while commits happen. A
passive checkpoint never blocks the writer or readers; it copies what readers no longer
need, and the writer restarts the WAL from its beginning once everything was copied.

Under a constant stream of commits a commit usually lands while a passive checkpoint runs,
so the WAL is never wholly copied and keeps growing. Once it holds more than
``RESTART_PAGES`` pages, the checkpointer runs a ``RESTART`` checkpoint, which holds the
writer back while it copies the little the passive rounds left and syncs, so that the next
commit starts the WAL over. The writer's own safety net bounds the WAL should even that
fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
from pathlib import Path

import structlog

logger = structlog.get_logger(__name__)

WRITER_AUTOCHECKPOINT_PAGES = 16_384
"""The writer's own automatic checkpoint (64 MiB of WAL with 4 KiB pages): rarely reached."""

RESTART_PAGES = 4_096
"""WAL pages (16 MiB with 4 KiB pages) past which the WAL is restarted."""


class Checkpointer:
    def __init__(self, path: Path, interval_s: float, restart_pages: int = RESTART_PAGES) -> None:
        self._path = path
        self._interval = interval_s
        self._restart_pages = restart_pages
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="log-checkpoint"
        )
        self._db: sqlite3.Connection | None = None
        self._commits = 0
        self._task: asyncio.Task[None] | None = None
        self.checkpoints = 0
        self.restarts = 0

    def committed(self) -> None:
        """Called after each commit: there is something to checkpoint."""
        self._commits += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="log-checkpoint")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        seen = self._commits
        while True:
            await asyncio.sleep(self._interval)
            if self._commits == seen:
                continue
            seen = self._commits
            try:
                await loop.run_in_executor(self._executor, self._checkpoint_sync)
            except sqlite3.Error as exc:
                # A busy database or a full disk: the next round (or the writer's safety
                # net) checkpoints instead.
                logger.warning("checkpoint_failed", error=str(exc))

    def _checkpoint_sync(self) -> None:
        if self._db is None:
            self._db = sqlite3.connect(self._path, isolation_level=None)
            # RESTART waits (up to this) for the writer's transaction in progress.
            self._db.execute("PRAGMA busy_timeout=2000")
        _, wal_pages, _ = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        if wal_pages > self._restart_pages:
            self._db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            self.restarts += 1

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
