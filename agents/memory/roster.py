"""The five agents of one pipeline, built together (the core agent files lines of its
blocks that do not fit as facts, through the semantic agent)."""

from __future__ import annotations

from typing import NamedTuple

from agents.config import MemoryType, PipelineConfig
from agents.memory.base import MemoryAgent
from agents.memory.core import CoreAgent
from agents.memory.episodic import EpisodicAgent
from agents.memory.procedural import ProceduralAgent
from agents.memory.semantic import SemanticAgent
from agents.memory.working import WorkingAgent
from agents.store.sqlite import MemoryStore


class Roster(NamedTuple):
    core: CoreAgent
    episodic: EpisodicAgent
    semantic: SemanticAgent
    procedural: ProceduralAgent
    working: WorkingAgent

    def by_type(self) -> dict[MemoryType, MemoryAgent]:
        return {
            "core": self.core,
            "episodic": self.episodic,
            "semantic": self.semantic,
            "procedural": self.procedural,
            "working": self.working,
        }


def build_agents(
    config: PipelineConfig, store: MemoryStore, *, cache_facts: bool = False
) -> Roster:
    """``cache_facts``: for the apply process (see ``SemanticAgent``)."""
    semantic = SemanticAgent(config, store, cache_facts=cache_facts)
    return Roster(
        core=CoreAgent(config, store, semantic),
        episodic=EpisodicAgent(config, store),
        semantic=semantic,
        procedural=ProceduralAgent(config, store),
        working=WorkingAgent(config, store),
    )
