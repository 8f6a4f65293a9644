"""Rollout sources: batched, chunk-level environments every fine-tuning route collects from."""

from vla_rft.sources.base import (
    ChunkStep,
    RolloutSource,
    SourceSpec,
    available_sources,
    make_source,
    register_source,
)

__all__ = ["ChunkStep", "RolloutSource", "SourceSpec", "available_sources", "make_source", "register_source"]
