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
