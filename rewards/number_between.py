"""A task with many right answers that a small model can start on: "Give a whole number greater than A and less
than B." (`python benchmarks/arithmetic_task.py DIR --tasks between`; 4 to 19 right answers). The answer is
the last number written, boxed or not, as for `final_number`; the gold is "A,B". DARLING partitions its
answers with the `final_number` judge of `diversity_partition`."""

from __future__ import annotations

from rltune.rewards import REWARDS, Completion
from rltune.rewards.final_number import last_number


def between_bounds(gold: str) -> tuple[int, int]:
    """The whole-number bounds (A, B) of a gold "A,B"; a clear error for any other gold."""
    bounds = str(gold).split(",")
    if len(bounds) != 2 or not all(b.strip().lstrip("-").isdigit() for b in bounds):
        raise ValueError(
            f"number_between reads the gold as two whole-number bounds 'A,B', got {gold!r}: point "
            "data.answer_column at such a column (benchmarks/arithmetic_task.py --tasks between writes one)"
        )
    low, high = (int(b) for b in bounds)
    return low, high


def right_number(text: str, gold: str) -> int | None:
    """The last number of `text` when it is a whole number strictly between the bounds "A,B" of `gold`, else None."""
    low, high = between_bounds(gold)
    value = last_number(text)
    return int(value) if value is not None and value == int(value) and low < value < high else None


@REWARDS.register("number_between")
class NumberBetween:
    """1 if the completion's last number is a whole number strictly between the bounds `row['gold']` ("A,B")."""

    needs_gold = True  # reads row['gold']: refused on a prompt-only dataset (data.answer_column: null)

    def __call__(self, completion: Completion, row: dict) -> float:
        return float(right_number(completion.answer_text, row["gold"]) is not None)
