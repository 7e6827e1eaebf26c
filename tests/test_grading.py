import pytest

from rltune.eval.grading import GradingPool, extract_boxed, grade, grade_many


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{12}", "12"),
        ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\sqrt{\\frac{a}{b}}} done", "\\sqrt{\\frac{a}{b}}"),
        ("<think>\\boxed{3}</think> answer \\boxed{4}", "4"),
        ("<think>\\boxed{3}</think> no box after", None),
        ("\\fbox{7}", "7"),
        ("$\\boxed 5$", "5"),
        ("\\boxed{unclosed", None),
        ("no box", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "response, gold, expected",
    [
        ("\\boxed{12}", "12", True),
        ("\\boxed{13}", "12", False),
        ("\\boxed{\\frac{1}{2}}", "0.5", True),
        ("\\boxed{2,125}", "2125", True),
        ("\\boxed{25}", "025", True),
        ("12", "12", False),  # no box: wrong
        ("\\boxed{}", "1", False),
    ],
)
def test_grade(response, gold, expected):
    assert grade(response, gold) is expected


def test_grade_many_keeps_order():
    responses = [f"\\boxed{{{i}}}" for i in range(10)]
    golds = [str(i if i % 2 else i + 1) for i in range(10)]
    assert grade_many(responses, golds) == [bool(i % 2) for i in range(10)]


def test_hard_timeout_kills_and_replaces_the_worker():
    # A fresh worker needs far longer than 10 ms to import math-verify, so the first check times out:
    # the answer counts as wrong, the worker is killed, and the pool keeps working afterwards.
    pool = GradingPool(workers=1, timeout_s=0.01)
    try:
        assert pool.check("12", "12") is False
        assert pool.timeouts == 1
        pool.timeout_s = 60
        assert pool.check("12", "12") is True
    finally:
        pool.close()
