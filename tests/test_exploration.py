"""Entropy bonus, dynamic (EMA) anchor, TEA, and length / repetition shaping."""

import math

import pytest
import torch
from test_trainer import recipe

from rltune.errors import ConfigError
from rltune.loss_terms.entropy import EntropyBonus
from rltune.loss_terms.kl import ema_update
from rltune.loss_terms.tea import tea_weights
from rltune.losses import token_entropy
from rltune.rewards import Completion
from rltune.rewards.length import CosineLength, SoftOverlongPunishment
from rltune.rewards.repetition import repetition_penalty
from rltune.trainer import Trainer


def test_token_entropy_matches_direct_computation_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 300, 40, requires_grad=True)
    got = token_entropy(logits, with_grad=True, chunk=64)
    direct = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.allclose(got, direct, atol=1e-5)
    (grad_got,) = torch.autograd.grad(got.sum(), logits)
    (grad_direct,) = torch.autograd.grad(direct.sum(), logits)
    assert torch.allclose(grad_got, grad_direct, atol=1e-5)
    assert not token_entropy(logits, with_grad=False).requires_grad


def test_adaptive_entropy_bonus_moves_toward_its_target():
    bonus = EntropyBonus(target=0.5, adapt_rate=1.0)
    bonus.on_step_end(None, {"entropy": 0.3})  # below target: stronger bonus
    assert bonus.scale == pytest.approx(math.exp(0.2))
    bonus.on_step_end(None, {"entropy": 0.9})
    assert bonus.scale == pytest.approx(math.exp(0.2 - 0.4))
    constant = EntropyBonus()
    constant.on_step_end(None, {"entropy": 0.0})
    assert constant.scale == 1.0
    restored = EntropyBonus(target=0.5)
    restored.load_state_dict(bonus.state_dict())
    assert restored.scale == bonus.scale


def test_ema_update():
    ref, cur = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = ref.weight.detach().clone()
    ema_update(ref, cur, decay=0.9)
    assert torch.allclose(ref.weight, 0.9 * before + 0.1 * cur.weight)


def test_trainer_ema_anchor_follows_the_policy_and_is_checkpointed(tmp_path, demo_assets):
    cfg = recipe(
        tmp_path,
        *demo_assets,
        algorithm={"kl_coef": 0.05, "kl_anchor": "ema", "kl_anchor_decay": 0.5},
        train={"steps": 1},
    )
    trainer = Trainer(cfg)
    initial = {k: v.clone() for k, v in trainer.ref_model.state_dict().items()}
    trainer.train()
    policy = trainer.policy.state_dict()
    for name, value in trainer.ref_model.state_dict().items():
        assert torch.allclose(value, 0.5 * initial[name] + 0.5 * policy[name], atol=1e-6), name
    state = torch.load(tmp_path / "run" / "checkpoint-1" / "trainer_state.pt", weights_only=True)
    assert torch.equal(state["reference"]["lm_head.weight"], trainer.ref_model.state_dict()["lm_head.weight"])
    resumed = Trainer(
        recipe(
            tmp_path,
            *demo_assets,
            algorithm={"kl_coef": 0.05, "kl_anchor": "ema"},
            train={"steps": 2, "resume_from": str(tmp_path / "run" / "checkpoint-1")},
        )
    )
    assert torch.equal(resumed.ref_model.state_dict()["lm_head.weight"], state["reference"]["lm_head.weight"])


def test_tea_weights_on_a_hand_built_batch():
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]])
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    weights = tea_weights(adv, logp, mask, cov_alpha=10.0, clip_cov_ub=5.0)
    # Means over the 5 real tokens: A 0.2, log pi -1.8. cov = (A - 0.2)(log pi + 1.8).
    cov0 = torch.tensor([0.8 * 0.8, 0.8 * -0.2, 0.8 * -1.2])
    cov1 = torch.tensor([-1.2 * 0.8, -1.2 * -0.2])
    expected0 = (10 * torch.softmax(cov0, 0)).clamp(0, 5)
    expected1 = (10 * torch.softmax(cov1, 0)).clamp(0, 5)
    assert torch.allclose(weights[0], expected0, atol=1e-6)
    assert torch.allclose(weights[1, :2], expected1, atol=1e-6) and weights[1, 2] == 0
    assert weights.max() <= 5.0


def test_tea_and_entropy_terms_train(tmp_path, demo_assets):
    cfg = recipe(
        tmp_path,
        *demo_assets,
        algorithm={
            "loss_terms": [{"name": "entropy", "coef": 0.01, "kwargs": {"target": 0.3}}, {"name": "tea", "coef": 0.01}]
        },
    )
    metrics = Trainer(cfg).train()
    assert metrics["tea/weight_mean"] > 0 and metrics["entropy_bonus/scale"] > 0


def completion(length, finish="stop", correct=1.0, text=""):
    return Completion(text=text, token_ids=[0] * length, finish_reason=finish, rewards={"math_accuracy": correct})


def test_cosine_length_reward_values():
    reward = CosineLength(max_length=1000)
    assert reward(completion(0), {}) == pytest.approx(2.0)  # r_c0
    assert reward(completion(500), {}) == pytest.approx(1.5)  # halfway between r_c0 and r_cL
    assert reward(completion(0, correct=0.0), {}) == pytest.approx(-10.0)  # r_w0: short wrong punished hardest
    assert reward(completion(500, correct=0.0), {}) == pytest.approx(-5.0)
    assert reward(completion(984), {}) == -10.0  # within the 16-token margin: r_exceed
    assert reward(completion(100, finish="length"), {}) == -10.0
    # Near (but below) the margin the schedule approaches r_cL / r_wL.
    assert reward(completion(983), {}) == pytest.approx(1.0, abs=1e-3)
    assert reward(completion(983, correct=0.0), {}) == pytest.approx(0.0, abs=1e-2)
    with pytest.raises(ConfigError):
        CosineLength(max_length=10)


def test_dapo_overlong_boundaries():
    reward = SoftOverlongPunishment(max_length=100, cache_length=20)
    assert reward(completion(80), {}) == 0.0
    assert reward(completion(90), {}) == pytest.approx(-0.5)
    assert reward(completion(100), {}) == pytest.approx(-1.0)
    assert reward(completion(50, finish="length"), {}) == -1.0


def test_sparse_repetition_penalty():
    assert repetition_penalty("a b a b a b", ngram_size=2, max_penalty=-1.0) == pytest.approx(-(1 - 2 / 5))
    assert repetition_penalty("a b c d", ngram_size=2, max_penalty=-1.0) == 0.0
    assert repetition_penalty("a", ngram_size=2, max_penalty=-1.0) == 0.0


def test_dense_repetition_marks_every_token_of_a_repeated_ngram():
    from rltune.rewards.repetition import repeated_ngram_penalties

    assert repeated_ngram_penalties([1, 2, 3, 1, 2, 3, 1, 2], 3, -1.0) == [0, 0, 0, -1, -1, -1, -1, -1]
    assert repeated_ngram_penalties([1, 2, 3, 4], 2, -1.0) == [0, 0, 0, 0]


def test_discounted_returns():
    from rltune.reward_pipeline import discounted_returns

    got = discounted_returns(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]]), gamma=0.5)
    assert torch.allclose(got, torch.tensor([[1.5, 1.0, 2.0], [0.0, 0.0, 0.0]]))


def test_token_level_stream_goes_to_returns_not_to_the_sequence_reward():
    from test_rewards import make_batch

    from rltune.config import RewardSpec
    from rltune.reward_pipeline import RewardPipeline

    batch = make_batch([["aaaa", "ab"]])
    batch.completion_ids = [[5, 5, 5, 5], [5, 6]]
    specs = [
        RewardSpec("format", 1.0),
        RewardSpec("repetition_dense", 2.0, {"ngram_size": 1, "penalty": -1.0, "gamma": 0.5}),
    ]
    RewardPipeline(specs).score(batch)
    assert batch.reward_components["repetition_dense"].tolist() == [-3.0, 0.0]
    assert torch.equal(batch.rewards, batch.reward_components["format"])  # the dense stream is not in it
    # rewards [0, -1, -1, -1] -> returns with gamma 0.5: [-0.875, -1.75, -1.5, -1], times weight 2
    assert torch.allclose(batch.token_returns[0], 2 * torch.tensor([-0.875, -1.75, -1.5, -1.0]))
    assert torch.equal(batch.token_returns[1], torch.zeros(4))


def test_a_token_level_reward_without_a_gamma_is_undiscounted_and_its_log_row_shows_the_mean_advantage():
    """A token-level reward that sets no `gamma` sums its future rewards as they are (gamma 1); the completions
    log shows a token-level advantage as its mean over the completion's tokens."""
    from test_rewards import make_batch

    from rltune.config import RewardSpec
    from rltune.metrics import completion_rows
    from rltune.reward_pipeline import RewardPipeline

    def every_token(completion, row):
        return [1.0] * len(completion.token_ids)

    every_token.token_level = True
    batch = make_batch([["abc", "ab", "a", ""]])
    RewardPipeline([RewardSpec(function=every_token)]).score(batch)
    expected = torch.tensor([[3.0, 2.0, 1.0], [2.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.equal(batch.token_returns, expected)
    batch.rewards = torch.zeros(4)
    batch.advantages = batch.token_returns
    # one token: its own advantage; none: 0, not a division by zero
    assert [row["advantage"] for row in completion_rows(batch)] == [2.0, 1.5, 1.0, 0.0]


def test_trainer_uses_token_level_advantages(tmp_path, demo_assets):
    cfg = recipe(
        tmp_path,
        *demo_assets,
        rewards=[{"name": "math_accuracy"}, {"name": "repetition_dense", "kwargs": {"ngram_size": 1, "penalty": -0.1}}],
        # hot sampling: 12 tokens from a ~24-symbol vocabulary all but surely repeat one (the penalty fires)
        rollout={"temperature": 3.0},
    )
    trainer = Trainer(cfg)
    trainer.train_step()
    batch, _ = trainer.collect_rollouts()
    assert batch.token_returns is not None and batch.token_returns.shape[0] == len(batch)
    assert (batch.token_returns < 0).any()
