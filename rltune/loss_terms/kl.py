"""KL divergence to a frozen reference policy, k3 estimator (Schulman's low-variance estimator)."""

from __future__ import annotations

import torch

from rltune.batch import MicroBatch, PolicyOutput
from rltune.loss_terms import LOSS_TERMS
from rltune.losses import masked_mean

# verl clamps the k3 estimate to this range for stability with large log-ratio outliers.
KL_CLAMP = 10.0


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """exp(ref - logp) - (ref - logp) - 1: unbiased for KL(pi || ref) under samples of pi, always >= 0."""
    delta = (ref_logprobs - logprobs).clamp(-KL_CLAMP, KL_CLAMP)
    return (torch.exp(delta) - delta - 1.0).clamp(max=KL_CLAMP)


@LOSS_TERMS.register("kl")
class KLPenalty:
    needs_reference = True
    needs_entropy_grad = False

    def __call__(self, mb: MicroBatch, out: PolicyOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        kl = k3_kl(out.logprobs, mb.ref_logprobs)
        return kl, {"kl": masked_mean(kl.detach(), mb.completion_mask)}
