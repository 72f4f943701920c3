"""``PipelineConfig``: defaults, validation, and reading the gateway's settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from agents import ChainStep, PipelineConfig, PipelineConfigError
from agents.config import DEFAULT_CHAINS, parse_chains
from gateway.settings import Settings


def test_defaults_follow_the_brief() -> None:
    config = PipelineConfig()
    assert config.topics == ("user-events", "chat-messages", "agent-actions")
    assert [s.smartmodule for s in config.chains["user-events"]] == [
        "event-filter",
        "data-transform",
    ]
    assert set(config.chains) == {"user-events"}


def test_from_the_gateway_settings() -> None:
    settings = Settings(data_dir=Path("/srv/data"), durability="power")
    config = PipelineConfig.from_settings(settings)
    assert config.durability == "power"
    assert config.smartmodule_cache_dir == Path("/srv/data/smartmodule-cache")
    assert config.chains == DEFAULT_CHAINS


@dataclass
class WithMemorySettings:
    """Settings once the gateway declares the memory_* fields."""

    data_dir: Path = Path("data")
    memory_consumer: str = "mp2"
    memory_topics: str = "chat-messages, agent-actions"
    memory_chains: str = (
        '{"chat-messages": [{"smartmodule": "event-filter", "params": {"min_importance": 0.2}}]}'
    )
    memory_agent_queue: int = 50
    memory_core_block_chars: int = 500
    memory_working_ttl_s: float = 60.0


def test_memory_settings_are_read_when_present() -> None:
    config = PipelineConfig.from_settings(WithMemorySettings(), batch_records=10)
    assert (config.consumer, config.topics) == ("mp2", ("chat-messages", "agent-actions"))
    assert config.chains["chat-messages"] == (ChainStep("event-filter", {"min_importance": 0.2}),)
    assert (config.agent_queue_size, config.working_ttl_s, config.batch_records) == (50, 60.0, 10)
    assert config.core_blocks == {"human": 500, "persona": 500}


def test_a_topic_mapped_to_no_chain() -> None:
    assert parse_chains('{"user-events": []}') == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ('{"user-events": [{"module": "x"}]}', "expected"),
        ('{"user-events": [{"smartmodule": "x", "extra": 1}]}', "expected"),
    ],
)
def test_bad_chains(text: str, message: str) -> None:
    with pytest.raises(PipelineConfigError, match=message):
        parse_chains(text)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"agent_queue_size": 0}, "agent_queue_size = 0; use at least 1"),
        ({"semantic_threshold": 1.5}, "semantic_threshold"),
        ({"topics": ()}, "no topics"),
        ({"agent_queue_sizes": {"semantics": 3}}, "keys are core, episodic"),
        ({"core_blocks": {"persona": 100}}, "needs a 'human' block"),
        ({"window_s": 0}, "window_s = 0"),
    ],
)
def test_invalid_values_name_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(PipelineConfigError, match=message):
        PipelineConfig(**fields)  # type: ignore[arg-type]
