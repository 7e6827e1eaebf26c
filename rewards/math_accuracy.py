"""Correctness of the final boxed answer against the gold answer, checked with math-verify."""

from __future__ import annotations

from rltune.eval.grading import grade
from rltune.rewards import REWARDS, Completion


@REWARDS.register("math_accuracy")
class MathAccuracy:
    """`correct` if the last \\boxed{} matches `row['gold']`, else `incorrect` (DAPO and NFT use +1/-1)."""

    needs_gold = True  # reads row['gold']: refused on a prompt-only dataset (data.answer_column: null)

    def __init__(self, correct: float = 1.0, incorrect: float = 0.0):
        self.correct = correct
        self.incorrect = incorrect

    def __call__(self, completion: Completion, row: dict) -> float:
        return self.correct if grade(completion.answer_text, row["gold"]) else self.incorrect
