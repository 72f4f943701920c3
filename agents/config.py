"""The memory pipeline's configuration: one frozen ``PipelineConfig``.

Every field has a default, so ``PipelineConfig()`` is a working pipeline over the
project's topics. ``from_settings`` reads the ``memory_*`` fields of the gateway's
``Settings`` when they exist (see ``docs/memory-pipeline.md``), so the gateway decides
which of them are exposed as ``AGENTMEM_*`` variables and flags.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from agents.errors import PipelineConfigError

MemoryType = Literal["core", "episodic", "semantic", "procedural", "working"]
MEMORY_TYPES: tuple[MemoryType, ...] = ("core", "episodic", "semantic", "procedural", "working")


class ChainStep(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One SmartModule of a topic's chain, in the subscription ``filters`` format plus
    ``types``: when given, only records whose envelope ``type`` is listed go through this
    step and the others pass it unchanged (``data-transform`` accepts ``user_interaction``
    envelopes only, while ``user-events`` also carries app events and sensor data)."""

    smartmodule: str
    params: dict[str, Any] = {}
    types: tuple[str, ...] = ()


DEFAULT_CHAINS: dict[str, tuple[ChainStep, ...]] = {
    "user-events": (
        ChainStep("event-filter", {"min_importance": 0.7}),
        ChainStep("data-transform", types=("user_interaction",)),
    ),
}
"""``user-events``: keep important events, turn interactions into MemoryItems; the other
topics have no chain."""

DEFAULT_TOPICS = ("user-events", "chat-messages", "agent-actions")


class PipelineConfig(msgspec.Struct, frozen=True, kw_only=True):
    consumer: str = "memory-pipeline"
    """Consumer name: its offsets are kept in the memory database (and mirrored to the log)."""
    topics: tuple[str, ...] = DEFAULT_TOPICS
    chains: dict[str, tuple[ChainStep, ...]] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_CHAINS)
    )
    start: Literal["beginning", "end"] = "beginning"
    """Where a partition never consumed before starts."""
    batch_records: int = 500
    """Most records the consumer takes from a tail at once (one dispatch transaction)."""

    # -- agents, queues and deferral ---------------------------------------------------------
    agent_queue_size: int = 1_000
    """Items each agent's in-memory queue holds; when full, new items are deferred."""
    agent_queue_sizes: dict[str, int] = {}
    """Per memory type overrides of ``agent_queue_size``."""
    agent_batch: int = 500
    """Most items an agent applies in one transaction."""
    apply_process: bool = True
    """Apply the agents' batches in a child process with its own connection (see
    ``agents/pipeline/apply_process.py``) rather than in the store's writer thread."""
    defer_wait_s: float = 0.25
    """How long the consumer waits for room in a full agent queue before it defers that
    agent's new items (0: defer at once). A queue that is full only because every agent
    shares one busy writer empties within a transaction or two; one that stays full
    longer belongs to an agent that is slower than the rest."""
    deferred_high_water: int = 10_000
    """The consumer stops taking batches while an agent has this many deferred items."""
    outbox_high_water: int = 50_000
    """The consumer stops taking batches while this many records wait to be produced."""
    outbox_batch: int = 500

    # -- memory agents ----------------------------------------------------------------------
    core_blocks: dict[str, int] = msgspec.field(
        default_factory=lambda: {"human": 2_000, "persona": 2_000}
    )
    """Core block name -> size limit in characters."""
    semantic_threshold: float = 0.75
    """Cosine similarity from which a new fact supersedes a stored one (near duplicate)."""
    semantic_candidates: int = 200
    """Most recent facts of a user compared with a new fact."""
    procedural_min_occurrences: int = 3
    """Times an action sequence must recur before it becomes a pattern memory."""
    procedural_max_steps: int = 50
    """Steps kept in one session's procedure (older steps are summarized away)."""
    working_ttl_s: float = 3_600.0
    """Lifetime of a working memory, counted from its event's timestamp."""
    working_max_per_session: int = 50
    """Working memories kept per session; the oldest expires early beyond it."""
    working_max_importance: float = 0.3
    """Events with a session id below this importance are session context (working)."""

    # -- stream processor ---------------------------------------------------------------------
    window_s: float = 60.0
    """Length of the tumbling event-time windows of per-user aggregates."""
    anomaly_z: float = 4.0
    """z-score above the EWMA baseline from which a window's event count is an anomaly."""
    anomaly_min_count: int = 10
    """Fewest events in a window for a rate anomaly (quiet users are not flagged)."""
    anomaly_warmup: int = 5
    """Windows observed before rate anomalies are reported for a user and event type."""
    sensor_z: float = 4.0
    sensor_warmup: int = 10
    """Readings observed before sensor anomalies are reported for a sensor."""
    processor_max_keys: int = 100_000
    """Baselines kept; the least recently seen are forgotten beyond it."""

    # -- topics written ------------------------------------------------------------------------
    updates_topic: str = "memory-updates"
    audit_topic: str = "audit-logs"

    # -- housekeeping ----------------------------------------------------------------------------
    maintenance_interval_s: float = 1.0
    """How often working memories are expired and applied markers pruned."""
    offsets_mirror_interval_s: float = 5.0
    """How often consumer offsets are copied to the log (for lag tools; not authoritative)."""
    durability: Literal["process", "power"] = "process"
    smartmodule_cache_dir: Path | None = None
    """Compiled SmartModule cache when the pipeline builds its own engine."""

    def __post_init__(self) -> None:
        positive = {
            "batch_records": self.batch_records,
            "agent_queue_size": self.agent_queue_size,
            "agent_batch": self.agent_batch,
            "deferred_high_water": self.deferred_high_water,
            "outbox_high_water": self.outbox_high_water,
            "outbox_batch": self.outbox_batch,
            "semantic_candidates": self.semantic_candidates,
            "procedural_min_occurrences": self.procedural_min_occurrences,
            "procedural_max_steps": self.procedural_max_steps,
            "working_max_per_session": self.working_max_per_session,
            "anomaly_warmup": self.anomaly_warmup,
            "sensor_warmup": self.sensor_warmup,
            "processor_max_keys": self.processor_max_keys,
        }
        for name, value in positive.items():
            if value < 1:
                raise PipelineConfigError(f"memory pipeline: {name} = {value}; use at least 1.")
        for name, number in {
            "working_ttl_s": self.working_ttl_s,
            "window_s": self.window_s,
            "anomaly_z": self.anomaly_z,
            "sensor_z": self.sensor_z,
            "maintenance_interval_s": self.maintenance_interval_s,
            "offsets_mirror_interval_s": self.offsets_mirror_interval_s,
        }.items():
            if not number > 0:
                raise PipelineConfigError(f"memory pipeline: {name} = {number}; use a number > 0.")
        if not 0 <= self.defer_wait_s <= 60:
            raise PipelineConfigError(
                f"memory pipeline: defer_wait_s = {self.defer_wait_s}; use seconds from 0 to 60."
            )
        if not 0 < self.semantic_threshold <= 1:
            raise PipelineConfigError(
                f"memory pipeline: semantic_threshold = {self.semantic_threshold}; "
                "use a similarity in (0, 1]."
            )
        if not self.topics:
            raise PipelineConfigError("memory pipeline: no topics to consume; name at least one.")
        for name, size in self.agent_queue_sizes.items():
            if name not in MEMORY_TYPES or size < 1:
                raise PipelineConfigError(
                    f"memory pipeline: agent_queue_sizes[{name!r}] = {size}; keys are "
                    f"{', '.join(MEMORY_TYPES)} and sizes at least 1."
                )
        if "human" not in self.core_blocks or any(v < 16 for v in self.core_blocks.values()):
            raise PipelineConfigError(
                "memory pipeline: core_blocks needs a 'human' block and every limit must be "
                "at least 16 characters."
            )

    def queue_size(self, memory_type: str) -> int:
        return self.agent_queue_sizes.get(memory_type, self.agent_queue_size)

    @classmethod
    def from_settings(cls, settings: object, **overrides: Any) -> PipelineConfig:
        """The configuration from the gateway's ``Settings`` (``memory_*`` fields, when the
        gateway defines them) plus explicit ``overrides``."""
        values: dict[str, Any] = {}
        for setting, field in _SETTING_FIELDS.items():
            value = getattr(settings, setting, None)
            if value is not None:
                values[field] = value
        if isinstance(values.get("topics"), str):
            values["topics"] = parse_topics(values["topics"])
        if isinstance(values.get("chains"), str):
            values["chains"] = parse_chains(values["chains"])
        if "core_block_chars" in values:
            limit = int(values.pop("core_block_chars"))
            values["core_blocks"] = {"human": limit, "persona": limit}
        durability = getattr(settings, "durability", None)
        if durability in ("process", "power"):
            values["durability"] = durability
        data_dir = getattr(settings, "data_dir", None)
        if isinstance(data_dir, Path):
            values["smartmodule_cache_dir"] = data_dir / "smartmodule-cache"
        values.update(overrides)
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise PipelineConfigError(f"memory pipeline settings: {exc}") from None


_SETTING_FIELDS = {
    "memory_consumer": "consumer",
    "memory_topics": "topics",
    "memory_chains": "chains",
    "memory_start": "start",
    "memory_batch_records": "batch_records",
    "memory_agent_queue": "agent_queue_size",
    "memory_deferred_high_water": "deferred_high_water",
    "memory_core_block_chars": "core_block_chars",
    "memory_semantic_threshold": "semantic_threshold",
    "memory_working_ttl_s": "working_ttl_s",
    "memory_window_s": "window_s",
    "memory_anomaly_z": "anomaly_z",
}
"""Gateway setting -> config field."""


def parse_topics(text: str) -> tuple[str, ...]:
    """``"user-events, chat-messages"`` -> the topic names."""
    topics = tuple(t.strip() for t in text.split(",") if t.strip())
    if not topics:
        raise PipelineConfigError("memory pipeline topics: name at least one topic.")
    return topics


def parse_chains(text: str) -> dict[str, tuple[ChainStep, ...]]:
    """JSON ``{"topic": [{"smartmodule": NAME, "params": {...}, "types": [...]}, ...]}``;
    a topic mapped to ``[]`` has no chain. Topics not named keep their default chain."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineConfigError(f"memory pipeline chains are not valid JSON: {exc}.") from None
    try:
        given = msgspec.convert(raw, dict[str, tuple[ChainStep, ...]])
    except msgspec.ValidationError as exc:
        raise PipelineConfigError(
            f"memory pipeline chains: {exc}; expected "
            '{"topic": [{"smartmodule": "event-filter", "params": {...}, "types": [...]}]}.'
        ) from None
    chains = dict(DEFAULT_CHAINS)
    chains.update(given)
    return {topic: steps for topic, steps in chains.items() if steps}


def chains_for(config: PipelineConfig) -> Mapping[str, tuple[ChainStep, ...]]:
    """The non-empty chains of the consumed topics."""
    return {t: s for t, s in config.chains.items() if s and t in config.topics}
