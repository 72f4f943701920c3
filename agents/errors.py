"""Errors of the memory pipeline; each message names the problem and the fix."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every memory pipeline error."""


class PipelineConfigError(PipelineError):
    """The pipeline cannot start with this configuration (a topic, a chain, a setting)."""


class PipelineLocked(PipelineError):
    """Another memory pipeline already works on the same data directory."""


class BlockTooLarge(PipelineError):
    """A core memory block edit would not fit the block's size limit."""


class UnknownBlock(PipelineError):
    """A core memory block that is not configured."""
