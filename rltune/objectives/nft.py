"""NFT, negative-aware fine-tuning (arXiv 2505.18116; NVlabs/NFT dp_actor.py).

A supervised objective on the model's own answers: maximise the likelihood ratio R_t of correct
answers, and learn from wrong ones through the implicit negative policy
(pi_old - r_q pi_theta) / (1 - r_q), where r_q is the question's accuracy in its group:

    correct:  -log max_v(R_t, clamp_positive)
    wrong:    -neg_weight * log max_v((1 - r_q R_t) / (1 - r_q), clamp_negative)
    times the question weight w(q): 1, 1 - r_q (default), or sqrt((1 - r_q) / r_q)

`max_v` clamps the value but passes the gradient straight through, so a clamped negative still pushes
its tokens down. On-policy (R_t = 1) the gradient equals the clipped surrogate's with Dr. GRPO
advantages (normalize=1) or std-normalised GRPO advantages (normalize=2). Aggregate with
`loss_aggregation: sum, loss_constant: 1000` for the released loss, or any other aggregation.
"""

from __future__ import annotations

import torch

from rltune.batch import MicroBatch, PolicyOutput, RolloutBatch
from rltune.config import AlgorithmConfig
from rltune.errors import ConfigError
from rltune.losses import masked_mean
from rltune.objectives import OBJECTIVES

ACCURACY_CLAMP = (0.02, 0.98)
"""r_q is clamped into this range (NFT code: compute_dapo_nft_outcome_advantage)."""


def clamp_preserve_grad(x: torch.Tensor, low: float) -> torch.Tensor:
    """max(x, low) in value, identity in gradient (NFT's max_v: an ordinary clamp would zero it)."""
    return x + (x.clamp(min=low) - x).detach()


def question_accuracy(batch: RolloutBatch, reward: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample correctness (reward > 0) and its group's accuracy r_q, clamped."""
    if reward not in batch.reward_components:
        raise ConfigError(
            f"nft: correctness reward {reward!r} is not among the recipe's rewards "
            f"({', '.join(batch.reward_components)}); set objective_kwargs.correct_reward"
        )
    correct = (batch.reward_components[reward] > 0).float()
    accuracy = torch.zeros_like(correct)
    for idx in batch.groups():
        accuracy[idx] = correct[idx].mean()
    return correct, accuracy.clamp(*ACCURACY_CLAMP)


@OBJECTIVES.register("nft")
class NegativeAwareFineTuning:
    def __init__(
        self,
        algorithm: AlgorithmConfig,
        neg_weight: float = 1.0,
        normalize: int = 1,
        clamp_positive: float = 0.0,
        clamp_negative: float = 1.0,
        max_log_ratio: float = 10.0,
        correct_reward: str = "math_accuracy",
    ):
        """
        neg_weight: weight of wrong answers (NFT 1.0; 0.0 = rejection-sampling fine-tuning, RFT).
        normalize: question weight w(q): 0 -> 1, 1 -> 1 - r_q (NFT default), 2 -> sqrt((1 - r_q) / r_q).
        clamp_positive / clamp_negative: value floors of the positive ratio and of the negative proxy
            (NFT: 0.0 and 1.0; the 32B run suggests 0.5 for the negative).
        max_log_ratio: cap on log R_t before exponentiating (NFT: 10; no PPO clipping otherwise).
        correct_reward: the reward component whose value > 0 marks a correct answer.
        """
        if normalize not in (0, 1, 2):
            raise ConfigError(f"nft: normalize must be 0, 1 or 2, got {normalize!r}")
        self.neg_weight = neg_weight
        self.normalize = normalize
        self.clamp_positive = clamp_positive
        self.clamp_negative = clamp_negative
        self.max_log_ratio = max_log_ratio
        self.correct_reward = correct_reward

    def __call__(self, mb: MicroBatch, out: PolicyOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if "nft" not in mb.rollout.extras:  # once per rollout batch
            mb.rollout.extras["nft"] = question_accuracy(mb.rollout, self.correct_reward)
        correct, accuracy = (t[mb.indices].to(out.logprobs.device)[:, None] for t in mb.rollout.extras["nft"])
        ratio = torch.exp((out.logprobs - mb.old_logprobs).clamp(max=self.max_log_ratio))
        positive = -torch.log(clamp_preserve_grad(ratio, self.clamp_positive))
        proxy = (1.0 - accuracy * ratio) / (1.0 - accuracy)
        negative = -torch.log(clamp_preserve_grad(proxy, self.clamp_negative))
        if self.normalize == 0:
            weight = torch.ones_like(accuracy)
        elif self.normalize == 1:
            weight = 1.0 - accuracy
        else:
            weight = torch.sqrt((1.0 - accuracy) / accuracy)
        loss = (correct * positive + self.neg_weight * (1.0 - correct) * negative) * weight
        with torch.no_grad():
            wrong = (1.0 - correct).expand_as(proxy) * mb.completion_mask
            metrics = {
                "ratio_mean": masked_mean(ratio, mb.completion_mask),
                "nft/negative_clamped_fraction": masked_mean((proxy < self.clamp_negative).float(), wrong),
                "nft/question_accuracy": accuracy.mean(),
            }
        return loss, metrics
