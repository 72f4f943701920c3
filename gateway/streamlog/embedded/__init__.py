"""The embedded backend: the whole log in one SQLite database file (WAL mode)."""

from gateway.streamlog.embedded.log import EmbeddedLog

__all__ = ["EmbeddedLog"]
