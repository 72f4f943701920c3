"""Opening the configured stream log backend from the settings."""

from __future__ import annotations

from gateway.settings import Settings
from gateway.streamlog.embedded import EmbeddedLog
from gateway.streamlog.interface import StreamLog
from gateway.streamlog.topics import load_topics


def open_log(settings: Settings) -> StreamLog:
    """The configured stream log backend (not yet opened)."""
    topics = load_topics(settings.resolved_topics_file)
    return EmbeddedLog(
        settings.database_path,
        topics=topics,
        durability=settings.durability,
        queue_limit=settings.produce_queue_limit,
        commit_max_records=settings.commit_max_records,
        poll_interval_ms=settings.poll_interval_ms,
        retention_interval_s=settings.retention_interval_s,
        dedup_window_s=settings.dedup_window_s,
    )
