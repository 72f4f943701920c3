"""The embedded backend: the whole log in one SQLite database file (WAL mode)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.streamlog.embedded.log import EmbeddedLog

__all__ = ["EmbeddedLog"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that the commit process (a module of this package run on
    # its own) starts without the gateway's asyncio side.
    if name == "EmbeddedLog":
        from gateway.streamlog.embedded.log import EmbeddedLog

        return EmbeddedLog
    raise AttributeError(name)
