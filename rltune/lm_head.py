"""Log-probabilities and entropies of the chosen tokens straight from the last hidden states.

The plain way (`logits = lm_head(hidden)`, then log-softmax) keeps [tokens, vocab] logits, their float32
copy and the softmax alive for the backward pass: with a 150k vocabulary that is the largest memory in
the update. Here the LM head runs over a chunk of positions at a time, only on the positions that are
scored, and the backward pass recomputes each chunk's logits instead of keeping them: one extra LM-head
matmul for gigabytes less memory. When all positions fit in one chunk, its logits are kept instead.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# Positions per chunk are chosen so that one chunk's float32 logits hold about this many elements.
CHUNK_ELEMENTS = 2**27


def chunk_size(vocab_size: int) -> int:
    return max(16, CHUNK_ELEMENTS // max(vocab_size, 1))


def chunk_scores(z: torch.Tensor, targets: torch.Tensor, acc: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(logprob of each row's target, entropy) from one chunk's [rows, vocab] tempered logits, in `acc`."""
    log_p = torch.log_softmax(z, dim=-1, dtype=acc)
    logprobs = log_p.gather(-1, targets[:, None]).squeeze(-1)
    return logprobs, -log_p.exp().mul_(log_p).sum(-1)


def chunk_grad(
    z: torch.Tensor,
    targets: torch.Tensor,
    entropy: torch.Tensor,
    grad_logprobs: torch.Tensor,
    grad_entropy: torch.Tensor | None,
    acc: torch.dtype,
) -> torch.Tensor:
    """The gradient with respect to one chunk's tempered logits z, in z's dtype:
    d logprob / dz = onehot - p;   d entropy / dz = -p (log p + entropy)."""
    if grad_entropy is None:  # a softmax is one full-vocabulary pass fewer than exp(log_softmax)
        grad = torch.softmax(z, dim=-1, dtype=acc).mul_(-grad_logprobs[:, None])
    else:
        log_p = torch.log_softmax(z, dim=-1, dtype=acc)
        p = log_p.exp()
        # -p * (g_lp + g_ent * (log p + entropy)), in the log_p buffer
        grad = log_p.add_(entropy[:, None]).mul_(grad_entropy[:, None]).add_(grad_logprobs[:, None]).mul_(p).neg_()
    return grad.scatter_add_(-1, targets[:, None], grad_logprobs[:, None]).to(z.dtype)


@functools.cache
def compiled(fn):
    """`fn` through torch.compile, once per process: the chunk's softmax passes become one or two fused loops
    over the logits (Triton on a GPU, C++ on a CPU). Chunk sizes vary, so shapes are dynamic."""
    return torch.compile(fn, dynamic=True)


class TokenScores(torch.autograd.Function):
    """(logprob of the target token, entropy) per row of `hidden`, at `temperature`; differentiable in
    both outputs with respect to `hidden`, `weight` and `bias`.

    The temperature divides the [N, H] hidden states rather than the [N, V] logits, and the backward pass
    works in place on one chunk's buffers: every full-vocabulary pass costs as much as a small matmul.
    `compile` runs the per-chunk arithmetic compiled (chunk_scores, chunk_grad)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature: float, chunk: int, compile: bool = False):
        # Softmax arithmetic in float32 at least (float64 stays float64).
        acc = torch.promote_types(hidden.dtype, torch.float32)
        scores = compiled(chunk_scores) if compile else chunk_scores
        scaled = hidden / temperature
        scaled_bias = None if bias is None else bias / temperature
        logprobs = torch.empty(hidden.shape[0], device=hidden.device, dtype=acc)
        entropy = torch.empty_like(logprobs)
        logits = None  # no rows, no chunk
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            logits = F.linear(scaled[rows], weight, scaled_bias)
            logprobs[rows], entropy[rows] = scores(logits, targets[rows], acc)
        # A single chunk's logits are kept for the backward pass rather than recomputed: at most one chunk's
        # memory, which the forward pass held anyway, for one LM-head matmul less.
        kept = logits if hidden.shape[0] <= chunk else None
        ctx.save_for_backward(scaled, weight, scaled_bias, targets, entropy, kept)
        ctx.temperature, ctx.chunk, ctx.compile = temperature, chunk, compile
        # The matmul dtype of the forward (bf16 under autocast), so the backward multiplies alike.
        ctx.compute_dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled() else None
        ctx.set_materialize_grads(False)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        scaled, weight, scaled_bias, targets, entropy, kept = ctx.saved_tensors
        dtype = ctx.compute_dtype or scaled.dtype
        acc = entropy.dtype
        gradient = compiled(chunk_grad) if ctx.compile else chunk_grad
        w = weight.to(dtype)
        b = None if scaled_bias is None else scaled_bias.to(dtype)
        if grad_logprobs is None:
            grad_logprobs = entropy.new_zeros(entropy.shape)
        grad_scaled = torch.empty_like(scaled) if ctx.needs_input_grad[0] else None
        # Weight and bias gradients add up over chunks in float32 at least.
        grad_weight = torch.zeros(weight.shape, device=weight.device, dtype=acc) if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros(weight.shape[0], device=weight.device, dtype=acc) if ctx.needs_input_grad[2] else None
        for start in range(0, scaled.shape[0], ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            h = scaled[rows].to(dtype)
            g_ent = None if grad_entropy is None else grad_entropy[rows]
            logits = kept if kept is not None else F.linear(h, w, b)
            grad_z = gradient(logits, targets[rows], entropy[rows], grad_logprobs[rows], g_ent, acc)
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
            None,
        )


def token_scores(
    hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor, temperature: float, compile: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """[N] logprobs and [N] entropies of `targets` from [N, H] hidden states through the linear `head`."""
    return TokenScores.apply(
        hidden, head.weight, head.bias, targets, temperature, chunk_size(head.out_features), compile
    )
