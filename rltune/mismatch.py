"""Sampler/trainer mismatch: how far the rollout engine's log-probs of the sampled tokens are from the
trainer's own, the importance weights that correct for it, and the check that the engine got the weights.

With d = log pi_trainer - log pi_sampler on each sampled token:
    mismatch/log_ratio_abs_mean  mean |d|
    mismatch/kl                  mean (e^d - 1 - d): k3 estimate of KL(sampler || trainer) from the sampler's tokens
    mismatch/seq_ratio_max       the sequence ratio furthest from 1, exp(|mean_t d|) (geometric mean per sequence)
"""

from __future__ import annotations

import math

import torch

from rltune.errors import RLTuneError

DEFAULT_IS_CAP = {"tis": 2.0, "mis": 2.0, "seq_mask": 3.0}
"""Yao et al. 2025 truncate token weights at 2; trl's sequence mask keeps [1/3, 3]."""

SYNC_TOLERANCE = {"float32": 0.005, "half": 0.1}
"""Mean |d| per token above which the engine is taken to sample from other weights than the trainer's."""


def log_ratios(
    trainer: torch.Tensor, sampler: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d [B, T], zero on padding; each sequence's mean d [B]; the float mask) from [B, T] logprobs."""
    mask = mask.float()
    d = (trainer.float() - sampler.float()) * mask
    return d, d.sum(-1) / mask.sum(-1).clamp(min=1.0), mask


def mismatch_metrics(parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """The metrics above over (trainer logprobs, sampler logprobs, completion mask) [B, T] parts."""
    abs_sum = k3_sum = tokens = 0.0
    seq_max = 0.0
    for trainer, sampler, mask in parts:
        d, per_seq, mask = log_ratios(trainer, sampler, mask)
        abs_sum += float(d.abs().sum())
        k3_sum += float(((torch.exp(d) - 1 - d) * mask).sum())
        tokens += float(mask.sum())
        if len(d):
            seq_max = max(seq_max, float(per_seq.abs().max()))
    tokens = max(tokens, 1.0)
    return {
        "mismatch/log_ratio_abs_mean": abs_sum / tokens,
        "mismatch/kl": k3_sum / tokens,
        "mismatch/seq_ratio_max": math.exp(seq_max),
    }


def importance_weights(
    trainer: torch.Tensor, sampler: torch.Tensor, mask: torch.Tensor, mode: str, cap: float | None
) -> tuple[torch.Tensor, dict[str, float]]:
    """[B, T] stop-gradient weights pi_trainer / pi_sampler per algorithm.is_correction, and their metrics."""
    cap = cap if cap is not None else DEFAULT_IS_CAP[mode]
    d, per_seq, mask = log_ratios(trainer, sampler, mask)
    ratio = torch.exp(d.clamp(max=math.log(1e6)))
    if mode == "tis":
        weights = ratio.clamp(max=cap)
        cut = ratio > cap
    elif mode == "mis":
        cut = ratio > cap
        weights = torch.where(cut, torch.zeros_like(ratio), ratio)
    elif mode == "seq_mask":
        geometric = torch.exp(per_seq)
        dropped = (geometric > cap) | (geometric < 1.0 / cap)
        cut = dropped[:, None].expand_as(ratio)
        weights = (~cut).float()
    else:
        raise ValueError(f"unknown is_correction {mode!r}")
    weights = weights * mask
    tokens = mask.sum().clamp(min=1.0)
    return weights.detach(), {
        "is/weight_mean": float(weights.sum() / tokens),
        "is/cut_fraction": float((cut.float() * mask).sum() / tokens),
    }


def check_sync(abs_mean: float, tolerance: float, engine: str, step: int) -> None:
    """Stop the run when the engine's log-probs are further from the trainer's than the tolerance."""
    if not abs_mean <= tolerance:  # also NaN
        raise RLTuneError(
            f"the rollout engine samples from stale weights: at step {step + 1} the {engine!r} engine's "
            f"log-probs of its own samples differ from the trainer's by {abs_mean:.4g} per token on average "
            f"(train.sync_check_tolerance {tolerance:.4g}). Its weight sync did not reach it (or it loaded "
            "another model); a plug-in engine's sync_weights must load the policy's weights"
        )
