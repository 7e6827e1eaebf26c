"""Entropy bonus (T1, arXiv 2501.11651): -coef * H_t per token, keeping exploration alive.

With `target` set the bonus adapts: after every RL step its multiplier grows when the policy's mean
token entropy is below the target and shrinks above it (multiplicatively, by exp(adapt_rate * gap)),
within [min_scale, max_scale]. T1's coefficient is not published; the recipe's `coef` sets it."""

from __future__ import annotations

import math

import torch

from rltune.batch import MicroBatch, PolicyOutput
from rltune.loss_terms import LOSS_TERMS


@LOSS_TERMS.register("entropy")
class EntropyBonus:
    needs_reference = False
    needs_entropy_grad = True

    def __init__(
        self, target: float | None = None, adapt_rate: float = 1.0, min_scale: float = 0.0, max_scale: float = 100.0
    ):
        self.target = target
        self.adapt_rate = adapt_rate
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.scale = 1.0

    def __call__(self, mb: MicroBatch, out: PolicyOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return -self.scale * out.entropy, {"entropy_bonus/scale": torch.tensor(self.scale)}

    def on_step_end(self, trainer, metrics: dict[str, float]) -> None:
        if self.target is not None:
            gap = self.target - metrics["entropy"]
            self.scale = min(max(self.scale * math.exp(self.adapt_rate * gap), self.min_scale), self.max_scale)

    def state_dict(self) -> dict:
        return {"scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        self.scale = state["scale"]
