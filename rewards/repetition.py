"""Sparse n-gram repetition penalty (Demystifying Long CoT, reward/repetition.py get_repetition_penalty)."""

from __future__ import annotations

from rltune.rewards import REWARDS, Completion


def repetition_penalty(text: str, ngram_size: int, max_penalty: float) -> float:
    """(1 - distinct n-grams / n-grams) * max_penalty over lowercased words; 0 without n-grams."""
    words = text.lower().split()
    grams = [tuple(words[i : i + ngram_size]) for i in range(len(words) - ngram_size + 1)]
    if not grams:
        return 0.0
    return (1.0 - len(set(grams)) / len(grams)) * max_penalty


@REWARDS.register("repetition")
class RepetitionPenalty:
    """Sequence-level: (1 - distinct word n-grams / n-grams) x max_penalty. max_penalty <= 0 (paper code
    default 0 = off); ngram_size 20 in the paper's code. The paper adds
    it to wrong answers only: with `wrong_only`, correctness is read from `correct_reward`."""

    def __init__(
        self,
        max_penalty: float = -1.0,
        ngram_size: int = 20,
        wrong_only: bool = False,
        correct_reward: str = "math_accuracy",
    ):
        self.max_penalty, self.ngram_size = max_penalty, ngram_size
        self.wrong_only, self.correct_reward = wrong_only, correct_reward
        self.needs_rewards = (correct_reward,) if wrong_only else ()

    def __call__(self, completion: Completion, row: dict) -> float:
        if self.wrong_only and completion.rewards[self.correct_reward] > 0:
            return 0.0
        return repetition_penalty(completion.model_text, self.ngram_size, self.max_penalty)


def repeated_ngram_penalties(token_ids: list[int], ngram_size: int, penalty: float) -> list[float]:
    """`penalty` on every token of each n-gram of token ids that already occurred earlier."""
    values = [0.0] * len(token_ids)
    seen: set[tuple[int, ...]] = set()
    for start in range(len(token_ids) - ngram_size + 1):
        gram = tuple(token_ids[start : start + ngram_size])
        if gram in seen:
            for t in range(start, start + ngram_size):
                values[t] = penalty
        seen.add(gram)
    return values


@REWARDS.register("repetition_dense")
class DenseRepetitionPenalty:
    """Token-level: -0.05 on each token of a repeated 40-gram of token ids, its stream discounted with
    gamma 0.99 (Demystifying Long CoT's paper runs: RepetitionDensePenalty, --gamma 1,0.99)."""

    token_level = True

    def __init__(self, ngram_size: int = 40, penalty: float = -0.05, gamma: float = 0.99):
        self.ngram_size, self.penalty, self.gamma = ngram_size, penalty, gamma

    def __call__(self, completion: Completion, row: dict) -> list[float]:
        return repeated_ngram_penalties(completion.token_ids, self.ngram_size, self.penalty)
