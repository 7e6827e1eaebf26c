"""Log-probabilities and entropies of the chosen tokens straight from the last hidden states.

The plain way (`logits = lm_head(hidden)`, then log-softmax) keeps [tokens, vocab] logits, their float32
copy and the softmax alive for the backward pass: with a 150k vocabulary that is the largest memory in
the update. Here the LM head runs only on the positions that are scored, a chunk of logits at a time, and
the backward pass recomputes each chunk instead of keeping it: one extra LM-head matmul for gigabytes
less memory. The forward pass takes chunks of positions (each row's softmax needs its whole vocabulary);
the backward pass takes chunks of the vocabulary over all positions, so that each chunk's weight gradient
is written once rather than added up over position chunks: what adds up over chunks is the [positions,
hidden] gradient instead of the [vocab, hidden] one, ten times smaller at a 150k vocabulary and 16k
positions. When all logits fit in one chunk, they are kept instead.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 2**27
"""A chunk of logits holds at most about this many elements (512 MB in float32), in both passes."""


def chunk_scores(
    z: torch.Tensor, targets: torch.Tensor, acc: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logprob of each row's target, entropy, log-sum-exp) from a chunk of [rows, vocab] tempered logits,
    in `acc`."""
    log_p = torch.log_softmax(z, dim=-1, dtype=acc)
    logprobs = log_p.gather(-1, targets[:, None]).squeeze(-1)
    log_sum_exp = z.gather(-1, targets[:, None]).squeeze(-1).to(acc) - logprobs
    return logprobs, -log_p.exp().mul_(log_p).sum(-1), log_sum_exp


def chunk_grad(
    z: torch.Tensor,
    log_sum_exp: torch.Tensor,
    entropy: torch.Tensor,
    targets: torch.Tensor,
    grad_logprobs: torch.Tensor,
    grad_entropy: torch.Tensor | None,
    acc: torch.dtype,
) -> torch.Tensor:
    """The gradient with respect to a [rows, columns] chunk of the tempered logits z, in z's dtype, from
    each row's log-sum-exp and entropy over the whole vocabulary; `targets` count from the chunk's first
    column (a target outside the chunk has no one-hot term here):
    d logprob / dz = onehot - p;   d entropy / dz = -p (log p + entropy)."""
    log_p = z - log_sum_exp[:, None]  # promoted to acc, the log-sum-exp's dtype
    if grad_entropy is None:  # one pass fewer: -p * g_lp
        grad = log_p.exp_().mul_(-grad_logprobs[:, None])
    else:
        p = log_p.exp()
        # -p * (g_lp + g_ent * (log p + entropy)), in the log_p buffer
        grad = log_p.add_(entropy[:, None]).mul_(grad_entropy[:, None]).add_(grad_logprobs[:, None]).mul_(p).neg_()
    inside = (targets >= 0) & (targets < z.shape[1])
    onehot = torch.where(inside, grad_logprobs, 0.0)
    return grad.scatter_add_(-1, targets.clamp(0, z.shape[1] - 1)[:, None], onehot[:, None]).to(z.dtype)


@functools.cache
def compiled(fn):
    """`fn` through torch.compile, once per process: a chunk's softmax passes become one or two fused loops
    over the logits (Triton on a GPU, C++ on a CPU). Chunk sizes vary, so shapes are dynamic."""
    return torch.compile(fn, dynamic=True)


class TokenScores(torch.autograd.Function):
    """(logprob of the target token, entropy) per row of `hidden`, at `temperature`; differentiable in
    both outputs with respect to `hidden`, `weight` and `bias`. Chunks of logits hold at most about
    `chunk_elements` elements.

    The temperature divides the [N, H] hidden states rather than the [N, V] logits, and the backward pass
    works in place on one chunk's buffers: every full-vocabulary pass costs as much as a small matmul.
    `compile` runs the per-chunk arithmetic compiled (chunk_scores, chunk_grad)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature: float, chunk_elements: int, compile: bool = False):
        # Softmax arithmetic in float32 at least (float64 stays float64).
        acc = torch.promote_types(hidden.dtype, torch.float32)
        scores = compiled(chunk_scores) if compile else chunk_scores
        scaled = hidden / temperature
        scaled_bias = None if bias is None else bias / temperature
        rows_per_chunk = max(1, chunk_elements // weight.shape[0])
        logprobs, entropy, log_sum_exp = (hidden.new_empty(hidden.shape[0], dtype=acc) for _ in range(3))
        logits = None  # no rows, no chunk
        for start in range(0, hidden.shape[0], rows_per_chunk):
            rows = slice(start, start + rows_per_chunk)
            logits = F.linear(scaled[rows], weight, scaled_bias)
            logprobs[rows], entropy[rows], log_sum_exp[rows] = scores(logits, targets[rows], acc)
        # All logits in one chunk are kept for the backward pass rather than recomputed: memory the forward
        # pass held anyway, for one LM-head matmul less.
        kept = logits if hidden.shape[0] <= rows_per_chunk else None
        ctx.save_for_backward(scaled, weight, scaled_bias, targets, log_sum_exp, entropy, kept)
        ctx.temperature, ctx.chunk_elements, ctx.compile = temperature, chunk_elements, compile
        # The matmul dtype of the forward (bf16 under autocast), so the backward multiplies alike.
        device = hidden.device.type
        ctx.compute_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        ctx.set_materialize_grads(False)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        scaled, weight, scaled_bias, targets, log_sum_exp, entropy, kept = ctx.saved_tensors
        dtype = ctx.compute_dtype or scaled.dtype
        acc = entropy.dtype
        gradient = compiled(chunk_grad) if ctx.compile else chunk_grad
        h = scaled.to(dtype)
        w = weight.to(dtype)
        b = None if scaled_bias is None else scaled_bias.to(dtype)
        if grad_logprobs is None:
            grad_logprobs = entropy.new_zeros(entropy.shape)
        # The hidden states' gradient adds up over vocabulary chunks, in float32 at least.
        grad_scaled = torch.zeros(scaled.shape, device=scaled.device, dtype=acc) if ctx.needs_input_grad[0] else None
        grad_weight = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        grad_bias = weight.new_empty(weight.shape[0]) if ctx.needs_input_grad[2] else None
        columns = max(1, ctx.chunk_elements // max(1, scaled.shape[0]))
        for start in range(0, weight.shape[0], columns):
            vocab = slice(start, start + columns)
            logits = kept if kept is not None else F.linear(h, w[vocab], None if b is None else b[vocab])
            grad_z = gradient(logits, log_sum_exp, entropy, targets - start, grad_logprobs, grad_entropy, acc)
            if grad_scaled is not None:
                grad_scaled += grad_z @ w[vocab]  # the add reads the matmul's dtype and writes acc: no copy
            if grad_weight is not None:
                grad_weight[vocab] = grad_z.t() @ h  # z is linear in W times scaled
            if grad_bias is not None:
                grad_bias[vocab] = grad_z.sum(0, dtype=acc) / ctx.temperature
        return (
            None if grad_scaled is None else (grad_scaled / ctx.temperature).to(scaled.dtype),
            grad_weight,
            grad_bias,
            None,
            None,
            None,
            None,
        )


def token_scores(
    hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor, temperature: float, compile: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """[N] logprobs and [N] entropies of `targets` from [N, H] hidden states through the linear `head`."""
    return TokenScores.apply(hidden, head.weight, head.bias, targets, temperature, CHUNK_ELEMENTS, compile)
