"""Rollout engines: produce `RolloutBatch`es from prompts and take new policy weights."""

from rltune.rollout.base import (
    ENGINES,
    RolloutEngine,
    SamplingSettings,
    build_engine,
    engine_from_recipe,
    run_with_timeout,
)

__all__ = ["ENGINES", "RolloutEngine", "SamplingSettings", "build_engine", "engine_from_recipe", "run_with_timeout"]
