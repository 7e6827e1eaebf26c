"""The rollout-engine protocol, its sampling settings and its registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rltune.batch import RolloutBatch
from rltune.registry import Registry


@dataclass
class SamplingSettings:
    n: int
    """Completions per prompt."""
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None


class RolloutEngine(Protocol):
    def generate(
        self, prompt_ids: list[list[int]], rows: list[dict[str, Any]], sampling: SamplingSettings
    ) -> RolloutBatch:
        """Sample `sampling.n` completions for each prompt, returned group by group."""

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from `model`'s current weights."""

    def close(self) -> None:
        """Free the engine's memory."""


ENGINES: Registry = Registry(
    "rollout engine", builtin_modules=("rltune.rollout.vllm_engine", "rltune.rollout.hf_engine")
)


def build_engine(name: str, **kwargs: Any) -> RolloutEngine:
    """Build an engine by registered name ('vllm', 'hf') or import path."""
    return ENGINES.get(name)(**kwargs)
