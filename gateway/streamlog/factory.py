"""Opening the configured stream log backend from the settings (backends other than the
embedded one are imported only when chosen)."""

from __future__ import annotations

from gateway.settings import Settings, SettingsError
from gateway.streamlog.embedded import EmbeddedLog
from gateway.streamlog.interface import StreamLog
from gateway.streamlog.topics import load_topics


def open_log(settings: Settings) -> StreamLog:
    """The configured stream log backend (not yet opened)."""
    topics = load_topics(settings.resolved_topics_file)
    if settings.stream_backend == "redis":
        from gateway.streamlog.redis import RedisLog

        return RedisLog(
            settings.redis_url,
            topics=topics,
            dedup_window_s=settings.dedup_window_s,
            retention_interval_s=settings.retention_interval_s,
            wait_replicas=settings.redis_wait_replicas,
        )
    if settings.stream_backend == "fluvio":
        try:
            from gateway.streamlog.fluvio import FluvioLog, ProducerOptions
        except ImportError:
            raise SettingsError(
                "AGENTMEM_STREAM_BACKEND=fluvio needs the fluvio client: "
                "pip install 'agentmem-gateway[fluvio]'."
            ) from None
        return FluvioLog(
            settings.fluvio_endpoint,
            topics=topics,
            tls=settings.fluvio_tls,
            producer=ProducerOptions(
                linger_ms=settings.fluvio_linger_ms,
                batch_bytes=settings.fluvio_batch_bytes,
                compression=settings.fluvio_compression,
                delivery=settings.fluvio_delivery,
            ),
            dedup_window_s=settings.dedup_window_s,
        )
    return EmbeddedLog(
        settings.database_path,
        topics=topics,
        durability=settings.durability,
        writer=settings.log_writer,
        queue_limit=settings.produce_queue_limit,
        commit_max_records=settings.commit_max_records,
        poll_interval_ms=settings.poll_interval_ms,
        retention_interval_s=settings.retention_interval_s,
        dedup_window_s=settings.dedup_window_s,
    )
