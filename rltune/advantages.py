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


@ADVANTAGES.register("grpo")
def grpo(rewards: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group; std is the sample (n-1) std, as in trl and verl."""
    adv = torch.zeros_like(rewards)
    for idx in groups:
        r = rewards[idx]
        if len(idx) > 1:
            adv[idx] = (r - r.mean()) / (r.std() + STD_EPS)
    return adv


@ADVANTAGES.register("dr_grpo")
def dr_grpo(rewards: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """r - mean, no std division (Dr. GRPO, arXiv 2503.20783: removes the question-difficulty bias)."""
    adv = torch.zeros_like(rewards)
    for idx in groups:
        adv[idx] = rewards[idx] - rewards[idx].mean()
    return adv


@ADVANTAGES.register("rloo")
def rloo(rewards: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """r_i - mean of the other samples of the group (REINFORCE leave-one-out, as used by T1)."""
    adv = torch.zeros_like(rewards)
    for idx in groups:
        n = len(idx)
        if n > 1:
            r = rewards[idx]
            adv[idx] = r - (r.sum() - r) / (n - 1)
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
