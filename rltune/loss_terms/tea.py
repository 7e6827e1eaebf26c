"""TEA, token-wise entropy-adaptive bonus (Light-IF, arXiv 2508.03178), implemented from the formula.

    cov_t    = (A_t - mean(A)) * (log pi(a_t) - mean(log pi))        means over the micro-batch's tokens
    lambda_t = clamp(cov_alpha * softmax over each sequence's tokens (cov_t), 0, clip_cov_ub)
    loss_t   = -lambda_t * H_t

The bonus goes to tokens whose log-probability co-varies most with the advantage within their
sequence. lambda_t is a weight (no gradient flows through it). The released Light-IF code never runs
this branch (ALGORITHMS.md §6.2), so the defaults are the config's: cov_alpha 10, clip_cov_ub 5."""

from __future__ import annotations

import torch

from rltune.batch import MicroBatch, PolicyOutput
from rltune.loss_terms import LOSS_TERMS
from rltune.losses import masked_mean


def tea_weights(
    advantages: torch.Tensor, logprobs: torch.Tensor, mask: torch.Tensor, cov_alpha: float, clip_cov_ub: float
) -> torch.Tensor:
    """lambda_t of the formula above, [B, T], zero on padding."""
    with torch.no_grad():
        cov = (advantages - masked_mean(advantages, mask)) * (logprobs - masked_mean(logprobs, mask))
        cov = cov.masked_fill(mask == 0, float("-inf"))
        weights = torch.softmax(cov, dim=-1).nan_to_num(0.0)  # an empty row is all -inf
        return (cov_alpha * weights).clamp(0.0, clip_cov_ub) * mask


@LOSS_TERMS.register("tea")
class TokenEntropyAdaptive:
    needs_reference = False
    needs_entropy_grad = True

    def __init__(self, cov_alpha: float = 10.0, clip_cov_ub: float = 5.0):
        self.cov_alpha = cov_alpha
        self.clip_cov_ub = clip_cov_ub

    def __call__(self, mb: MicroBatch, out: PolicyOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weights = tea_weights(mb.advantages, out.logprobs, mb.completion_mask, self.cov_alpha, self.clip_cov_ub)
        return -weights * out.entropy, {"tea/weight_mean": masked_mean(weights, mb.completion_mask)}
