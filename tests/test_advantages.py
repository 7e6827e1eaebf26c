import pytest
import torch

from rltune.advantages import ADVANTAGES, dr_grpo, grpo, rloo
from rltune.errors import ConfigError

GROUPS = [[0, 1, 2, 3], [4, 5, 6]]
REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0])


def test_grpo_matches_hand_computed_values():
    adv = grpo(REWARDS, GROUPS)
    # group 1: mean 0.5, sample std sqrt(1/3)
    std = (1 / 3) ** 0.5
    expected = torch.tensor([0.5 / std, -0.5 / std, -0.5 / std, 0.5 / std, 0.0, 0.0, 0.0])
    assert torch.allclose(adv, expected, atol=1e-4)


def test_dr_grpo_is_mean_centred_without_std():
    adv = dr_grpo(REWARDS, GROUPS)
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0]))


def test_rloo_leaves_one_out():
    rewards = torch.tensor([3.0, 0.0, 0.0])
    adv = rloo(rewards, [[0, 1, 2]])
    # 3 - mean(0, 0) = 3; 0 - mean(3, 0) = -1.5
    assert torch.allclose(adv, torch.tensor([3.0, -1.5, -1.5]))
    assert torch.allclose(adv, 3 / 2 * dr_grpo(rewards, [[0, 1, 2]]))


def test_groups_are_independent():
    a = grpo(REWARDS, GROUPS)
    shifted = REWARDS.clone()
    shifted[4:] += 100.0
    assert torch.allclose(a, grpo(shifted, GROUPS))


def test_registry_names_and_typo_hint():
    assert {"grpo", "dr_grpo", "rloo"} <= set(ADVANTAGES.names())
    with pytest.raises(ConfigError, match="Did you mean 'grpo'"):
        ADVANTAGES.get("grpoo")


def test_select_per_group_rules():
    from rltune.advantages import select_per_group

    adv = torch.tensor([0.9, -0.1, 0.2, -1.5, 0.5, 0.0, -0.3])
    groups = [[0, 1, 2, 3], [4, 5, 6]]
    g = torch.Generator().manual_seed(0)
    # balanced: best above the mean, worst below, alternately
    assert select_per_group(adv, groups, 2, "balanced", g) == [0, 3, 4, 6]
    assert select_per_group(adv, groups, 3, "balanced", g) == [0, 2, 3, 4, 5, 6]
    assert select_per_group(adv, groups, 1, "extreme", g) == [3, 4]
    picked = select_per_group(adv, groups, 2, "random", g)
    assert len(picked) == 4 and set(picked[:2]) <= {0, 1, 2, 3} and set(picked[2:]) <= {4, 5, 6}
    assert select_per_group(adv, groups, 4, "balanced", g) == [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
@pytest.mark.parametrize("size", [2, 3, 5, 7, 8, 16, 33, 64])
@pytest.mark.parametrize("value", [0.1, 0.7, 1.2, 12.3, 1e6, -3.7, -0.3, 1.0 + 0.2, 0.1 * 3])
def test_a_group_of_equal_rewards_gets_exactly_zero_advantage(estimator, size, value, dtype):
    """Eight float32 copies of 1.2 have a float32 mean one rounding step off 1.2; that residue over a ~1e-7
    std was a 0.1 advantage. Flat groups are exactly 0 beside a varied group, whatever the value, also for
    float64 rewards (whose own mean rounds too)."""
    flat = torch.full((size,), value, dtype=dtype)
    varied = torch.tensor([value, value + 1.0, value - 0.5], dtype=dtype)
    rewards = torch.cat([flat, varied])
    groups = [list(range(size)), list(range(size, size + 3))]
    adv = ADVANTAGES.get(estimator)(rewards, groups)
    assert adv[:size].eq(0).all()
    assert adv[size:].ne(0).all()


def test_mixed_reward_components_summed_in_float32_give_flat_groups_exactly_zero():
    """The demo's total: math_accuracy 1.0 plus format 0.2, summed as the reward pipeline sums them."""
    accuracy, fmt = torch.ones(8), torch.ones(8)
    total = 1.0 * accuracy + 0.2 * fmt
    for estimator in ("grpo", "dr_grpo", "rloo"):
        assert ADVANTAGES.get(estimator)(total, [list(range(8))]).eq(0).all(), estimator


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_varied_groups_match_the_float64_formula(estimator):
    gen = torch.Generator().manual_seed(0)
    rewards = (torch.rand(40, generator=gen) * 10).float()
    groups = [list(range(0, 8)), list(range(8, 24)), list(range(24, 40))]
    adv = ADVANTAGES.get(estimator)(rewards, groups)
    for idx in groups:
        r = rewards[idx].double()
        if estimator == "grpo":
            want = (r - r.mean()) / (r.std() + 1e-6)
        elif estimator == "dr_grpo":
            want = r - r.mean()
        else:
            want = r - (r.sum() - r) / (len(idx) - 1)
        assert torch.allclose(adv[idx].double(), want, rtol=1e-6, atol=1e-6)
