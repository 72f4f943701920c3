"""The gateway's settings: one frozen object built once at start.

Each setting comes from, in order of precedence: a command-line flag, an ``AGENTMEM_*``
environment variable, the default. ``SETTINGS`` below is the single table behind the
parser, the ``--flags`` of ``serve`` and ``docs/configuration.md`` (a test keeps the
document in step with it).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

StreamBackend = Literal["embedded", "redis", "fluvio"]
Durability = Literal["process", "power"]
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]


class SettingsError(ValueError):
    """A setting has a value the gateway cannot use; the message names it and the fix."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    stream_backend: StreamBackend = "embedded"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_wait_replicas: int = 0
    fluvio_endpoint: str | None = None
    fluvio_tls: Literal["none", "anonymous"] = "none"
    fluvio_linger_ms: int = 0
    fluvio_batch_bytes: int = 1_048_576
    fluvio_compression: Literal["none", "gzip", "lz4", "snappy", "zstd"] = "none"
    fluvio_delivery: Literal["at-least-once", "at-most-once"] = "at-least-once"
    durability: Durability = "process"
    log_writer: Literal["process", "thread"] = "process"
    jwt_secret: str | None = None
    topics_file: Path | None = None
    max_body_bytes: int = 1_048_576
    max_event_bytes: int = 262_144
    max_batch_events: int = 1_000
    produce_queue_limit: int = 50_000
    commit_max_records: int = 5_000
    poll_interval_ms: int = 50
    retention_interval_s: float = 30.0
    dedup_window_s: float = 600.0
    smartmodule_dir: Path | None = None
    smartmodule_memory_bytes: int = 67_108_864
    ws_implementation: Literal["gateway", "websockets-sansio", "websockets", "wsproto"] = "gateway"
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    ws_max_frame_bytes: int = 1_048_576
    ws_publish_rate: int = 20_000
    ws_max_in_flight: int = 1_000
    ws_max_subscriptions: int = 100
    ws_max_connections_per_user: int = 200
    ws_max_errors_per_minute: int = 100
    ws_send_queue_frames: int = 10_000
    ws_send_queue_bytes: int = 8_388_608
    ws_slow_consumer_s: float = 10.0
    ws_heartbeat_s: float = 20.0
    ws_token_warning_s: float = 60.0
    ws_auth_timeout_s: float = 10.0
    drain_timeout_s: float = 10.0
    memory_pipeline: Literal["serve", "off"] = "serve"
    memory_consumer: str = "memory-pipeline"
    memory_topics: str = "user-events,chat-messages,agent-actions"
    memory_chains: str | None = None
    memory_start: Literal["beginning", "end"] = "beginning"
    memory_batch_records: int = 500
    memory_agent_queue: int = 1_000
    memory_deferred_high_water: int = 10_000
    memory_core_block_chars: int = 2_000
    memory_semantic_threshold: float = 0.75
    memory_working_ttl_s: float = 3_600.0
    memory_window_s: float = 60.0
    memory_anomaly_z: float = 4.0
    memory_vectors: Literal["qdrant", "exact", "off"] = "qdrant"
    memory_qdrant_url: str | None = None
    memory_qdrant_api_key: str | None = None
    memory_embedder: Literal["hashed", "minilm"] = "hashed"
    log_format: LogFormat = "auto"
    log_level: LogLevel = "info"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "log.sqlite3"

    @property
    def resolved_topics_file(self) -> Path:
        return self.topics_file or Path(__file__).with_name("topics.toml")


# -- parsing -------------------------------------------------------------------------------

Parser = Callable[[str], Any]


def _int_range(low: int, high: int) -> Parser:
    def parse(raw: str) -> int:
        value = int(raw.replace("_", ""))
        if not low <= value <= high:
            raise ValueError
        return value

    parse.__doc__ = f"an integer from {low:_} to {high:_}"
    return parse


def _positive_float(raw: str) -> float:
    """a number of seconds greater than 0"""
    value = float(raw)
    if not value > 0:
        raise ValueError
    return value


def _seconds_at_least(low: float) -> Parser:
    def parse(raw: str) -> float:
        value = float(raw)
        if not value >= low:
            raise ValueError
        return value

    parse.__doc__ = f"a number of seconds of at least {low:g}"
    return parse


def _choice(*options: str) -> Parser:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError
        return value

    parse.__doc__ = "one of " + ", ".join(options)
    return parse


def _path(raw: str) -> Path:
    """a filesystem path"""
    if not raw:
        raise ValueError
    return Path(raw)


def _url(*schemes: str) -> Parser:
    def parse(raw: str) -> str:
        scheme, sep, rest = raw.partition("://")
        if not sep or scheme not in schemes or not rest:
            raise ValueError
        return raw

    parse.__doc__ = "a URL starting with " + " or ".join(f"{s}://" for s in schemes)
    return parse


def _name(raw: str) -> str:
    """a name of letters, digits, '-', '_' and '.' (1-64 characters)"""
    if not 1 <= len(raw) <= 64 or not all(c.isalnum() or c in "-_." for c in raw):
        raise ValueError
    return raw


def _topic_list(raw: str) -> str:
    """a comma-separated list of topic names"""
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names or not all(_is_name(n) for n in names):
        raise ValueError
    return ",".join(names)


def _is_name(text: str) -> bool:
    try:
        _name(text)
    except ValueError:
        return False
    return True


def _json_text(raw: str) -> str:
    """a JSON object"""
    import json

    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError from None
    if not isinstance(value, dict):
        raise ValueError
    return raw


def _fraction(raw: str) -> float:
    """a number greater than 0 and at most 1"""
    value = float(raw)
    if not 0 < value <= 1:
        raise ValueError
    return value


def _secret(raw: str) -> str:
    """a string of at least 32 characters"""
    if len(raw) < 32:
        raise ValueError
    return raw


def _host(raw: str) -> str:
    """an IP address or host name to listen on"""
    if not raw or any(c.isspace() for c in raw):
        raise ValueError
    return raw


@dataclasses.dataclass(frozen=True)
class SettingSpec:
    field: str
    parse: Parser
    help: str
    secret: bool = False

    @property
    def env(self) -> str:
        return "AGENTMEM_" + self.field.upper()

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def accepted(self) -> str:
        return (self.parse.__doc__ or "").strip()


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("host", _host, "Address the HTTP and WebSocket server listens on."),
    SettingSpec("port", _int_range(0, 65_535), "TCP port of the server (0 picks a free one)."),
    SettingSpec("data_dir", _path, "Directory for the embedded log, secrets and caches."),
    SettingSpec(
        "stream_backend",
        _choice("embedded", "redis", "fluvio"),
        "Where the stream log lives: one SQLite file in the data directory, Redis Streams "
        "(`AGENTMEM_REDIS_URL`) or a Fluvio cluster (`AGENTMEM_FLUVIO_ENDPOINT`). See "
        "docs/backends.md.",
    ),
    SettingSpec(
        "redis_url",
        _url("redis", "rediss", "unix"),
        "Redis server of the redis backend (it may hold a password: never shown).",
        secret=True,
    ),
    SettingSpec(
        "redis_wait_replicas",
        _int_range(0, 64),
        "redis backend: replicas that must have a record before it is acknowledged (WAIT).",
    ),
    SettingSpec(
        "fluvio_endpoint",
        _host,
        "Fluvio SC address `host:port` (unset: the current profile of ~/.fluvio/config).",
    ),
    SettingSpec("fluvio_tls", _choice("none", "anonymous"), "TLS towards the Fluvio cluster."),
    SettingSpec(
        "fluvio_linger_ms",
        _int_range(0, 60_000),
        "Fluvio producer linger: how long a batch may wait for more records.",
    ),
    SettingSpec("fluvio_batch_bytes", _int_range(1_024, 1 << 30), "Fluvio producer batch size."),
    SettingSpec(
        "fluvio_compression",
        _choice("none", "gzip", "lz4", "snappy", "zstd"),
        "Fluvio producer compression.",
    ),
    SettingSpec(
        "fluvio_delivery",
        _choice("at-least-once", "at-most-once"),
        "Fluvio producer delivery semantic.",
    ),
    SettingSpec(
        "durability",
        _choice("process", "power"),
        "`process`: an acknowledged record survives a crash or `kill -9` of any process "
        "(SQLite WAL, synchronous=NORMAL). `power`: it also survives power loss or a kernel "
        "crash (fsync on every commit; see docs/benchmarks.md for the cost).",
    ),
    SettingSpec(
        "log_writer",
        _choice("process", "thread"),
        "Embedded log: where group commits run. `process`: a child process with its own "
        "interpreter (the commit process), so commits never wait for the gateway's GIL. "
        "`thread`: a thread of the gateway (one process fewer, slower under load).",
    ),
    SettingSpec(
        "jwt_secret",
        _secret,
        "HS256 secret for tokens. Unset: a random development secret is created in "
        "`<data_dir>/jwt-secret` (mode 0600) and reused.",
        secret=True,
    ),
    SettingSpec(
        "topics_file", _path, "TOML file declaring the topics (default: the built-in one)."
    ),
    SettingSpec("max_body_bytes", _int_range(1_024, 1 << 30), "Largest HTTP request body."),
    SettingSpec("max_event_bytes", _int_range(256, 1 << 30), "Largest single event (encoded)."),
    SettingSpec("max_batch_events", _int_range(1, 100_000), "Most events in one batch request."),
    SettingSpec(
        "produce_queue_limit",
        _int_range(1, 10_000_000),
        "Most records waiting for a commit; further producers wait until there is room.",
    ),
    SettingSpec(
        "commit_max_records", _int_range(1, 1_000_000), "Most records in one group commit."
    ),
    SettingSpec(
        "poll_interval_ms",
        _int_range(1, 60_000),
        "How often a tail checks for records written by another process.",
    ),
    SettingSpec("retention_interval_s", _positive_float, "How often expired records are removed."),
    SettingSpec(
        "dedup_window_s",
        _seconds_at_least(300),
        "How long an event id is remembered: a re-sent event within it is not written again.",
    ),
    SettingSpec(
        "smartmodule_dir",
        _path,
        "Directory of extra SmartModules (`*.wasm`, optional `<name>.toml` manifest beside), "
        "registered by file name next to the built-in ones.",
    ),
    SettingSpec(
        "smartmodule_memory_bytes",
        _int_range(1 << 20, 1 << 32),
        "Memory cap of each SmartModule instance; a module exceeding it fails that call.",
    ),
    SettingSpec(
        "ws_implementation",
        _choice("gateway", "websockets-sansio", "websockets", "wsproto"),
        "WebSocket protocol under uvicorn: `gateway` is uvicorn's sans-I/O one with coalesced "
        "writes, a bounded read-ahead, and publishes handled as they are read "
        "(gateway/ws/transport.py); the others are uvicorn's own, through which every frame "
        "goes to the session's reader task (see docs/benchmarks.md).",
    ),
    SettingSpec(
        "event_loop",
        _choice("auto", "uvloop", "asyncio"),
        "Event loop of `serve`: `uvloop` (faster socket I/O), `asyncio` (the standard one), or "
        "`auto`: uvloop when it is installed.",
    ),
    SettingSpec(
        "ws_max_frame_bytes",
        _int_range(1_024, 1 << 30),
        "Largest WebSocket frame; a larger one closes the session with 1009.",
    ),
    SettingSpec(
        "ws_publish_rate",
        _int_range(1, 10_000_000),
        "Publishes per second per session (burst: one second's worth); over it: rate_limited.",
    ),
    SettingSpec(
        "ws_max_in_flight",
        _int_range(1, 1_000_000),
        "Unacknowledged publishes per session; at the limit the session stops reading frames.",
    ),
    SettingSpec("ws_max_subscriptions", _int_range(1, 100_000), "Subscriptions per session."),
    SettingSpec(
        "ws_max_connections_per_user",
        _int_range(1, 1_000_000),
        "Sessions per user; one more is closed with 4006.",
    ),
    SettingSpec(
        "ws_max_errors_per_minute",
        _int_range(1, 1_000_000),
        "Errors a session may cause per minute before it is closed with 4502.",
    ),
    SettingSpec(
        "ws_send_queue_frames", _int_range(16, 10_000_000), "Frames queued for one session."
    ),
    SettingSpec(
        "ws_send_queue_bytes", _int_range(65_536, 1 << 34), "Bytes queued for one session."
    ),
    SettingSpec(
        "ws_slow_consumer_s",
        _positive_float,
        "How long a session's send queue may stay full before it is closed with 4001.",
    ),
    SettingSpec(
        "ws_heartbeat_s",
        _positive_float,
        "Seconds between server pings; a session silent for two of them is closed with 4002.",
    ),
    SettingSpec(
        "ws_token_warning_s",
        _positive_float,
        "Seconds before a token expires that the session is told (token_expiring).",
    ),
    SettingSpec(
        "ws_auth_timeout_s",
        _positive_float,
        "Seconds a session may stay unauthenticated before it is closed with 4004.",
    ),
    SettingSpec(
        "drain_timeout_s",
        _positive_float,
        "On SIGTERM/SIGINT, how long to wait for in-flight publishes before closing.",
    ),
    SettingSpec(
        "memory_pipeline",
        _choice("serve", "off"),
        "`serve`: the memory pipeline runs inside `serve`; `off`: run it apart with "
        "`agentmem-gateway agents` (one pipeline per data directory).",
    ),
    SettingSpec("memory_consumer", _name, "Consumer name of the memory pipeline."),
    SettingSpec("memory_topics", _topic_list, "Topics the memory pipeline consumes."),
    SettingSpec(
        "memory_chains",
        _json_text,
        'SmartModule chain per topic, e.g. `{"user-events": [{"smartmodule": "event-filter"}]}` '
        "(unset: event-filter then data-transform on user-events). See docs/memory-pipeline.md.",
    ),
    SettingSpec(
        "memory_start",
        _choice("beginning", "end"),
        "Where the pipeline starts on partitions it never consumed.",
    ),
    SettingSpec("memory_batch_records", _int_range(1, 100_000), "Records per pipeline batch."),
    SettingSpec(
        "memory_agent_queue",
        _int_range(1, 1_000_000),
        "Queue of each memory agent; beyond it events are deferred (kept durably, retried).",
    ),
    SettingSpec(
        "memory_deferred_high_water",
        _int_range(1, 100_000_000),
        "Deferred events at which the pipeline stops reading until they drain.",
    ),
    SettingSpec(
        "memory_core_block_chars", _int_range(16, 1_000_000), "Size limit of a core memory block."
    ),
    SettingSpec(
        "memory_semantic_threshold",
        _fraction,
        "Similarity at which a new semantic memory supersedes a near-duplicate.",
    ),
    SettingSpec("memory_working_ttl_s", _positive_float, "Lifetime of working memory."),
    SettingSpec("memory_window_s", _positive_float, "Window of the per-user aggregates."),
    SettingSpec("memory_anomaly_z", _positive_float, "z-score at which a rate is an anomaly."),
    SettingSpec(
        "memory_vectors",
        _choice("qdrant", "exact", "off"),
        "Vector index of memory search: `qdrant` (a Qdrant server at "
        "AGENTMEM_MEMORY_QDRANT_URL, else local mode in `<data_dir>/qdrant` searched "
        "through in-process matrices, see docs/memory-api.md), `exact` (the same matrices "
        "without Qdrant; far less memory) or `off` (keywords only).",
    ),
    SettingSpec(
        "memory_qdrant_url",
        _url("http", "https"),
        "Qdrant server for memory vectors (unset: Qdrant's local mode).",
    ),
    SettingSpec("memory_qdrant_api_key", _secret, "API key of that Qdrant server.", secret=True),
    SettingSpec(
        "memory_embedder",
        _choice("hashed", "minilm"),
        "Memory embeddings: `hashed` (character n-grams, no model) or `minilm` "
        "(all-MiniLM-L6-v2 loaded offline; extra `minilm`).",
    ),
    SettingSpec("log_format", _choice("auto", "json", "console"), "`auto`: console on a TTY."),
    SettingSpec("log_level", _choice("debug", "info", "warning", "error"), "Lowest log level."),
)

_BY_FIELD = {spec.field: spec for spec in SETTINGS}


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, str | None] | None = None
) -> Settings:
    """Build the settings from the environment and command-line overrides.

    ``overrides`` maps field names to the raw strings given as flags (``None``: not given).
    Raises ``SettingsError`` naming the variable or flag, the value and what is accepted.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in SETTINGS:
        raw: str | None
        source: str
        if overrides is not None and overrides.get(spec.field) is not None:
            raw, source = overrides[spec.field], spec.flag
        elif spec.env in environ:
            raw, source = environ[spec.env], spec.env
        else:
            continue
        assert raw is not None
        try:
            values[spec.field] = spec.parse(raw.strip() if not spec.secret else raw)
        except ValueError:
            shown = "<hidden>" if spec.secret else repr(raw)
            raise SettingsError(
                f"{source}={shown} is not valid: expected {spec.accepted}."
            ) from None
    unknown = sorted(
        k for k in environ if k.startswith("AGENTMEM_") and k[9:].lower() not in _BY_FIELD
    )
    if unknown and environ.get("AGENTMEM_ALLOW_UNKNOWN") != "1":
        # Only variables other parts of the project read are tolerated here.
        unknown = [k for k in unknown if k not in _KNOWN_ELSEWHERE]
        if unknown:
            raise SettingsError(
                f"Unknown setting {unknown[0]}: accepted variables are "
                + ", ".join(spec.env for spec in SETTINGS)
                + " (see docs/configuration.md)."
            )
    settings = Settings(**values)
    if settings.commit_max_records > settings.produce_queue_limit:
        raise SettingsError(
            f"AGENTMEM_COMMIT_MAX_RECORDS ({settings.commit_max_records}) must not exceed "
            f"AGENTMEM_PRODUCE_QUEUE_LIMIT ({settings.produce_queue_limit})."
        )
    return settings


# Variables read by tests, SDKs or tools rather than by the server itself.
_KNOWN_ELSEWHERE = frozenset({"AGENTMEM_ALLOW_UNKNOWN"})


def configuration_table() -> str:
    """The Markdown table of ``docs/configuration.md`` (kept in step by a test)."""
    defaults = Settings()
    lines = [
        "| variable | flag | default | accepted | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in SETTINGS:
        default = getattr(defaults, spec.field)
        shown = "unset" if default is None else f"`{default}`"
        lines.append(f"| `{spec.env}` | `{spec.flag}` | {shown} | {spec.accepted} | {spec.help} |")
    return "\n".join(lines) + "\n"
