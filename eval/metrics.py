"""pass@k, pass^k, mean@n, maj@k, bootstrap confidence intervals, answer diversity and length statistics."""

from __future__ import annotations

import math
import random
from typing import Callable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, arXiv 2107.03374).

    1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i): no large binomials, finite
    for any n.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Unbiased pass^k from n samples with c correct: the chance that k samples drawn without replacement are
    all right, C(c, k) / C(n, k) (the reliability metric of tau-bench, arXiv 2406.12045, and prime-rl),
    computed as prod_{i<k} (c - i) / (n - i)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    product = 1.0
    for i in range(k):
        product *= (c - i) / (n - i)
        if product == 0.0:
            break
    return product


def length_statistics(lengths: Sequence[int], truncated: Sequence[bool]) -> dict[str, float]:
    """Samples, mean, median, 90th and 99th percentile (nearest rank) and maximum of completion lengths in
    tokens, and the fraction cut at max_tokens; zeros for no samples."""
    if not lengths:
        return {"samples": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "truncated_fraction": 0.0}
    ordered = sorted(lengths)

    def rank(q: float) -> float:
        return float(ordered[max(0, math.ceil(q * len(ordered)) - 1)])

    return {
        "samples": len(ordered),
        "mean": sum(ordered) / len(ordered),
        "p50": rank(0.5),
        "p90": rank(0.9),
        "p99": rank(0.99),
        "max": float(ordered[-1]),
        "truncated_fraction": sum(truncated) / len(truncated),
    }


def mean_at_n(correct: Sequence[bool]) -> float:
    """pass@1 averaged over the n samples of one problem."""
    return sum(correct) / len(correct)


def answer_classes(answers: Sequence[str | None], equivalent: Callable[[str, str], bool]) -> list[list[int]]:
    """Greedy equivalence classes of the answers (indices), in order of first appearance.

    A sample joins the first class whose representative it is equivalent to; samples with no answer
    abstain (they belong to no class).
    """
    classes: list[list[int]] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        for members in classes:
            if equivalent(answer, answers[members[0]]):
                members.append(i)
                break
        else:
            classes.append([i])
    return classes


def maj_at_k(
    answers: Sequence[str | None], correct: Sequence[bool], k: int, equivalent: Callable[[str, str], bool]
) -> bool:
    """Majority vote over the first k samples by answer equivalence (not raw strings).

    Ties go to the class seen first; the vote is right if its first member was graded correct.
    """
    return majority_is_correct(answer_classes(answers[:k], equivalent), correct, k)


def majority_is_correct(classes: list[list[int]], correct: Sequence[bool], k: int) -> bool:
    """maj@k from `answer_classes` of all samples: the classes restricted to the first k samples are
    exactly the greedy classes of those k, since a sample's class depends only on earlier samples."""
    prefix = [members for members in ([i for i in c if i < k] for c in classes) if members]
    if not prefix:
        return False
    best = max(prefix, key=len)  # max keeps the first of equally large classes
    return bool(correct[best[0]])


def bootstrap_ci(
    values: Sequence[float], resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over problems."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo = means[int((1 - level) / 2 * resamples)]
    hi = means[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return (lo, hi)
