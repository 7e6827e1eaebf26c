"""The chunked LM head's own gradients against autograd's (float64), and its values against the plain path."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rltune.lm_head import TokenScores


def plain_scores(hidden, weight, bias, targets, temperature):
    z = torch.nn.functional.linear(hidden, weight, bias) / temperature
    log_p = z.log_softmax(-1)
    return log_p.gather(-1, targets[:, None]).squeeze(-1), -(log_p.exp() * log_p).sum(-1)


def inputs(rows=7, dim=5, vocab=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, dim, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(vocab, dim, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(vocab, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, vocab, (rows,), generator=g)
    return hidden, weight, bias, targets


@pytest.mark.parametrize("chunk", [33, 77])
def test_gradients_match_finite_differences_in_both_outputs(chunk):
    hidden, weight, bias, targets = inputs()
    # 33 logits a chunk over 7 rows x 11 tokens: forward chunks of 3 rows, backward chunks of 4 vocabulary
    # columns (the last one partial), recomputed; 77: one chunk, its logits kept.
    # Both outputs feed the checked function.
    assert torch.autograd.gradcheck(
        lambda h, w, b: TokenScores.apply(h, w, b, targets, 0.7, chunk), (hidden, weight, bias), eps=1e-6, atol=1e-5
    )


def test_logprobs_alone_match_finite_differences():
    """The entropy's gradient arrives as None when only the logprobs reach the loss: the backward pass then
    takes its softmax-only path."""
    hidden, weight, bias, targets = inputs(seed=3)
    assert torch.autograd.gradcheck(
        lambda h, w, b: TokenScores.apply(h, w, b, targets, 0.7, 33)[0], (hidden, weight, bias), eps=1e-6, atol=1e-5
    )


def test_values_and_gradients_equal_the_plain_log_softmax():
    hidden, weight, bias, targets = inputs(rows=9, seed=1)
    a, b = torch.randn(9, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    results = []
    for scores in (
        lambda: TokenScores.apply(hidden, weight, bias, targets, 1.3, 44),
        lambda: TokenScores.apply(hidden, weight, bias, targets, 1.3, 99),
        lambda: plain_scores(hidden, weight, bias, targets, 1.3),
    ):
        logprobs, entropy = scores()
        (a * logprobs + b * entropy).sum().backward()
        results.append([logprobs.detach(), entropy.detach()] + [t.grad.clone() for t in (hidden, weight, bias)])
        for t in (hidden, weight, bias):
            t.grad = None
    for chunked, one_chunk, plain in zip(*results):
        assert torch.allclose(chunked, plain, atol=1e-10) and torch.allclose(one_chunk, plain, atol=1e-10)


def test_entropy_alone_or_logprobs_alone_backpropagate():
    hidden, weight, bias, targets = inputs(seed=2)
    logprobs, entropy = TokenScores.apply(hidden, weight, None, targets, 1.0, 22)
    entropy.sum().backward()  # the logprob output takes no part: its gradient arrives as None
    assert hidden.grad.abs().sum() > 0 and bias.grad is None
    ref_lp, ref_ent = plain_scores(hidden, weight, None, targets, 1.0)
    assert torch.allclose(logprobs, ref_lp) and torch.allclose(entropy, ref_ent)


def test_no_rows_give_empty_scores_and_zero_gradients():
    hidden, weight, bias, targets = inputs()
    empty = hidden[:0].detach().requires_grad_()
    logprobs, entropy = TokenScores.apply(empty, weight, bias, targets[:0], 1.0, 44)
    (logprobs.sum() + entropy.sum()).backward()
    assert logprobs.shape == entropy.shape == (0,)
    assert weight.grad.abs().sum() == 0 and bias.grad.abs().sum() == 0


class LargestTensor(TorchDispatchMode):
    """Records the most elements any operation's output held."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_chunks_of_logits_stay_within_the_budget_in_both_passes():
    """64 positions x 1,000 tokens of logits, 10,000 a chunk: no tensor of the forward or backward pass is
    larger than a chunk or the weight (8,000), though all logits are 64,000."""
    hidden, weight, bias, targets = inputs(rows=64, dim=8, vocab=1000, seed=4)
    with LargestTensor() as mode:
        logprobs, entropy = TokenScores.apply(hidden, weight, bias, targets, 0.9, 10_000)
        (logprobs.sum() + entropy.sum()).backward()
    assert weight.grad.abs().sum() > 0
    assert 8_000 < mode.largest <= 10_000


def test_bfloat16_weights_score_like_float32_arithmetic_on_the_same_values():
    """The GPU path: bf16 hidden states and weights, softmax arithmetic in float32."""
    hidden, weight, bias, targets = inputs(rows=12, dim=16, vocab=300, seed=3)
    h16, w16 = hidden.detach().bfloat16().requires_grad_(), weight.detach().bfloat16().requires_grad_()
    logprobs, entropy = TokenScores.apply(h16, w16, None, targets, 0.8, 1500)
    assert logprobs.dtype == torch.float32 and h16.grad is None
    (logprobs.sum() + entropy.sum()).backward()
    h32, w32 = h16.detach().float().requires_grad_(), w16.detach().float().requires_grad_()
    ref_lp, ref_ent = plain_scores(h32, w32, None, targets, 0.8)
    (ref_lp.sum() + ref_ent.sum()).backward()
    assert torch.allclose(logprobs, ref_lp, rtol=2e-2, atol=5e-2)
    assert torch.allclose(entropy, ref_ent, rtol=2e-2, atol=5e-2)
    for fused, ref in ((h16.grad, h32.grad), (w16.grad, w32.grad)):
        assert fused.dtype == torch.bfloat16
        assert (fused.float() - ref).norm() / ref.norm() < 2e-2


def test_float32_weights_under_bfloat16_autocast_multiply_in_bfloat16_and_keep_float32_gradients():
    """train.mixed_precision=bf16: the forward's matmuls run in bf16 under autocast, the backward's are made
    to match, and the gradients come back in the weights' float32."""
    hidden, weight, bias, targets = (t.detach().float() if t.is_floating_point() else t for t in inputs(12, 16, 300))
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logprobs, entropy = TokenScores.apply(h, w, None, targets, 0.8, 1500)
    (logprobs.sum() + entropy.sum()).backward()
    # The reference: float32 arithmetic on the values the bf16 matmuls saw.
    h32, w32 = (t.bfloat16().float().requires_grad_() for t in (hidden, weight))
    ref_lp, ref_ent = plain_scores(h32, w32, None, targets, 0.8)
    (ref_lp.sum() + ref_ent.sum()).backward()
    assert h.grad.dtype == w.grad.dtype == torch.float32
    assert torch.allclose(logprobs, ref_lp, rtol=2e-2, atol=5e-2)
    for fused, ref in ((h.grad, h32.grad), (w.grad, w32.grad)):
        assert 0 < (fused - ref).norm() / ref.norm() < 1e-2  # bf16 rounding, no more


def test_compiled_chunk_arithmetic_equals_the_eager_one():
    """train.compile: the per-chunk softmax passes run through torch.compile, with the same values and
    gradients (float32), whether the entropy takes part in the loss or not."""
    hidden, weight, bias, targets = (t.detach().float() if t.is_floating_point() else t for t in inputs(33, 8, 50))
    a = torch.randn(33)
    for with_entropy in (True, False):
        results = []
        for compile in (False, True):
            h, w, b = (t.clone().requires_grad_() for t in (hidden, weight, bias))
            logprobs, entropy = TokenScores.apply(h, w, b, targets, 0.9, 500, compile)
            loss = (a * logprobs).sum() + (entropy.sum() if with_entropy else 0)
            loss.backward()
            results.append([logprobs.detach(), entropy.detach(), h.grad, w.grad, b.grad])
        for eager, compiled in zip(*results):
            assert torch.allclose(eager, compiled, rtol=1e-5, atol=1e-6)
