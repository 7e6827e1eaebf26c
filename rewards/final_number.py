"""Correctness of the last number in the completion, boxed or not: a reward for arithmetic-style tasks whose
model has not learnt the box yet. Only the final number counts, so listing candidates does not pay."""

from __future__ import annotations

import re

from rltune.rewards import REWARDS, Completion

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_number(text: str) -> float | None:
    """The last number written in `text` (thousands commas allowed), or None."""
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None  # the pattern only matches valid floats


@REWARDS.register("final_number")
class FinalNumber:
    """1 if the last number of the completion equals `row['gold']` (a number), else 0."""

    needs_gold = True  # reads row['gold']: refused on a prompt-only dataset (data.answer_column: null)

    def __call__(self, completion: Completion, row: dict) -> float:
        value, gold = last_number(completion.answer_text), last_number(str(row["gold"]))
        return float(value is not None and gold is not None and abs(value - gold) < 1e-9)
