"""A task with many right answers: "a two-digit number whose digits sum to S" (S = 1..18 has 1 to 9
of them). Its reward checks any right answer, so a policy can be right in several ways; this is where a
diversity reward (DARLING) can pay, unlike single-answer math. Used by benchmarks/darling_vs_grpo.py."""

from __future__ import annotations

from rltune.eval.grading import extract_boxed
from rltune.rewards import REWARDS, Completion


def right_answers(target: int) -> list[int]:
    """Every two-digit number whose digits sum to `target`."""
    return [n for n in range(10, 100) if n // 10 + n % 10 == target]


@REWARDS.register("digit_sum")
class DigitSum:
    """1 if the last \\boxed{} holds a two-digit number whose digits sum to `row['gold']`, else 0."""

    needs_gold = True  # reads row['gold']: refused on a prompt-only dataset (data.answer_column: null)

    def __call__(self, completion: Completion, row: dict) -> float:
        answer = (extract_boxed(completion.answer_text) or "").strip()
        if not (answer.isdigit() and len(answer) == 2 and answer[0] != "0"):
            return 0.0
        return float(int(answer) in right_answers(int(row["gold"])))
