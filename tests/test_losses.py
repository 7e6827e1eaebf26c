import pytest
import torch

from rltune.loss_terms.kl import k3_kl
from rltune.losses import Normalizer, aggregate
from rltune.objectives.clipped import clipped_policy_loss

LOSS = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])


def norm(tokens=4, sequences=2, constant=10, world_size=1):
    return Normalizer(tokens=tokens, sequences=sequences, constant=constant, world_size=world_size)


def test_token_mean_divides_by_all_tokens():
    assert aggregate(LOSS, MASK, "token_mean", norm()).item() == pytest.approx((1 + 2 + 3 + 4) / 4)


def test_seq_mean_token_mean_averages_sequences():
    assert aggregate(LOSS, MASK, "seq_mean_token_mean", norm()).item() == pytest.approx((2.0 + 4.0) / 2)


def test_constant_divides_by_fixed_length():
    assert aggregate(LOSS, MASK, "constant", norm()).item() == pytest.approx(10 / (10 * 2))


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "constant"])
def test_micro_batches_sum_to_the_global_loss(mode):
    whole = aggregate(LOSS, MASK, mode, norm())
    parts = aggregate(LOSS[:1], MASK[:1], mode, norm()) + aggregate(LOSS[1:], MASK[1:], mode, norm())
    assert parts.item() == pytest.approx(whole.item())


def test_token_mean_is_global_not_per_micro_batch():
    # verl's per-micro-batch mean would give (2 + 4) / 2 = 3 here; the global token mean is 2.5.
    parts = aggregate(LOSS[:1], MASK[:1], "token_mean", norm()) + aggregate(LOSS[1:], MASK[1:], "token_mean", norm())
    assert parts.item() == pytest.approx(2.5)


def test_world_size_undoes_gradient_averaging():
    assert aggregate(LOSS, MASK, "token_mean", norm(tokens=8, world_size=2)).item() == pytest.approx(2.5)


def _loss(ratio, adv, low=0.2, high=0.28, dual=None):
    logp = torch.log(torch.tensor([[ratio]]))
    loss, metrics = clipped_policy_loss(
        logp, torch.zeros(1, 1), torch.tensor([[adv]]), torch.ones(1, 1), low, high, dual
    )
    return loss.item(), metrics


def test_clip_higher_is_asymmetric():
    # Positive advantage: the ratio is clipped at 1 + clip_high = 1.28.
    assert _loss(1.5, 1.0)[0] == pytest.approx(-1.28)
    assert _loss(1.25, 1.0)[0] == pytest.approx(-1.25)
    # Negative advantage: clipped at 1 - clip_low = 0.8 from below.
    assert _loss(0.5, -1.0)[0] == pytest.approx(0.8)
    assert _loss(0.9, -1.0)[0] == pytest.approx(0.9)
    # Pessimistic side is never clipped: large ratio with negative advantage keeps the full loss.
    assert _loss(2.0, -1.0)[0] == pytest.approx(2.0)
    assert _loss(1.5, 1.0)[1]["clip_fraction"].item() == 1.0


def test_clip_has_no_gradient_where_clipped():
    logp = torch.log(torch.tensor([[1.5, 1.1]])).requires_grad_()
    loss, _ = clipped_policy_loss(logp, torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2), 0.2, 0.28)
    loss.sum().backward()
    assert logp.grad[0, 0].item() == 0.0 and logp.grad[0, 1].item() != 0.0


def test_dual_clip_caps_negative_advantage_losses():
    assert _loss(5.0, -1.0, dual=3.0)[0] == pytest.approx(3.0)
    assert _loss(2.0, -1.0, dual=3.0)[0] == pytest.approx(2.0)
    # Positive advantages are untouched by the dual clip.
    assert _loss(5.0, 1.0, dual=3.0)[0] == pytest.approx(-1.28)
    assert _loss(5.0, -1.0, dual=3.0)[1]["dual_clip_fraction"].item() == 1.0


def test_k3_kl_values():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.0, -1.0, -1.5])
    d = ref - logp
    assert torch.allclose(k3_kl(logp, ref), torch.exp(d) - d - 1)
    assert k3_kl(logp, ref)[0].item() == 0.0
    assert (k3_kl(logp, ref) >= 0).all()
    # Its mean under samples from pi estimates KL(pi || ref).
    torch.manual_seed(0)
    p = torch.distributions.Categorical(logits=torch.tensor([0.0, 1.0, 2.0]))
    q = torch.distributions.Categorical(logits=torch.tensor([1.0, 0.0, 0.5]))
    x = p.sample((200_000,))
    estimate = k3_kl(p.log_prob(x), q.log_prob(x)).mean()
    assert estimate.item() == pytest.approx(torch.distributions.kl_divergence(p, q).item(), rel=0.02)
