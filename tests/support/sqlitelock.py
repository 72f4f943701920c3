"""Holding a SQLite database's write lock from another connection, to stall its writers."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Inside the block another connection holds the write lock of the database at
    ``path``: commits to it (the stream log's included) wait until the block ends."""
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
    finally:
        blocker.close()
