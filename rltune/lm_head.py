"""Log-probabilities and entropies of the chosen tokens straight from the last hidden states.

The plain way (`logits = lm_head(hidden)`, then log-softmax) keeps [tokens, vocab] logits, their float32
copy and the softmax alive for the backward pass: with a 150k vocabulary that is the largest memory in
the update. Here the LM head runs over a chunk of positions at a time, only on the positions that are
scored, and the backward pass recomputes each chunk's logits instead of keeping them: one extra LM-head
matmul for gigabytes less memory traffic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Positions per chunk are chosen so that one chunk's float32 logits hold about this many elements.
CHUNK_ELEMENTS = 2**27


def chunk_size(vocab_size: int) -> int:
    return max(16, CHUNK_ELEMENTS // max(vocab_size, 1))


class TokenScores(torch.autograd.Function):
    """(logprob of the target token, entropy) per row of `hidden`, at `temperature`; differentiable in
    both outputs with respect to `hidden`, `weight` and `bias`.

    The temperature divides the [N, H] hidden states rather than the [N, V] logits, and the backward pass
    works in place on one chunk's buffers: every full-vocabulary pass costs as much as a small matmul."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature: float, chunk: int):
        # Softmax arithmetic in float32 at least (float64 stays float64).
        acc = torch.promote_types(hidden.dtype, torch.float32)
        scaled = hidden / temperature
        scaled_bias = None if bias is None else bias / temperature
        logprobs = torch.empty(hidden.shape[0], device=hidden.device, dtype=acc)
        entropy = torch.empty_like(logprobs)
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            log_p = torch.log_softmax(F.linear(scaled[rows], weight, scaled_bias), dim=-1, dtype=acc)
            logprobs[rows] = log_p.gather(-1, targets[rows, None]).squeeze(-1)
            entropy[rows] = -(log_p.exp().unsqueeze(1) @ log_p.unsqueeze(2)).view(-1)
        ctx.save_for_backward(scaled, weight, scaled_bias, targets, entropy)
        ctx.temperature, ctx.chunk = temperature, chunk
        # The matmul dtype of the forward (bf16 under autocast), so the backward multiplies alike.
        ctx.compute_dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled() else None
        ctx.set_materialize_grads(False)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        scaled, weight, scaled_bias, targets, entropy = ctx.saved_tensors
        dtype = ctx.compute_dtype or scaled.dtype
        acc = entropy.dtype
        w = weight.to(dtype)
        b = None if scaled_bias is None else scaled_bias.to(dtype)
        # Gradients with respect to the scaled logits z = hidden @ W^T / T, chunk by chunk:
        #   d logprob / dz = onehot - p;   d entropy / dz = -p (log p + entropy)
        grad_scaled = torch.empty_like(scaled) if ctx.needs_input_grad[0] else None
        # Weight and bias gradients add up over chunks in float32 at least.
        grad_weight = torch.zeros(weight.shape, device=weight.device, dtype=acc) if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros(weight.shape[0], device=weight.device, dtype=acc) if ctx.needs_input_grad[2] else None
        for start in range(0, scaled.shape[0], ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            h = scaled[rows].to(dtype)
            log_p = torch.log_softmax(F.linear(h, w, b), dim=-1, dtype=acc)
            g_lp = grad_logprobs[rows] if grad_logprobs is not None else log_p.new_zeros(log_p.shape[0])
            if grad_entropy is None:
                grad_z = log_p.exp_().mul_(-g_lp[:, None])
            else:
                g_ent = grad_entropy[rows]
                p = log_p.exp()
                # -p * (g_lp + g_ent * (log p + entropy)), in the log_p buffer
                grad_z = log_p.mul_(g_ent[:, None]).add_((g_lp + g_ent * entropy[rows])[:, None]).mul_(p).neg_()
            grad_z.scatter_add_(-1, targets[rows, None], g_lp[:, None])
            grad_z = grad_z.to(dtype)
            if grad_scaled is not None:
                grad_scaled[rows] = grad_z @ w
            if grad_weight is not None:
                grad_weight += (grad_z.t() @ h).to(acc)
            if grad_bias is not None:
                grad_bias += grad_z.to(acc).sum(0)
        t = ctx.temperature
        return (
            None if grad_scaled is None else grad_scaled / t,
            None if grad_weight is None else grad_weight.to(weight.dtype),  # z is linear in W times scaled
            None if grad_bias is None else (grad_bias / t).to(weight.dtype),
            None,
            None,
            None,
        )


def token_scores(
    hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """[N] logprobs and [N] entropies of `targets` from [N, H] hidden states through the linear `head`."""
    return TokenScores.apply(hidden, head.weight, head.bias, targets, temperature, chunk_size(head.out_features))
