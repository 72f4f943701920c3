"""The memory pipeline: turns events from the stream log into memories.

- ``MemoryPipeline``: the pipeline over a log the caller opened (the gateway's ``serve``);
- ``run_pipeline``: the standalone pipeline (``agentmem-gateway agents``);
- ``PipelineWorker``, ``MemoryStore``, ``PipelineConfig``: the parts, for embedding and tests.

Names are imported on first use, so registering the ``agents`` command costs the CLI
nothing. See ``docs/memory-pipeline.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.config import ChainStep, PipelineConfig
    from agents.errors import (
        BlockTooLarge,
        PipelineConfigError,
        PipelineError,
        PipelineLocked,
        UnknownBlock,
    )
    from agents.pipeline.worker import PipelineWorker
    from agents.runner import MemoryPipeline, memory_database_path, run_pipeline
    from agents.store.sqlite import Memory, MemoryStore, MemoryVersion

_EXPORTS = {
    "ChainStep": "agents.config",
    "PipelineConfig": "agents.config",
    "BlockTooLarge": "agents.errors",
    "PipelineConfigError": "agents.errors",
    "PipelineError": "agents.errors",
    "PipelineLocked": "agents.errors",
    "UnknownBlock": "agents.errors",
    "PipelineWorker": "agents.pipeline.worker",
    "MemoryPipeline": "agents.runner",
    "memory_database_path": "agents.runner",
    "run_pipeline": "agents.runner",
    "Memory": "agents.store.sqlite",
    "MemoryStore": "agents.store.sqlite",
    "MemoryVersion": "agents.store.sqlite",
}

__all__ = [
    "BlockTooLarge",
    "ChainStep",
    "Memory",
    "MemoryPipeline",
    "MemoryStore",
    "MemoryVersion",
    "PipelineConfig",
    "PipelineConfigError",
    "PipelineError",
    "PipelineLocked",
    "PipelineWorker",
    "UnknownBlock",
    "memory_database_path",
    "run_pipeline",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agents' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
