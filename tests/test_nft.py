"""NFT objective: straight-through clamp, and the paper's on-policy equivalence with GRPO / Dr. GRPO."""

import pytest
import torch
from test_trainer import grads, recipe

from rltune.advantages import dr_grpo
from rltune.errors import ConfigError
from rltune.objectives.clipped import ClippedSurrogate
from rltune.objectives.nft import NegativeAwareFineTuning, clamp_preserve_grad
from rltune.trainer import Trainer


def test_clamp_preserves_the_gradient():
    x = torch.tensor([0.5, 2.0], requires_grad=True)
    y = clamp_preserve_grad(x, 1.0)
    assert y.tolist() == [1.0, 2.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]  # an ordinary clamp would give [0, 1]


def on_policy_batch(tmp_path, demo_assets, **algorithm):
    """A rollout batch whose sampling logprobs are the policy's own (ratio exactly 1), mixed groups only."""
    cfg = recipe(
        tmp_path,
        *demo_assets,
        rewards=[{"name": "math_accuracy"}],
        train={"prompts_per_step": 8},
        rollout={"group_size": 6},
        algorithm=algorithm,
    )
    trainer = Trainer(cfg)
    batch, _ = trainer.collect_rollouts()
    acc = batch.reward_components["math_accuracy"]
    mixed = [g for g, idx in enumerate(batch.groups()) if 0 < acc[idx].mean() < 1]
    assert len(mixed) >= 3
    batch = batch.select_groups(mixed)
    batch.advantages = torch.zeros(len(batch))
    with torch.no_grad():
        for i in range(len(batch)):
            lp = trainer.updater.policy_forward(trainer.model, trainer.updater.collate(batch, [i])).logprobs[0]
            batch.sampling_logprobs[i] = lp.tolist()
    return trainer, batch


@pytest.mark.parametrize("aggregation", ["token_mean", "sum"])
def test_on_policy_nft_normalize_1_equals_dr_grpo(tmp_path, demo_assets, aggregation):
    trainer, batch = on_policy_batch(tmp_path, demo_assets, loss_aggregation=aggregation, loss_constant=1000)
    rewards = batch.reward_components["math_accuracy"]
    batch.advantages = dr_grpo(rewards, batch.groups())
    trainer.updater.objective = ClippedSurrogate(trainer.cfg.algorithm)
    expected = grads(trainer, batch, 8)
    trainer.updater.objective = NegativeAwareFineTuning(trainer.cfg.algorithm, normalize=1)
    batch.extras.pop("nft", None)
    got = grads(trainer, batch, 8)
    assert expected.abs().sum() > 0
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-8)


def test_on_policy_nft_normalize_2_equals_std_normalised_grpo(tmp_path, demo_assets):
    trainer, batch = on_policy_batch(tmp_path, demo_assets)
    rewards = batch.reward_components["math_accuracy"]
    # (r - mean) / population std: NFT's sqrt(r(1-r)) is the population std of a binary group
    # (rltune's `grpo` estimator divides by the sample std, as trl and verl do).
    adv = torch.zeros_like(rewards)
    for idx in batch.groups():
        r = rewards[idx]
        adv[idx] = (r - r.mean()) / r.std(unbiased=False)
    batch.advantages = adv
    trainer.updater.objective = ClippedSurrogate(trainer.cfg.algorithm)
    expected = grads(trainer, batch, 8)
    trainer.updater.objective = NegativeAwareFineTuning(trainer.cfg.algorithm, normalize=2)
    got = grads(trainer, batch, 8)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-8)


def test_rft_learns_from_correct_answers_only(tmp_path, demo_assets):
    """neg_weight=0 on-policy: the surrogate's gradient with advantage 1 - r on correct answers, 0 on wrong."""
    trainer, batch = on_policy_batch(tmp_path, demo_assets)
    rewards = batch.reward_components["math_accuracy"]
    adv = torch.zeros_like(rewards)
    for idx in batch.groups():
        adv[idx] = rewards[idx] * (1 - rewards[idx].mean())
    batch.advantages = adv
    trainer.updater.objective = ClippedSurrogate(trainer.cfg.algorithm)
    expected = grads(trainer, batch, 8)
    trainer.updater.objective = NegativeAwareFineTuning(trainer.cfg.algorithm, neg_weight=0.0)
    assert torch.allclose(grads(trainer, batch, 8), expected, rtol=1e-4, atol=1e-8)


def test_negative_branch_gradient_survives_the_clamp():
    """R > 1 on a wrong answer makes the proxy (1 - r R)/(1 - r) < 1 = clamp_negative: clamped value,
    yet the gradient still pushes the token's probability down."""
    from rltune.batch import MicroBatch, PolicyOutput, RolloutBatch
    from rltune.config import AlgorithmConfig

    rollout = RolloutBatch([[1]] * 2, [[2], [3]], ["a", "b"], [[0.0], [0.0]], ["stop"] * 2, [0, 0], [{}])
    rollout.reward_components["math_accuracy"] = torch.tensor([1.0, 0.0])
    logprobs = torch.tensor([[0.0], [0.3]], requires_grad=True)  # sample 1 (wrong): R = e^0.3 > 1
    mb = MicroBatch(
        input_ids=torch.zeros(2, 2),
        attention_mask=torch.ones(2, 2),
        completion_mask=torch.ones(2, 1),
        sampling_logprobs=torch.zeros(2, 1),
        advantages=torch.zeros(2, 1),
        indices=[0, 1],
        rollout=rollout,
    )
    loss, metrics = NegativeAwareFineTuning(AlgorithmConfig())(mb, PolicyOutput(logprobs, torch.zeros(2, 1)))
    assert loss[1, 0].item() == 0.0  # -log(max(proxy, 1)) = 0 in value
    loss.sum().backward()
    # d/dlogp of -log(proxy) at proxy clamped to 1: r R / (1 - r) * w, with r = 0.5, w = 1 - r.
    r, ratio = 0.5, torch.exp(torch.tensor(0.3)).item()
    assert logprobs.grad[1, 0].item() == pytest.approx(r * ratio / (1 - r) * (1 - r), rel=1e-5)
    assert metrics["nft/negative_clamped_fraction"].item() == 1.0


def test_bad_nft_settings():
    from rltune.config import AlgorithmConfig

    with pytest.raises(ConfigError, match="normalize must be 0, 1 or 2"):
        NegativeAwareFineTuning(AlgorithmConfig(), normalize=3)


def test_nft_trains_with_dynamic_sampling_on_accuracy(tmp_path, demo_assets):
    cfg = recipe(
        tmp_path,
        *demo_assets,
        algorithm={
            "objective": "nft",
            "objective_kwargs": {"normalize": 1},
            "dynamic_sampling": True,
            "dynamic_sampling_reward": "math_accuracy",
            "loss_aggregation": "sum",
            "loss_constant": 1000,
        },
    )
    trainer = Trainer(cfg)
    trained = []
    update = trainer.updater.update
    trainer.updater.update = lambda batch, step: trained.append(batch) or update(batch, step)
    metrics = trainer.train()
    # r_q by hand from the trained batch's graded answers, clamped into NFT's [0.02, 0.98]
    batch = trained[-1]
    correct = (batch.reward_components["math_accuracy"] > 0).float()
    r_q = [min(max(correct[idx].mean().item(), 0.02), 0.98) for idx in batch.groups() for _ in idx]
    assert any(0 < r < 1 for r in r_q), "the seed must give a group with right and wrong answers"
    assert metrics["nft/question_accuracy"] == pytest.approx(sum(r_q) / len(r_q), rel=1e-5)
    assert metrics["dynamic_sampling/kept_groups"] >= 1 and metrics["grad_norm"] > 0


def test_unknown_dynamic_sampling_reward_is_a_clear_error(tmp_path, demo_assets):
    with pytest.raises(ConfigError, match="dynamic_sampling_reward='accuracy' is not one of the recipe's rewards"):
        Trainer(
            recipe(tmp_path, *demo_assets, algorithm={"dynamic_sampling": True, "dynamic_sampling_reward": "accuracy"})
        )
