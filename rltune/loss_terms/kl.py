"""KL divergence to a frozen reference policy, k3 estimator (Schulman's low-variance estimator)."""

from __future__ import annotations

import torch

from rltune.batch import MicroBatch, PolicyOutput
from rltune.distributed import full_tensor
from rltune.errors import ConfigError
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
    """KL to the reference. anchor='frozen': the initial policy; anchor='ema': T1's dynamic anchor, an
    exponential moving average of the policy, ref <- decay * ref + (1 - decay) * policy every
    `update_every` steps (T1 publishes neither value; these defaults are rltune's)."""

    needs_reference = True
    needs_entropy_grad = False

    def __init__(self, anchor: str = "frozen", decay: float = 0.99, update_every: int = 1):
        if anchor not in ("frozen", "ema"):
            raise ConfigError(f"kl anchor must be 'frozen' or 'ema', got {anchor!r}")
        if not 0.0 <= decay < 1.0 or update_every < 1:
            raise ConfigError(f"kl: need 0 <= decay < 1 and update_every >= 1 (got {decay}, {update_every})")
        self.anchor = anchor
        self.decay = decay
        self.update_every = update_every
        self.updates_reference = anchor == "ema"

    def __call__(self, mb: MicroBatch, out: PolicyOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        kl = k3_kl(out.logprobs, mb.ref_logprobs)
        return kl, {"kl": masked_mean(kl.detach(), mb.completion_mask)}

    def on_step_end(self, trainer, metrics: dict[str, float]) -> None:
        if self.anchor == "ema" and trainer.step % self.update_every == 0:
            ema_update(trainer.ref_model, trainer.policy, self.decay)


@torch.no_grad()
def ema_update(reference: torch.nn.Module, policy: torch.nn.Module, decay: float) -> None:
    """reference <- decay * reference + (1 - decay) * policy, parameter by parameter. The reference is whole
    on every process; a sharded policy's parameters are gathered (every process must call this)."""
    for ref, cur in zip(reference.parameters(), policy.parameters(), strict=True):
        ref.mul_(decay).add_(full_tensor(cur.detach()).to(ref.dtype), alpha=1.0 - decay)
