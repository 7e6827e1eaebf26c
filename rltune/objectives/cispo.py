"""CISPO, clipped importance-sampling policy optimisation (MiniMax-M1, arXiv 2506.13585).

The importance weight is clipped and detached, and multiplies the log-probability, so every token keeps a
gradient (PPO's clip instead zeroes the gradient of a token whose ratio left the range):

    r_t    = pi(y_t) / pi_old(y_t)
    loss_t = -sg(clip(r_t, 1 - clip_low, 1 + clip_high)) * A_t * log pi(y_t)
"""

from __future__ import annotations

import torch

from rltune.batch import MicroBatch, PolicyOutput
from rltune.config import AlgorithmConfig
from rltune.losses import masked_mean
from rltune.objectives import OBJECTIVES
from rltune.objectives.clipped import MAX_LOG_RATIO


@OBJECTIVES.register("cispo")
class ClippedImportanceSamplingPolicyOptimization:
    zero_advantage_is_zero_loss = True

    def __init__(self, algorithm: AlgorithmConfig, clip_low: float = 1.0, clip_high: float = 3.0):
        """clip_low: 1.0 puts no lower bound on the weight (MiniMax-M1 sets epsilon_low large and tunes only
        the upper bound); clip_high: 3.0 caps the weight at 4 (ScaleRL's CISPO, arXiv 2510.13786). They
        replace algorithm.clip_low/clip_high."""
        self.clip_low = clip_low
        self.clip_high = clip_high

    def __call__(self, mb: MicroBatch, out: PolicyOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ratio = torch.exp((out.logprobs - mb.old_logprobs).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)).detach()
        weight = ratio.clamp(1.0 - self.clip_low, 1.0 + self.clip_high)
        loss = -weight * mb.advantages * out.logprobs
        with torch.no_grad():
            metrics = {
                "cispo/clip_fraction": masked_mean((weight != ratio).float(), mb.completion_mask),
                "ratio_mean": masked_mean(ratio, mb.completion_mask),
            }
        return loss, metrics
