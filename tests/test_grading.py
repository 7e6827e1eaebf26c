import contextlib
import os
import signal
import threading

import pytest

from rltune.eval.grading import GradingPool, extract_boxed, grade, grade_many, is_hedged, normalize_answer


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


@contextlib.contextmanager
def one_stopped_worker(timeout_s: float):
    """A pool of one worker, stopped (SIGSTOP) before its first check, so that no check can be answered
    however fast the machine is (a worker that answered within 0.3 s once made a test here fail). The
    worker is killed at the end even when the test fails: a stopped process never sees its stdin close."""
    pool = GradingPool(workers=1, timeout_s=timeout_s)
    first = pool._take()
    pool._idle.put(first)
    os.kill(first.process.pid, signal.SIGSTOP)
    try:
        yield pool, first
    finally:
        first.process.kill()
        pool.close()


def test_hard_timeout_kills_and_replaces_the_worker():
    # The stopped worker's check times out: it counts as wrong, the worker is killed, and the pool keeps
    # working afterwards.
    with one_stopped_worker(timeout_s=0.01) as (pool, first):
        assert pool.check("12", "12") is False
        assert pool.timeouts == 1
        assert first.process.wait(timeout=5) is not None  # the stuck worker is gone, not left running
        pool.timeout_s = 60
        assert pool.check("12", "12") is True
        assert pool._all[0] is not first


def test_a_worker_that_dies_mid_check_counts_wrong_and_is_replaced(caplog):
    """Killed with a check in hand: the answer counts as wrong, the error is counted and logged, and a fresh
    worker takes the next check."""
    with one_stopped_worker(timeout_s=60) as (pool, first):
        killer = threading.Timer(0.3, first.process.kill)
        killer.start()
        try:
            assert pool.check("12", "12") is False
            assert pool.errors == 1 and pool.timeouts == 0
            assert "grading worker died (counted wrong): answer='12' gold='12'" in caplog.text
            assert pool.check("12", "12") is True
            assert pool._all == [pool._all[0]] and pool._all[0] is not first
        finally:
            killer.cancel()


def test_grader_workers_live_in_their_own_session_and_end_with_the_pool():
    """Ctrl-C in a terminal reaches the terminal's process group: the trainer gets it and stops the
    workers itself, instead of every worker dying mid-check."""
    pool = GradingPool(workers=2)
    try:
        assert grade_many(["\\boxed{1}", "\\boxed{2}"], ["1", "3"], pool=pool) == [True, False]
        workers = list(pool._all)
        assert workers and all(os.getsid(w.process.pid) != os.getsid(0) for w in workers)
    finally:
        pool.close()
    assert all(w.process.poll() is not None for w in workers)


# EVAL_NOTES.md §2.4 and §3, each pitfall with the verdict rltune's grader gives (gold, response, verdict).
PITFALLS = [
    ("025", "\\boxed{25}", True),  # AIME zero padding
    ("27.0", "\\boxed{27}", True),  # AMC float gold
    ("2125", "\\boxed{2,125}", True),  # thousands separator
    ("58,500", "\\boxed{58500}", True),
    ("\\frac12", "\\boxed{1/2}", True),
    ("\\frac12", "\\boxed{0.5}", True),
    ("\\frac{1}{2}", "\\boxed{\\dfrac{1}{2}}", True),
    ("\\frac{1}{2}", "\\boxed{\\tfrac12}", True),
    ("\\frac{14}{3}", "\\boxed{4.67}", False),  # rounding stays strict
    ("\\frac{\\sqrt3}{2}", "\\boxed{0.866}", False),
    ("(6,31,-1)", "\\boxed{(31,6,-1)}", False),  # tuple order matters
    ("-2,1", "\\boxed{1,-2}", True),  # unordered answer list
    ("(0,1]", "\\boxed{[0,1]}", False),  # interval openness
    ("0<x<1", "\\boxed{(0,1)}", True),  # inequality gold, interval answer
    ("(0,1)", "\\boxed{0<x<1}", False),  # ... not the reverse (echoing the question)
    ("10", "\\boxed{10 \\text{ cm}}", True),  # units
    ("90^\\circ", "\\boxed{90}", True),
    ("\\$18", "\\boxed{18.00}", True),
    ("10\\%", "\\boxed{10}", True),  # percent gold accepts the bare number
    ("50\\%", "\\boxed{0.5}", False),  # ... but no blanket /100 rule
    ("\\text{(C)}", "\\boxed{C}", True),  # multiple choice
    ("\\text{(C)}", "\\boxed{D}", False),
    ("3", "\\boxed{1} or \\boxed{3}", False),  # hedging
    ("3", "\\boxed{1, 3}", False),
    ("18", "\\boxed{18} then \\boxed{20}", False),  # last box counts
    ("12", "\\boxed{12}. Earlier I wrote \\boxed{7}", False),
    ("4.5e33", "\\boxed{4.5\\times10^{33}}", True),  # Minerva e-notation (Euler's e otherwise)
    ("1e-5", "\\boxed{10^{-5}}", True),
    ("\\frac{1}{2^{99}}", "\\boxed{\\frac{1}{2^{98}}}", False),  # tiny numbers (math-verify: True)
    ("\\frac1{2004!}", "\\boxed{\\frac1{2006!}}", False),  # (math-verify: True)
    ("\\frac{1}{2^{99}}", "\\boxed{2^{-99}}", True),
    ("1-\\frac{1}{\\mathrm{e}}", "\\boxed{1+\\frac{1}{\\mathrm{e}}}", False),  # \\mathrm{e} truncation
    ("1-\\frac{1}{\\mathrm{e}}", "\\boxed{1-e^{-1}}", True),
    ("3x-y+13=0", "\\boxed{3x+4y+14=0}", False),  # bare equations
    ("12", "<think>\\boxed{12}</think> so \\boxed{13}", False),  # box inside <think> ignored
    ("12", "<think>\\boxed{13}</think> so \\boxed{12}", True),
]


def test_pitfalls():
    """One test over the whole table (not one per row): any grader change meets every pitfall at once."""
    got = grade_many([r for _, r, _ in PITFALLS], [g for g, _, _ in PITFALLS])
    wrong = [(gold, response, expected) for (gold, response, expected), v in zip(PITFALLS, got) if v is not expected]
    assert not wrong


def test_hedge_detection():
    assert is_hedged("\\boxed{1} or \\boxed{3}")
    assert not is_hedged("\\boxed{3} or \\boxed{3}")
    assert not is_hedged("first \\boxed{1}, and after a long derivation of many words we get \\boxed{3}")


def test_normalize_answer():
    assert normalize_answer("4.5e33") == "4.5\\times10^{33}"
    assert normalize_answer("x2e3") == "x2e3"
    assert normalize_answer("\\frac{1}{\\mathrm{e}}") == "\\frac{1}{e}"
    assert normalize_answer("\\operatorname{e}^2") == "e^2"
    # every rewrite the docstring promises: a number written inside text keeps its unit's words
    assert normalize_answer("\\text{5 cm}") == "5\\text{ cm}"
    assert normalize_answer("\\mbox{3 apples}") == "3\\text{ apples}"
    assert normalize_answer("\\varnothing") == "\\emptyset"


# Thousands separators and a sentence's punctuation inside the box: the false positives first (groups
# read as a product or a sum), then the false negatives.
SEPARATORS = [
    (r"\boxed{12\,345}", "357", False),  # was True: 12 x 345... or 12 + 345
    (r"\boxed{1\,000\,000}", "0", False),
    (r"\boxed{12\,345}", "4140", False),
    (r"\boxed{10\,000}", "10000", True),
    (r"\boxed{1{,}000}", "1000", True),
    (r"\boxed{1\,000\,000}", "1000000", True),
    (r"\boxed{10 000}", "10000", True),
    (r"\boxed{12345}", r"12\,345", True),  # a gold written with separators
    (r"\boxed{42.}", "42", True),
    (r"\boxed{42,}", "42", True),
    (r"\boxed{\frac{1}{3}.}", r"\frac{1}{3}", True),
    (r"\boxed{42.}", "43", False),
    (r"\boxed{1\,23}", "123", False),  # two digits after the space: no thousands group
]


@pytest.mark.parametrize("response, gold, expected", SEPARATORS)
def test_thousands_separators_and_trailing_punctuation(response, gold, expected):
    assert grade(response, gold) is expected


def test_normalize_answer_separators():
    assert normalize_answer(r"12\,345\,678") == "12345678"
    assert normalize_answer("3.14") == "3.14"  # decimals untouched
    assert normalize_answer("(1, 2)") == "(1, 2)"
    assert normalize_answer(r"\frac{1}{3}.") == r"\frac{1}{3}"
    assert normalize_answer("1, 2, 3, \\ldots") == "1, 2, 3, \\ldots"


@pytest.mark.parametrize(
    "text",
    ["\\boxed 5 " * 40000, "\\boxed{1}" * 40000, "\\boxedx" * 50000, "\\boxed{" * 50000, "\\fbox{2} " * 40000],
    ids=["spaced", "closed", "no-brace", "open", "fbox"],
)
def test_box_search_is_linear_on_pathological_responses(text):
    """These took 14-63 s each when every box rescanned the rest of the text; the whole text is searched
    here (not only the answer region extract_boxed reads), within the issue's 5 s per call."""
    import time

    from rltune.eval.grading import _boxes

    started = time.perf_counter()
    boxes = _boxes(text)
    assert time.perf_counter() - started < 5.0
    started = time.perf_counter()
    extract_boxed(text), is_hedged(text)
    assert time.perf_counter() - started < 5.0
    assert (len(boxes) > 1000) == (not text.startswith(("\\boxedx", "\\boxed{\\boxed")))


@pytest.mark.parametrize(
    "response, gold, expected",
    [
        ("The answer is $1/3.$", "1", False),  # was True: the first number of the unparsed span
        ("The answer is $1/3.$", "1/3", True),
        ("The answer is $2^{10}.$", "2", False),
        ("The answer is $2^{10}.$", "1024", True),
        (r"so it is \[\frac{1}{3}.\]", r"\frac{1}{3}", True),
        ("The final answer is 7.", "7", True),
    ],
)
def test_unboxed_fallback_reads_the_whole_expression(response, gold, expected):
    assert grade(response, gold, fallback=True) is expected


@pytest.mark.parametrize(
    "response, gold, expected",
    [
        (r"The roots are \boxed{2} and \boxed{3}.", "2, 3", True),
        (r"\boxed{1},\boxed{2},\boxed{3}", r"\{1,2,3\}", True),
        (r"\boxed{3}, \boxed{1} and \boxed{2}", r"\{1,2,3\}", True),  # a set: any order
        (r"$\boxed{2}$ and $\boxed{3}$", "2, 3", True),
        (r"\boxed{2} and \boxed{4}", "2, 3", False),
        (r"\boxed{2}", "2, 3", False),  # half the answer
        (r"\boxed{2} or \boxed{3}", "2, 3", False),  # offered as alternatives
        (r"\boxed{1} or \boxed{3}", "3", False),  # the hedge guard for a single value stays
        (r"first \boxed{7}, then after much more work we find \boxed{2} and \boxed{3}", "2, 3", True),
        (r"\boxed{2} and \boxed{3}", "(2, 3)", False),  # a point is one value: the last box alone
    ],
)
def test_several_boxes_answer_a_multi_valued_gold_together(response, gold, expected):
    assert grade(response, gold) is expected


def test_multi_valued_golds():
    from rltune.eval.grading import is_multi_valued, listed_answer

    assert is_multi_valued("2, 3") and is_multi_valued(r"\{1,2,3\}") and is_multi_valued(r"\left\{1, 2\right\}")
    assert not is_multi_valued("(1, 2)") and not is_multi_valued("[0, 1)") and not is_multi_valued(r"\frac{1}{2}")
    # one set: an interval and a point (only a brace around the whole gold encloses a list)
    assert not is_multi_valued(r"(0, 1) \cup \{3\}") and not is_multi_valued(r"\{3\} \cup (0, 1)")
    assert listed_answer(r"\boxed{1} and \boxed{2}") == "1, 2"
    assert listed_answer(r"\boxed{1} or \boxed{2}") is None and listed_answer(r"\boxed{1}") is None
    # a set in plain braces lists values; a union of two sets is one value, whichever braces it is written in
    assert is_multi_valued("{2,4,6}") and is_multi_valued(r"\{ 2, 4 \}")
    assert not is_multi_valued("{1, 2} \\cup {3, 4}") and not is_multi_valued(r"\{1, 2\} \cup \{3, 4\}")
    # boxes listed in words and spacing join; any other word (a candidate, a step on from a result) parts them
    assert listed_answer(r"$x = \boxed{1} \quad \text{and} \quad y = \boxed{2}$") == "1, 2"
    assert listed_answer(r"For the first part, \boxed{1}, and for the second part, \boxed{2}.") == "1, 2"
    assert listed_answer(r"(a) \boxed{1} (b) \boxed{2} (c) \boxed{3}") == "1, 2, 3"
    assert listed_answer(r"\boxed{1}, or maybe \boxed{2}") is None
    assert listed_answer(r"so $x = \boxed{4}$. Then the answer is \boxed{8}") is None
    assert listed_answer(r"\boxed{4}, so the answer is \boxed{8}") is None


def test_a_library_named_file_in_the_working_folder_cannot_replace_the_graders(tmp_path):
    """A math_verify.py beside the user's script made every answer wrong, silently: the workers imported it."""
    import subprocess
    import sys

    (tmp_path / "math_verify.py").write_text("raise ImportError('not the real math-verify')\n")
    code = "from rltune.eval.grading import grade; print(grade(r'\\boxed{\\frac{1}{2}}', '0.5'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr[-2000:]


def test_grading_failures_are_counted_and_logged_at_warning(tmp_path, caplog):
    """When the workers cannot check answers (here: a broken math_verify put on their path on purpose),
    every failed check is counted and logged at WARNING."""

    (tmp_path / "math_verify.py").write_text("raise ImportError('broken on purpose')\n")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), old]))
    pool = GradingPool(workers=1)
    try:
        assert grade(r"\boxed{2}", "2", pool=pool) is False
        assert grade(r"\boxed{3}", "3", pool=pool) is False
    finally:
        pool.close()
        os.environ.pop("PYTHONPATH") if old is None else os.environ.__setitem__("PYTHONPATH", old)
    assert pool.errors == 2
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "grading failed" in r.getMessage()]
    assert len(warnings) == 2 and "broken on purpose" in warnings[0].getMessage()


def test_the_agreement_benchmark_cases_all_hold():
    """benchmarks/grader_agreement.py's cases (every class of grader error found so far), as a regression."""
    import importlib.util

    from conftest import REPO
    from rltune.eval.grading import grade_many

    spec = importlib.util.spec_from_file_location("grader_agreement", REPO / "benchmarks" / "grader_agreement.py")
    cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cases)
    for table, fallback in ((cases.CASES, False), (cases.FALLBACK_CASES, True)):
        got = grade_many([r for r, _, _ in table], [g for _, g, _ in table], fallback=fallback)
        wrong = [(r, g, e) for (r, g, e), v in zip(table, got) if v is not e]
        assert not wrong


@pytest.mark.parametrize(
    "answer, gold, equal, decided_early",
    [
        (r"\sum_{n=1}^{\infty} \frac{1}{n^2}", r"\sum_{n=2}^{\infty} \frac{1}{n^2}", False, True),
        (r"\sum_{k=1}^{n} \binom{n}{k}", r"\sum_{k=0}^{n} \binom{n}{k}", False, True),
        (r"\sum_{k=1}^{100} \frac{1}{k(k+1)}", r"\frac{99}{100}", False, True),
        (r"\sum_{n=1}^{\infty} \frac{1}{n^2}", r"\frac{\pi^2}{6}", True, True),  # two constants
        (r"\int_0^1 x\,dx", r"\frac{1}{2}", True, True),
        (r"\sum_{k=0}^{n} k", r"\sum_{k=1}^{n} k", True, False),  # equal in n: math-verify decides
        (r"\sum_{k=1}^{n} k", r"\frac{n(n+1)}{2}", True, False),
    ],
)
def test_costly_comparisons_are_decided_numerically(answer, gold, equal, decided_early, monkeypatch):
    """Sums, products, integrals and limits that differ are told apart by their values at a few points, and two
    such constants that agree to 12 digits are equal, before math-verify's symbolic simplification (seconds
    for two sums that differ in a bound); expressions in a variable that agree still go to math-verify."""
    import math_verify

    from rltune.eval.grading import _verify

    calls = []
    real = math_verify.verify
    monkeypatch.setattr(math_verify, "verify", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert _verify(answer, gold) is equal
    assert bool(calls) is not decided_early


def test_the_other_harness_script_scores_saved_completions_and_names_each_disagreement(tmp_path):
    """benchmarks/other_harness.py on a results.json written by hand: lighteval's metric (rebuilt on
    math-verify) reads the unboxed answer rltune leaves wrong, and agrees on the boxed ones."""
    import importlib.util
    import json

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("other_harness", REPO / "benchmarks" / "other_harness.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    samples = [
        {"text": "so \\boxed{\\frac{1}{2}}", "answer": "\\frac{1}{2}", "correct": True},
        {"text": "The answer is 0.5", "answer": None, "correct": False},
        {"text": "\\boxed{3}", "answer": "3", "correct": False},
        {"text": "\\boxed{0.5} or \\boxed{2}", "answer": "2", "correct": False},
    ]
    results = {"settings": {"n": 4, "k": [1, 4]}, "benchmarks": {"math500": {"problems": [
        {"gold": "\\frac{1}{2}", "samples": samples}]}}}  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(results))
    report = script.compare(tmp_path)["math500"]
    assert report["samples"] == 4 and report["verdicts_agree"] == 0.75
    assert report["disagreements"] == {"unboxed": 1}  # the hedge is wrong for both (lighteval: the set {0.5, 2})
    assert report["pass@1"] == (0.25, 0.5) and report["pass@4"] == (1.0, 1.0)
