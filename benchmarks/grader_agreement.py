"""How often rltune's grader gives the clear-cut verdict, over cases written for this project.

The cases cover the kinds of check the public grader test suites exercise (math-verify's tests, NeMo-Skills'
math_equal tests, the MATH dataset's equivalence tests, verl's reward tests): numbers in their many
notations, fractions, radicals, percentages, units and text wrappers, intervals, sets and tuples,
equations, several boxes, hedges, thinking traces, the unboxed fallback, and malformed or hostile answers.
Each case is (response, gold, verdict a careful human grader gives); a case is written here, not copied
from those suites. Prints the agreement, the time of the slowest call, and every disagreement.

    python benchmarks/grader_agreement.py
"""

from __future__ import annotations

import time

B = "\\boxed{{{}}}".format

# (response, gold, expected): the verdict a careful grader gives
CASES: list[tuple[str, str, bool]] = [
    # integers and signs
    (B("42"), "42", True),
    (B("042"), "42", True),
    (B("-7"), "-7", True),
    (B("- 7"), "-7", True),
    (B("7"), "-7", False),
    (B("+5"), "5", True),
    (B("41"), "42", False),
    (B("0"), "0", True),
    (B("-0"), "0", True),
    # decimals and rounding
    (B("0.5"), "0.5", True),
    (B(".5"), "0.5", True),
    (B("0.50"), "0.5", True),
    (B("2.0"), "2", True),
    (B("3.14"), "3.15", False),
    (B("0.333"), "1/3", False),
    (B("1.25"), "5/4", True),
    # fractions
    (B("\\frac{1}{2}"), "0.5", True),
    (B("\\dfrac{3}{4}"), "\\frac{3}{4}", True),
    (B("\\tfrac{3}{4}"), "0.75", True),
    (B("3/4"), "\\frac{3}{4}", True),
    (B("\\frac{6}{8}"), "\\frac{3}{4}", True),
    (B("\\frac{4}{3}"), "\\frac{3}{4}", False),
    (B("\\frac12"), "\\frac{1}{2}", True),
    (B("-\\frac{1}{2}"), "\\frac{-1}{2}", True),
    (B("\\frac{-1}{2}"), "-0.5", True),
    (B("1\\frac{1}{2}"), "\\frac{3}{2}", True),
    # thousands separators and punctuation in the box
    (B("10,000"), "10000", True),
    (B("10\\,000"), "10000", True),
    (B("10{,}000"), "10000", True),
    (B("1\\,000\\,000"), "1000000", True),
    (B("12\\,345"), "357", False),
    (B("12\\,345"), "4140", False),
    (B("1\\,000\\,000"), "0", False),
    (B("42."), "42", True),
    (B("\\frac{1}{3}."), "\\frac{1}{3}", True),
    # radicals, pi, powers
    (B("\\sqrt{2}"), "\\sqrt{2}", True),
    (B("2\\sqrt{2}"), "\\sqrt{8}", True),
    (B("\\sqrt{8}"), "2\\sqrt{2}", True),
    (B("\\frac{\\sqrt{3}}{2}"), "\\frac{\\sqrt3}{2}", True),
    (B("\\frac{1}{\\sqrt{2}}"), "\\frac{\\sqrt{2}}{2}", True),
    (B("\\sqrt{3}"), "\\sqrt{2}", False),
    (B("2\\pi"), "2\\pi", True),
    (B("\\pi"), "3.14", False),
    (B("6.28"), "2\\pi", False),
    (B("2^{10}"), "1024", True),
    (B("2^10"), "1024", True),
    (B("10^{3}"), "1000", True),
    (B("e^{2}"), "e^2", True),
    (B("3^{2}"), "6", False),
    # scientific notation
    (B("4.5\\times10^{3}"), "4500", True),
    (B("4.5 \\times 10^3"), "4.5e3", True),
    (B("4.5e3"), "4500", True),
    (B("4.5\\times10^{-3}"), "0.0045", True),
    (B("4.5\\times10^{3}"), "450", False),
    # percentages
    (B("50\\%"), "50\\%", True),
    (B("50"), "50\\%", True),
    (B("50\\%"), "50", True),
    (B("0.5"), "50\\%", False),
    (B("25\\%"), "50\\%", False),
    # text, units and wrappers
    (B("\\text{5 cm}"), "5", True),
    (B("5\\text{ cm}"), "5", True),
    (B("5 \\text{ meters}"), "5", True),
    (B("\\$5"), "5", True),
    (B("\\$5.00"), "5", True),
    (B("5^\\circ"), "5", True),
    (B("30^{\\circ}"), "30", True),
    (B("\\mathbf{7}"), "7", True),
    (B("\\textbf{7}"), "7", True),
    (B("\\mbox{7}"), "7", True),
    (B("\\text{(B)}"), "B", True),
    (B("B"), "B", True),
    (B("C"), "B", False),
    (B("\\text{yes}"), "yes", True),
    (B("\\text{no}"), "yes", False),
    # variables and equations
    (B("x=3"), "3", True),
    (B("x = 3"), "x=3", True),
    (B("3"), "x=3", True),
    (B("y=3"), "3", True),
    (B("x=4"), "3", False),
    (B("x^2+2x+1"), "(x+1)^2", True),
    (B("2x+2"), "2(x+1)", True),
    (B("x^2-1"), "(x-1)(x+1)", True),
    (B("x^2+1"), "(x+1)^2", False),
    (B("\\frac{x}{2}"), "0.5x", True),
    (B("a+b"), "b+a", True),
    (B("a-b"), "b-a", False),
    # intervals, sets, tuples
    (B("(1,2)"), "(1,2)", True),
    (B("(1, 2)"), "(1,2)", True),
    (B("(2,1)"), "(1,2)", False),
    (B("[0,1)"), "[0,1)", True),
    (B("[0,1]"), "[0,1)", False),
    (B("(-\\infty, 3]"), "(-\\infty,3]", True),
    (B("(-\\infty, 3)"), "(-\\infty,3]", False),
    (B("\\{1,2,3\\}"), "\\{1,2,3\\}", True),
    (B("\\{3,2,1\\}"), "\\{1,2,3\\}", True),
    (B("\\{1,2\\}"), "\\{1,2,3\\}", False),
    (B("1,2,3"), "\\{1,2,3\\}", True),
    (B("2, 3"), "2, 3", True),
    (B("3, 2"), "2, 3", True),
    (B("2"), "2, 3", False),
    # several boxes that answer together; hedges
    ("The roots are \\boxed{2} and \\boxed{3}.", "2, 3", True),
    ("\\boxed{1},\\boxed{2},\\boxed{3}", "\\{1,2,3\\}", True),
    ("\\boxed{2} and \\boxed{4}", "2, 3", False),
    ("\\boxed{2} or \\boxed{3}", "2, 3", False),
    ("\\boxed{1} or \\boxed{3}", "3", False),
    ("\\boxed{3} or \\boxed{3}", "3", True),
    ("First I got \\boxed{5}, but rechecking the whole computation carefully gives \\boxed{7}.", "7", True),
    ("First I got \\boxed{7}, but rechecking the whole computation carefully gives \\boxed{5}.", "7", False),
    # several boxes against a gold written as a plain list: boxes apart by words or spacing, tuples, plain-brace
    # sets, named values; the hedge guard stays
    ("So $x = \\boxed{2} \\quad \\text{and} \\quad y = \\boxed{3}$.", "2, 3", True),
    ("$\\boxed{-1} \\qquad \\boxed{4}$", "-1, 4", True),
    ("For the first part, \\boxed{12}, and for the second part, \\boxed{5}.", "12, 5", True),
    ("For the first part, \\boxed{12}, and for the second part, \\boxed{6}.", "12, 5", False),
    ("The solutions are \\boxed{(1, 4)} and \\boxed{(5, 2)}.", "(1, 4), (5, 2)", True),
    ("The solutions are \\boxed{(1, 4)} and \\boxed{(2, 5)}.", "(1, 4), (5, 2)", False),
    ("\\boxed{2}, \\boxed{4}, \\boxed{6}", "{2,4,6}", True),
    (B("2, 4, 6"), "{2,4,6}", True),
    (B("\\{2, 4, 6\\}"), "{2,4,6}", True),
    ("\\boxed{2}, \\boxed{4}, \\boxed{8}", "{2,4,6}", False),
    ("$a = \\boxed{3}$ and $b = \\boxed{7}$", "a = 3, b = 7", True),
    ("\\boxed{3} and \\boxed{-5}", "x_1 = 3, x_2 = -5", True),
    ("\\boxed{3} and \\boxed{5}", "x_1 = 3, x_2 = -5", False),
    ("Guessing: \\boxed{2}, or maybe \\boxed{3}.", "2, 3", False),
    ("\\boxed{2} \\quad \\text{and} \\quad \\boxed{3}", "3", False),
    ("For the first part, \\boxed{3}, and for the second part, \\boxed{3}.", "3", True),
    # named equations against expanded forms: equal right-hand sides are equal answers
    ("$y = \\boxed{(x+1)^2}$", "y=x^{2}+2x+1", True),
    (B("y = (x+1)^2"), "y=x^{2}+2x+1", True),
    (B("y = (x-1)^2"), "y=x^{2}+2x+1", False),
    (B("x^2+2x+1"), "y = (x+1)^2", True),
    ("$a = \\boxed{2x}$, $b = \\boxed{(x+1)^2}$", "a=x+x, b=x^2+2x+1", True),
    (B("a = 2x, b = x^2+2x+1"), "a = x + x, b = (x+1)^2", True),
    (B("a = 2x, b = x^2+1"), "a = x + x, b = (x+1)^2", False),
    # comparisons sympy's simplification takes seconds over, told apart by their values
    (B("\\{1, 2, 3\\}"), "\\{4, 5, 6\\}", False),
    (B("\\{x=1, x=2, x=3\\}"), "\\{x=4, x=5, x=6\\}", False),
    (B("\\sum_{n=1}^{\\infty} \\frac{1}{n^2}"), "\\sum_{n=2}^{\\infty} \\frac{1}{n^2}", False),
    (B("\\sum_{n=1}^{\\infty} \\frac{1}{n^2}"), "\\frac{\\pi^2}{6}", True),
    (B("\\sum_{k=1}^{n} \\binom{n}{k}"), "\\sum_{k=0}^{n} \\binom{n}{k}", False),
    (B("\\sum_{k=1}^{n} k"), "\\frac{n(n+1)}{2}", True),
    (B("\\sum_{k=0}^{n} k"), "\\sum_{k=1}^{n} k", True),
    (B("\\sum_{k=1}^{100} \\frac{1}{k(k+1)}"), "\\frac{100}{101}", True),
    # a mixed number is one value
    (B("2\\frac{3}{5}"), "\\frac{13}{5}", True),
    (B("2\\frac{3}{5}"), "2", False),
    (B("2 \\frac{3}{5}"), "2.6", True),
    (B("2 3/5"), "13/5", True),
    (B("2 3/5"), "2", False),
    (B("-1\\frac{1}{2}"), "-1.5", True),
    # where the answer is
    ("Therefore the answer is \\boxed{12}.", "12", True),
    ("\\boxed{12} is wrong; the answer is 13", "13", False),
    ("<think>maybe \\boxed{12}</think> so \\boxed{13}", "13", True),
    ("<think>\\boxed{13}</think> so \\boxed{12}", "13", False),
    ("\\fbox{9}", "9", True),
    ("\\boxed 9", "9", True),
    ("$\\boxed{9}$", "9", True),
    ("\\boxed{\\boxed{9}}", "9", True),
    ("The answer is 9.", "9", False),  # no box: wrong outside the fallback
    ("", "9", False),
    ("\\boxed{}", "9", False),
    ("\\boxed{9", "9", False),
    # a missing or unusual gold
    ("\\boxed{None}", "None", False),
    ("\\boxed{0}", "", False),
    ("\\boxed{\\text{None}}", "", False),
    # complex numbers, infinity, empty set, ratios, functions
    (B("1+i"), "i+1", True),
    (B("1-i"), "1+i", False),
    (B("2i"), "2i", True),
    (B("\\infty"), "\\infty", True),
    (B("-\\infty"), "\\infty", False),
    (B("\\emptyset"), "\\varnothing", True),
    (B("\\sin x"), "\\sin(x)", True),
    (B("\\cos x"), "\\sin x", False),
    (B("\\log_2 8"), "3", True),
    (B("\\binom{5}{2}"), "10", True),
    (B("5!"), "120", True),
    (B("\\frac{\\pi}{2}"), "\\frac{\\pi}{2}", True),
    (B("\\frac{\\pi}{3}"), "\\frac{\\pi}{2}", False),
    (B("x \\in [1,2]"), "[1,2]", True),
    (B("5\\text{ inches}"), "5", True),
    (B("5 \\mathrm{cm}"), "5", True),
    (B("\\$ 5"), "5", True),
    (B("\\text{(A)}"), "A", True),
    (B("(A)"), "A", True),
    (B("A"), "\\text{(A)}", True),
    (B("\\frac{a}{b}"), "a/b", True),
    (B("\\sqrt[3]{8}"), "2", True),
    (B("|-3|"), "3", True),
    (B("\\lfloor 2.5 \\rfloor"), "2", True),
    (B("\\dfrac{1}{2}\\cdot 4"), "2", True),
    (B("2\\cdot 3"), "6", True),
    (B("2 \\times 3"), "6", True),
    (B("\\pm 2"), "2", False),
    # matrices and vectors
    (B("\\begin{pmatrix}1\\\\2\\end{pmatrix}"), "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
    (B("\\begin{pmatrix}2\\\\1\\end{pmatrix}"), "\\begin{pmatrix}1\\\\2\\end{pmatrix}", False),
    # hostile or malformed predictions
    (B("\\frac{1}{0}"), "1", False),
    (B("x" * 200), "1", False),
    (B("9" * 60), "1", False),
    (B("\\sqrt{\\sqrt{\\sqrt{\\sqrt{2}}}}"), "2", False),
    (B("1/0"), "0", False),
    (B("{{{{1}}}}"), "1", True),
    (B("\\left(1,2\\right)"), "(1,2)", True),
    (B("\\displaystyle\\frac{1}{2}"), "\\frac{1}{2}", True),
]

# The unboxed fallback (`rltune eval --answer-fallback`): graded with fallback=True
FALLBACK_CASES: list[tuple[str, str, bool]] = [
    ("The final answer is 7.", "7", True),
    ("The answer is $1/3.$", "1", False),
    ("The answer is $1/3.$", "1/3", True),
    ("The answer is $2^{10}.$", "2", False),
    ("The answer is $2^{10}.$", "1024", True),
    ("so the answer is $\\frac{3}{4}$", "0.75", True),
    ("Answer: 12", "12", True),
    ("Answer: 12", "13", False),
    ("I cannot solve this.", "12", False),
    # a mixed number is one value, never its integer part
    ("The answer is 2 3/5.", "2", False),
    ("The answer is 2 3/5.", "13/5", True),
    ("The answer is 2 3/5 cups.", "2.6", True),
    ("The answer is $2\\frac{3}{5}$.", "2", False),
    ("The answer is $2\\frac{3}{5}$.", "\\frac{13}{5}", True),
    ("The answer is 7 1/4", "7", False),
]


def main() -> None:
    from rltune.eval.grading import default_pool, grade

    default_pool().check("1", "1")  # start the workers before timing
    disagreements, times = [], []
    for cases, fallback in ((CASES, False), (FALLBACK_CASES, True)):
        for response, gold, expected in cases:
            started = time.perf_counter()
            got = grade(response, gold, fallback=fallback)
            times.append((time.perf_counter() - started, response, gold))
            if got is not expected:
                disagreements.append((response, gold, expected, fallback))
    total = len(CASES) + len(FALLBACK_CASES)
    agreed = total - len(disagreements)
    seconds = sorted(t for t, _, _ in times)
    median, p95 = seconds[len(seconds) // 2], seconds[int(0.95 * (len(seconds) - 1))]
    print(f"agreement: {agreed}/{total} = {100 * agreed / total:.1f}%")
    print(f"seconds a call: median {median:.3f}, 95th percentile {p95:.3f}, slowest {seconds[-1]:.3f}")
    for spent, response, gold in sorted(times, reverse=True)[:5]:
        print(f"  {spent:.3f}s response={response!r} gold={gold!r}")
    for response, gold, expected, fallback in disagreements:
        print(f"  expected {expected}: response={response!r} gold={gold!r}" + (" (fallback)" if fallback else ""))


if __name__ == "__main__":
    main()
