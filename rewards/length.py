"""Length shaping: the cosine length-scaled reward (Demystifying Long CoT, arXiv 2502.03373) and
DAPO's soft overlong punishment (arXiv 2503.14476, Eq. 13)."""

from __future__ import annotations

import math

from rltune.errors import ConfigError
from rltune.rewards import REWARDS, Completion

MAX_LEN_MARGIN = 16
"""A response within this many tokens of max_length counts as exceeding it (demystify reward/common.py)."""


def cosine_schedule(t: float, horizon: float, eta_min: float, eta_max: float) -> float:
    """eta_max at t = 0, eta_min at t = horizon, cosine in between."""
    return eta_min + 0.5 * (eta_max - eta_min) * (1.0 + math.cos(t * math.pi / horizon))


@REWARDS.register("cosine_length")
class CosineLength:
    """Correct answers: r_c0 at length 0 falling to r_cL at max_length (short right > long right).
    Wrong answers: r_w0 at length 0 rising to r_wL (short wrong is punished harder than long wrong).
    Within MAX_LEN_MARGIN tokens of max_length (or truncated): r_exceed, whatever the answer.

    The paper's names are used here. The released code calls them min/max_value_correct = r_cL/r_c0 and
    min/max_value_wrong = r_w0/r_wL (the wrong pair is swapped inside the function); defaults are the
    values of every paper script. Correctness is read from the `correct_reward` component (> 0)."""

    needs_rewards: tuple[str, ...]

    def __init__(
        self,
        max_length: int,
        r_c0: float = 2.0,
        r_cL: float = 1.0,
        r_w0: float = -10.0,
        r_wL: float = 0.0,
        r_exceed: float = -10.0,
        correct_reward: str = "math_accuracy",
    ):
        if max_length <= MAX_LEN_MARGIN:
            raise ConfigError(f"cosine_length: max_length must exceed {MAX_LEN_MARGIN} (set it to rollout.max_tokens)")
        self.max_length = max_length
        self.r_c0, self.r_cL, self.r_w0, self.r_wL, self.r_exceed = r_c0, r_cL, r_w0, r_wL, r_exceed
        self.correct_reward = correct_reward
        self.needs_rewards = (correct_reward,)

    def __call__(self, completion: Completion, row: dict) -> float:
        length = len(completion.token_ids)
        if completion.finish_reason == "length" or length + MAX_LEN_MARGIN >= self.max_length:
            return self.r_exceed
        if completion.rewards[self.correct_reward] > 0:
            return cosine_schedule(length, self.max_length, eta_min=self.r_cL, eta_max=self.r_c0)
        return cosine_schedule(length, self.max_length, eta_min=self.r_wL, eta_max=self.r_w0)


@REWARDS.register("overlong")
class SoftOverlongPunishment:
    """0 up to max_length - cache_length tokens, then falling linearly to -penalty at max_length
    (DAPO: L_max 20480 = 16384 expected + 4096 cache, penalty 1.0); -penalty when truncated."""

    def __init__(self, max_length: int, cache_length: int = 4096, penalty: float = 1.0):
        if not 0 < cache_length <= max_length:
            raise ConfigError(f"overlong: need 0 < cache_length <= max_length (got {cache_length}, {max_length})")
        self.max_length, self.cache_length, self.penalty = max_length, cache_length, penalty

    def __call__(self, completion: Completion, row: dict) -> float:
        length = len(completion.token_ids)
        if completion.finish_reason == "length" or length > self.max_length:
            return -self.penalty
        expected = self.max_length - self.cache_length
        return min(0.0, (expected - length) / self.cache_length) * self.penalty
