"""Advantage estimators: group-relative baselines computed from the total rewards.

An estimator is a function `(rewards, groups) -> advantages` registered in `ADVANTAGES`, where
`rewards` is the [N] total reward and `groups` the list of sample indices of each group. It returns
one advantage per sample ([N]) or per token ([N, T], right-padded to the longest completion).
"""

from __future__ import annotations

import torch

from rltune.registry import Registry

ADVANTAGES: Registry = Registry("advantage estimator")

STD_EPS = 1e-6


def is_flat(rewards: torch.Tensor) -> bool:
    """Every reward of the group equal. Tested exactly: a float32 mean of equal values can be one rounding
    step off them (eight copies of 1.2), and that residue divided by a ~1e-7 std became an advantage."""
    return bool((rewards == rewards[0]).all())


@ADVANTAGES.register("grpo")
def grpo(rewards: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group; std is the sample (n-1) std, as in trl and verl.
    Group statistics in float64; a flat group gets exactly 0."""
    adv = torch.zeros_like(rewards)
    for idx in groups:
        r = rewards[idx].double()
        if len(idx) > 1 and not is_flat(r):
            adv[idx] = ((r - r.mean()) / (r.std() + STD_EPS)).to(adv.dtype)
    return adv


@ADVANTAGES.register("dr_grpo")
def dr_grpo(rewards: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """r - mean, no std division (Dr. GRPO, arXiv 2503.20783: removes the question-difficulty bias).
    In float64; a flat group gets exactly 0."""
    adv = torch.zeros_like(rewards)
    for idx in groups:
        r = rewards[idx].double()
        if not is_flat(r):
            adv[idx] = (r - r.mean()).to(adv.dtype)
    return adv


@ADVANTAGES.register("rloo")
def rloo(rewards: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """r_i - mean of the other samples of the group (REINFORCE leave-one-out, as used by T1). In float64;
    a flat group gets exactly 0."""
    adv = torch.zeros_like(rewards)
    for idx in groups:
        n = len(idx)
        r = rewards[idx].double()
        if n > 1 and not is_flat(r):
            adv[idx] = (r - (r.sum() - r) / (n - 1)).to(adv.dtype)
    return adv


def select_per_group(
    advantages: torch.Tensor, groups: list[list[int]], keep: int, rule: str, generator: torch.Generator
) -> list[int]:
    """Sample indices to train on, `keep` per group (T1-style oversampling), by `rule`:
    random; balanced (alternately the best above and the worst below the group mean); extreme
    (largest |advantage|). Per-sample advantages decide ([N, T] ones are averaged over tokens)."""
    score = advantages if advantages.dim() == 1 else advantages.mean(-1)
    chosen: list[int] = []
    for idx in groups:
        if rule == "random":
            order = torch.randperm(len(idx), generator=generator).tolist()
            picked = [idx[k] for k in order[:keep]]
        elif rule == "extreme":
            picked = sorted(idx, key=lambda i: -abs(float(score[i])))[:keep]
        else:
            above = sorted((i for i in idx if score[i] > 0), key=lambda i: -float(score[i]))
            below = sorted((i for i in idx if score[i] <= 0), key=lambda i: float(score[i]))
            picked = []
            while len(picked) < keep and (above or below):
                for side in (above, below):
                    if side and len(picked) < keep:
                        picked.append(side.pop(0))
        chosen += sorted(picked)
    return chosen
