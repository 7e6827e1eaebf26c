"""Loss aggregation: the one place where per-token losses become a scalar.

The objective and every loss term produce per-token losses; their sum is aggregated once, with
normalisers counted over the whole optimizer mini-batch (all micro-batches, all processes), so a
micro-batch split never changes the loss or the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils.checkpoint


@dataclass
class Normalizer:
    """Counts over one optimizer mini-batch, gathered across processes."""

    tokens: float
    sequences: float
    constant: float
    world_size: int = 1


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, norm: Normalizer) -> torch.Tensor:
    """This micro-batch's share of the mini-batch loss.

    Summed over micro-batches (and averaged over processes, as data-parallel gradients are), the
    shares give exactly the mini-batch loss of the chosen mode.
    """
    mask = mask.to(per_token.dtype)
    if mode == "token_mean":
        total = (per_token * mask).sum() / max(norm.tokens, 1.0)
    elif mode == "seq_mean_token_mean":
        per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        total = per_seq.sum() / max(norm.sequences, 1.0)
    elif mode == "constant":
        total = (per_token * mask).sum() / (norm.constant * max(norm.sequences, 1.0))
    elif mode == "sum":
        total = (per_token * mask).sum() / norm.constant
    else:
        raise ValueError(f"unknown loss aggregation {mode!r}")
    # Data-parallel backends average gradients over processes; undo that, since the normaliser is global.
    return total * norm.world_size


def token_entropy(logits: torch.Tensor, with_grad: bool, chunk: int = 256) -> torch.Tensor:
    """Entropy of each position's next-token distribution, [B, T] from [B, T, V] logits.

    Computed over chunks of positions so that the softmax never exists for the whole sequence at once;
    with gradients each chunk is recomputed in the backward pass instead of being kept.
    """

    def entropy(part: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(part, dim=-1) - (torch.softmax(part, dim=-1) * part).sum(-1)

    parts = []
    for start in range(0, logits.shape[1], chunk):
        part = logits[:, start : start + chunk]
        if with_grad:
            parts.append(torch.utils.checkpoint.checkpoint(entropy, part, use_reentrant=False))
        else:
            with torch.no_grad():
                parts.append(entropy(part))
    return torch.cat(parts, dim=1) if parts else logits.new_zeros(logits.shape[:2])


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked-in tokens (for metrics)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)
