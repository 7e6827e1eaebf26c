"""GSPO, group sequence policy optimisation (Zheng et al. 2025, arXiv 2507.18071, Qwen team).

The importance ratio is taken per sequence, length-normalised, and clipped per sequence:

    s_i    = exp(mean_t (log pi(y_i,t) - log pi_old(y_i,t)))       (geometric mean of the token ratios)
    loss_i = -min(s_i A_i, clip(s_i, 1 - clip_low, 1 + clip_high) A_i)

Every token of sequence i carries loss_i, so `loss_aggregation: seq_mean_token_mean` gives the paper's
mean over sequences. The clip range is that of sequence ratios, far narrower than PPO's token range.
"""

from __future__ import annotations

import torch

from rltune.batch import MicroBatch, PolicyOutput
from rltune.config import AlgorithmConfig
from rltune.losses import masked_mean
from rltune.objectives import OBJECTIVES
from rltune.objectives.clipped import MAX_LOG_RATIO


@OBJECTIVES.register("gspo")
class GroupSequencePolicyOptimization:
    zero_advantage_is_zero_loss = True  # -min(s A, clip(s) A) is 0 when A = 0

    def __init__(self, algorithm: AlgorithmConfig, clip_low: float = 3e-4, clip_high: float = 4e-4):
        """clip_low / clip_high: the sequence-ratio clip range (GSPO paper: 3e-4 and 4e-4). They replace
        algorithm.clip_low/clip_high, which are token-ratio bounds."""
        self.clip_low = clip_low
        self.clip_high = clip_high

    def __call__(self, mb: MicroBatch, out: PolicyOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mask = mb.completion_mask
        log_ratio = ((out.logprobs - mb.old_logprobs) * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        ratio = torch.exp(log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))[:, None]  # [B, 1]
        advantages = (mb.advantages * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
        unclipped = -advantages * ratio
        clipped = -advantages * ratio.clamp(1.0 - self.clip_low, 1.0 + self.clip_high)
        loss = torch.maximum(unclipped, clipped).expand_as(mask)
        with torch.no_grad():
            rows = mask.new_ones(mask.shape[0], 1)
            metrics = {
                "gspo/clip_fraction": masked_mean((clipped > unclipped).float(), rows),
                "gspo/seq_ratio_mean": masked_mean(ratio, rows),
            }
        return loss, metrics
