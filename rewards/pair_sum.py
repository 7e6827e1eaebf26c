"""A task with many right answers in free text: "Give two different positive whole numbers that add up to S."
(`python benchmarks/arithmetic_task.py DIR --tasks pair`; S = 10..199 has 4 to 99 right pairs). The pair
is the last "a + b" (or "a and b", "a, b") written, so "23 + 34 = 57" and "The numbers are 23 and 34"
both answer 23 and 34; a model that has not learnt a format is still graded. `SamePair` is the matching
DARLING judge: two answers are one partition when they name the same pair."""

from __future__ import annotations

import re
from itertools import combinations

from rltune.rewards import REWARDS, Completion

_PAIR = re.compile(r"(\d+)\s*(?:\+|\band\b|,|&)\s*(\d+)")


def named_pair(text: str) -> tuple[int, int] | None:
    """The last pair of numbers joined by '+', 'and', ',' or '&' in `text`, smaller first; None if there is none."""
    found = _PAIR.findall(text)
    if not found:
        return None
    a, b = (int(x) for x in found[-1])
    return (min(a, b), max(a, b))


def right_pair(text: str, total: int) -> tuple[int, int] | None:
    """The pair `text` names when it is right (two different positive numbers adding up to `total`), else None."""
    pair = named_pair(text)
    if pair is None or pair[0] < 1 or pair[0] == pair[1] or sum(pair) != total:
        return None
    return pair


@REWARDS.register("pair_sum")
class PairSum:
    """1 if the completion's last named pair is two different positive numbers adding up to `row['gold']`."""

    needs_gold = True  # reads row['gold']: refused on a prompt-only dataset (data.answer_column: null)

    def __call__(self, completion: Completion, row: dict) -> float:
        return float(right_pair(completion.answer_text, int(row["gold"])) is not None)


class SamePair:
    """diversity_partition judge: equivalent when both texts name the same pair (in either order)."""

    def equivalent_pairs(self, texts: list[str]) -> list[tuple[int, int]]:
        pairs = [named_pair(t) for t in texts]
        return [(i, j) for i, j in combinations(range(len(texts)), 2) if pairs[i] and pairs[i] == pairs[j]]
