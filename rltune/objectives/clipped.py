"""PPO-style clipped surrogate with asymmetric clip range (DAPO clip-higher) and optional dual clip."""

from __future__ import annotations

import torch

from rltune.batch import MicroBatch, PolicyOutput
from rltune.config import AlgorithmConfig
from rltune.losses import masked_mean
from rltune.objectives import OBJECTIVES

# exp() of a log-ratio this large already saturates every clip; bounding it avoids inf * 0 = nan.
MAX_LOG_RATIO = 20.0


@OBJECTIVES.register("clipped")
class ClippedSurrogate:
    zero_advantage_is_zero_loss = True  # -min(r A, clip(r) A) and the dual clip are 0 when A = 0

    def __init__(self, algorithm: AlgorithmConfig):
        self.clip_low = algorithm.clip_low
        self.clip_high = algorithm.clip_high
        self.dual_clip = algorithm.dual_clip

    def __call__(self, mb: MicroBatch, out: PolicyOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return clipped_policy_loss(
            out.logprobs,
            mb.old_logprobs,
            mb.advantages,
            mb.completion_mask,
            self.clip_low,
            self.clip_high,
            self.dual_clip,
        )


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-min(r A, clip(r, 1-clip_low, 1+clip_high) A) per token; with dual clip, losses of tokens with
    A < 0 are also capped at -c A so a huge ratio on a bad token cannot dominate."""
    log_ratio = (logprobs - old_logprobs).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    is_clipped = clipped > unclipped
    if dual_clip is not None:
        capped = torch.minimum(loss, -advantages * dual_clip)
        dual_active = (advantages < 0) & (loss > capped)
        loss = torch.where(advantages < 0, capped, loss)
    with torch.no_grad():
        metrics = {
            "clip_fraction": masked_mean(is_clipped.float(), mask),
            "clip_fraction_low": masked_mean((is_clipped & (advantages < 0)).float(), mask),
            "clip_fraction_high": masked_mean((is_clipped & (advantages > 0)).float(), mask),
            "ratio_mean": masked_mean(ratio, mask),
            "ratio_max": (ratio * mask).max(),
        }
        if dual_clip is not None:
            metrics["dual_clip_fraction"] = masked_mean(dual_active.float(), mask)
    return loss, metrics
