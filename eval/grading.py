"""The project's one answer grader: last `\\boxed{}` + math-verify, in worker processes with a hard timeout.

`grade(response, gold)` is used by the trainer's `math_accuracy` reward and by the eval harness.
math-verify's own timeouts use `signal.alarm`, which only works in a main thread and cannot stop a
parse that hangs in C code, so each check runs in a worker process; a worker that does not answer
within the timeout is killed and replaced, and the answer counts as wrong (logged).
"""

from __future__ import annotations

import atexit
import cmath
import json
import logging
import queue
import re
import select
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
_BOX_COMMANDS = ("\\boxed", "\\fbox")


# The answer is at the end of a response: only this many characters before its end (after `</think>`) are
# searched for boxes, so that a pathological response cannot stall the caller.
MAX_SCAN_CHARS = 20_000
_BOX_START = re.compile(r"\\(?:boxed|fbox)")
_SPACE_TOKEN = re.compile(r"\s*([^\s$]+)")


def _after_think(text: str) -> str:
    return text.rsplit("</think>", 1)[1] if "</think>" in text else text


def _answer_region(text: str) -> str:
    return _after_think(text)[-MAX_SCAN_CHARS:]


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every `\\boxed{...}` / `\\fbox{...}` (brace-balanced) and `\\boxed 5`, in one
    pass over the text (boxes nested in a box are part of its content)."""
    found: list[tuple[int, int, str]] = []
    inside_until = 0
    for match in _BOX_START.finditer(text):
        start, i = match.start(), match.end()
        if start < inside_until:
            continue
        if text.startswith(" ", i):  # `\\boxed 5`: one token, up to a space or `$`
            token = _SPACE_TOKEN.match(text, i + 1)
            if token:
                found.append((start, token.end(), token.group(1)))
            continue
        if not text.startswith("{", i):
            continue
        depth = 0
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                found.append((start, j + 1, text[i + 1 : j].strip()))
                inside_until = j + 1
                break
        else:  # unbalanced: nothing after this can be a complete box
            return found
    return found


def extract_boxed(text: str) -> str | None:
    """Content of the last brace-balanced `\\boxed{...}` or `\\fbox{...}`; after `</think>` if present, within
    the last MAX_SCAN_CHARS characters.

    `\\boxed 5` (no braces) yields '5'. Returns None when there is no box.
    """
    boxes = _boxes(_answer_region(text))
    return boxes[-1][2] if boxes else None


# Two different boxed answers this close together ("\\boxed{1} or \\boxed{3}") are a hedge, not an answer.
_HEDGE_GAP = 16


def is_hedged(response: str) -> bool:
    """The final answer is one of several boxed candidates: two different boxes side by side, or a final run
    of boxes listing different values (`\\boxed{2} \\quad \\text{and} \\quad \\boxed{3}`: two values, which a
    single-valued gold never equals)."""
    text = _answer_region(response)
    boxes = _boxes(text)
    if len(boxes) < 2:
        return False
    (_, end, prev), (start, _, last) = boxes[-2], boxes[-1]
    if prev != last and len(text[end:start].strip()) <= _HEDGE_GAP:
        return True
    return len({content for _, _, content in _final_run(text, boxes)}) > 1


# What may stand between the boxes of one answer listing several values, once `\text{}` wrappers, spacing
# commands and `$` are removed: punctuation, `=`, variable names (`x`, `x_1`, `(a)`), and the words of a list
# ("the roots are ... and ...", "for the first part, ..., and for the second part, ..."). Any other word ends
# the run: "or" and "maybe" offer candidates, "so", "but" or "then" go on from an intermediate result, and so
# does a full stop.
_LIST_WORDS = frozenset(
    "and for the first second third fourth fifth last part parts case cases answer answers value values "
    "solution solutions root roots pair pairs is are of respectively question".split()
)
_LIST_GAP_MAX_WORDS = 12
_GAP_MARKUP = re.compile(r"\\(?:text|mbox|mathrm|textbf)\{([^{}]*)\}")
_GAP_SPACING = re.compile(r"\\(?:quad|qquad|[,;:! ])|~|\$|\\\\")
_GAP_NAME = re.compile(r"^\(?[A-Za-z](?:_\{?\w+\}?)?\)?$")


def _joins_a_list(gap: str) -> bool:
    text = _GAP_SPACING.sub(" ", _GAP_MARKUP.sub(r" \1 ", gap))
    if re.search(r"\.(?:\s|$)", text):  # a sentence ends between the boxes
        return False
    words = re.findall(r"[^\s,;:&=]+", text)
    if len(words) > _LIST_GAP_MAX_WORDS:
        return False
    return all(w.lower() in _LIST_WORDS or _GAP_NAME.match(w) for w in words)


def _final_run(text: str, boxes: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """The last box and the boxes before it that join it in one list (`_joins_a_list`)."""
    run = boxes[-1:]
    for prev, box in zip(reversed(boxes[:-1]), reversed(boxes)):
        if not _joins_a_list(text[prev[1] : box[0]]):
            break
        run.insert(0, prev)
    return run


def listed_answer(response: str) -> str | None:
    """The values of the final run of boxes that list one answer, joined by commas (`2, 3` from
    `\\boxed{2} and \\boxed{3}`), or None when the response ends in fewer than two such boxes."""
    text = _answer_region(response)
    run = _final_run(text, _boxes(text))
    return ", ".join(content for _, _, content in run) if len(run) >= 2 else None


# How each bracket moves the nesting depth (an interval's `[0, 1)` mixes kinds: only the depth counts).
_BRACKET_DEPTH = {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}


def _closing_bracket(text: str) -> int:
    """Where the bracket that opens `text` closes (-1: never)."""
    depth = 0
    for i, char in enumerate(text):
        depth += _BRACKET_DEPTH.get(char, 0)
        if depth == 0:
            return i
    return -1


def is_multi_valued(gold: str) -> bool:
    """The gold lists several values: a comma outside any bracket, once an enclosing set brace is removed
    (`2, 3`, `\\{1,2,3\\}`; not the point `(1, 2)` or the interval `[0, 1)`)."""
    # a set's braces, `\\{...\\}` or plain (`{2,4,6}`), are one kind of bracket here
    text = gold.strip().replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}")
    if text.startswith("{") and _closing_bracket(text) == len(text) - 1:
        text = text[1:-1]
    depth = 0
    for char in text:
        depth += _BRACKET_DEPTH.get(char, 0)
        if char == "," and depth == 0:
            return True
    return False


_SCI_NOTATION = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\d.])")
# A thin space, `{,}` or a plain space between a digit and a group of exactly three digits: a thousands
# separator. Read as anything else, `12\,345` became 12 x 345 or 12 + 345.
_DIGIT_GROUP = re.compile(r"(?<=\d)(?:\\,|\\ |\{,\}|\s)(?=\d{3}(?!\d))")
# A sentence's full stop or comma left inside the box after a number or a closing bracket: `\boxed{42.}`.
_TRAILING_PUNCTUATION = re.compile(r"(?<=[\d})\]])\s*[.,;]\s*$")
# The same punctuation at the end of a math span of an unboxed response (`$1/3.$`): math-verify failed to
# parse the span and read its first number instead (1).
_PUNCTUATION_ENDING_MATH = re.compile(r"(?<=[\d})\]])\s*[.,;]\s*(?=\$|\\\]|\\\))")
# A number and its unit both inside \text{...}: math-verify parses `5\text{ cm}` but not `\text{5 cm}`.
_NUMBER_IN_TEXT = re.compile(r"\\(?:text|mbox|mathrm)\{\s*(-?\d[\d.,]*)\s+([A-Za-z][A-Za-z ]*)\}")
# A mixed number `2 3/5` (a whole number, a space, a proper fraction): one value, 13/5. math-verify reads the
# unboxed `2 3/5` as its first number, 2, and the boxed one as 2 x 3/5.
_MIXED_NUMBER = re.compile(r"(?<![\w.^/{}])(-?)(\d+)\s+(\d+)\s*/\s*(\d+)(?![\w.]|\s*/)")
# Below this magnitude math-verify's 6-decimal numeric comparison can no longer tell numbers apart.
_TINY = 1e-3


def normalize_answer(text: str) -> str:
    """Rewrites applied to gold and prediction alike before parsing.

    - `4.5e33` -> `4.5\\times10^{33}`: math-verify reads e-notation as Euler's e (Minerva golds).
    - `\\mathrm{e}` -> `e`: math-verify truncates expressions at `\\mathrm{e}`, so `1-1/e` and
      `1+1/e` both parse as 1.
    - `12\\,345`, `12{,}345`, `12 345` -> `12345`: thousands separators (before exactly three digits).
    - `42.` -> `42`: a trailing full stop or comma after a number or a closing bracket.
    - `2 3/5` -> `13/5`: a mixed number is one value.
    - `\\text{5 cm}` -> `5\\text{ cm}`, and `\\varnothing` -> `\\emptyset`.
    """
    text = _TRAILING_PUNCTUATION.sub("", _DIGIT_GROUP.sub("", text.strip()))
    text = _MIXED_NUMBER.sub(_improper_fraction, text)
    text = _SCI_NOTATION.sub(lambda m: f"{m.group(1)}\\times10^{{{m.group(2)}}}", text)
    text = _NUMBER_IN_TEXT.sub(lambda m: f"{m.group(1)}\\text{{ {m.group(2)}}}", text)
    text = text.replace("\\varnothing", "\\emptyset")
    return text.replace("\\mathrm{e}", "e").replace("\\operatorname{e}", "e")


def _improper_fraction(match: re.Match) -> str:
    sign, whole, numerator, denominator = match.group(1), *(int(g) for g in match.groups()[1:])
    if not 0 < numerator < denominator:  # not a proper fraction: `2 6/3` is no mixed number
        return match.group(0)
    return f"{sign}{whole * denominator + numerator}/{denominator}"


def _tiny_numbers_differ(gold_parsed: list, pred_parsed: list) -> bool:
    """math-verify rounds to 6 decimals, so 1/2^99 == 1/2^98; compare tiny numbers relatively.

    sympy Floats keep any exponent, so 1/2004! does not underflow to 0 as a Python float would.
    """
    import sympy

    a, b = gold_parsed[0], pred_parsed[0]
    if not (getattr(a, "is_number", False) and getattr(b, "is_number", False)):
        return False
    try:
        size = max(sympy.Abs(a).evalf(30), sympy.Abs(b).evalf(30))
        if size == 0 or size >= _TINY:
            return False
        return bool(sympy.Abs(a - b).evalf(30) > 1e-6 * size)
    except (TypeError, ValueError):
        return False


def _numeric_verdict(gold_parsed: list, pred_parsed: list) -> bool | None:
    """A quick verdict on sums, products, integrals and limits, which sympy's simplification takes seconds over
    (two sums that differ in a bound, an infinite sum against its closed form): evaluated at a few points
    (integers, which a sum's bound needs), values that differ are different answers, and two constants equal
    to 12 digits are the same. None (math-verify decides): no such construct, something that cannot be
    evaluated, or expressions equal at the points tried."""
    import sympy

    a, b = gold_parsed[0], pred_parsed[0]
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return None
    costly = (sympy.Sum, sympy.Product, sympy.Integral, sympy.Limit)
    if not (a.has(*costly) or b.has(*costly)):
        return None
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    for start in (2, 3, 5):
        point = {symbol: start + i for i, symbol in enumerate(symbols)}
        try:
            x, y = (complex(sympy.N(e.subs(point).doit(), 20)) for e in (a, b))
        except (TypeError, ValueError, ArithmeticError):
            return None
        if not all(map(cmath.isfinite, (x, y))):
            return None
        if abs(x - y) > 1e-6 * max(1.0, abs(x), abs(y)):
            return False
        if not symbols:
            return abs(x - y) <= 1e-12 * max(1.0, abs(x), abs(y)) or None
    return None


def _verify(answer: str, gold: str, whole_text: bool = False) -> bool:
    """Runs inside a worker process (math-verify's signal-based timeouts work there).

    `answer` is a boxed answer's content, or with `whole_text` a response to extract an answer from
    by math-verify's own priorities ('final answer is', 'answer:', last LaTeX expression).
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    answer, gold = normalize_answer(answer), normalize_answer(gold)
    if whole_text:
        answer = _PUNCTUATION_ENDING_MATH.sub("", answer)
    if "%" in gold:
        # A percent gold accepts the bare number too (never a blanket x100 rule).
        answer, gold = answer.replace("\\%", "").replace("%", ""), gold.replace("\\%", "").replace("%", "")
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    gold_parsed = parse(f"${gold}$", extraction_config=configs)
    if not gold_parsed:
        gold_parsed = parse(gold, extraction_config=configs)
    pred_parsed = parse(answer if whole_text else f"$\\boxed{{{answer}}}$", extraction_config=configs)
    if not gold_parsed or not pred_parsed:
        return answer.strip() == gold.strip()
    quick = _numeric_verdict(gold_parsed, pred_parsed)
    if quick is not None:
        return quick
    if not verify(gold_parsed, pred_parsed):
        return False
    return not _tiny_numbers_differ(gold_parsed, pred_parsed)


def _serve() -> None:
    """Worker loop: one JSON job per stdin line, one JSON verdict per stdout line."""
    for line in sys.stdin:
        job = json.loads(line)
        try:
            verdict: bool | str = _verify(*job)
        except Exception as exc:  # a parse error is a wrong answer, never a crashed worker
            verdict = exc.__class__.__name__ + ": " + str(exc)[:200]
        sys.stdout.write(json.dumps(verdict) + "\n")
        sys.stdout.flush()


# The worker's entry: the working folder (first on the path of `python -c`) is dropped before anything
# imports, so that a file of the user's named like a library (math_verify.py, sympy.py) cannot replace it.
_WORKER_MAIN = (
    "import os, sys\n"
    "if sys.path and sys.path[0] in ('', os.getcwd()):\n"
    "    del sys.path[0]\n"
    "from rltune.eval.grading import _serve\n"
    "_serve()\n"
)


class _Worker:
    """A separate Python process (not multiprocessing: no re-import of the caller's main module, no
    fork of a process holding torch threads)."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_MAIN],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            # out of the terminal's process group: Ctrl-C reaches the trainer, which stops them; they also
            # end when their stdin closes (the trainer exited)
            start_new_session=True,
        )

    def ask(self, job: list, timeout_s: float) -> bool | str | None:
        """The verdict, or None if none came within the timeout."""
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = self.process.stdout.readline()
        if not line:
            raise EOFError("grading worker exited")
        return json.loads(line)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            stream.close()


class GradingPool:
    """Worker processes that check answers, each check bounded by a wall-clock timeout."""

    def __init__(self, workers: int = 2, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.timeout_s = timeout_s
        self.size = workers
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self.timeouts = 0
        self.errors = 0
        """Checks that failed instead of answering: math-verify raised, or the worker died."""

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle.empty() and len(self._all) < self.size:
                worker = _Worker()
                self._all.append(worker)
                return worker
        return self._idle.get()

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        fresh = _Worker()
        with self._lock:
            self._all.remove(worker)
            self._all.append(fresh)
        self._idle.put(fresh)

    def check(self, answer: str, gold: str, whole_text: bool = False) -> bool:
        """Is `answer` (a boxed answer's content; with `whole_text`, a whole response) equivalent to
        `gold`? A hang or crash counts as wrong."""
        worker = self._take()
        try:
            # The first check of a fresh worker also pays for importing math-verify.
            result = worker.ask([answer, gold, whole_text], self.timeout_s)
        except (EOFError, OSError, ValueError):
            self.errors += 1
            log.warning("grading worker died (counted wrong): answer=%r gold=%r", answer[:200], gold[:200])
            self._replace(worker)
            return False
        if result is None:
            self.timeouts += 1
            log.warning(
                "grading timed out after %.1fs (counted wrong): answer=%r gold=%r",
                self.timeout_s,
                answer[:200],
                gold[:200],
            )
            self._replace(worker)
            return False
        self._idle.put(worker)
        if isinstance(result, str):
            self.errors += 1
            log.warning(
                "grading failed (counted wrong, %d so far): %s; answer=%r gold=%r",
                self.errors,
                result,
                answer[:200],
                gold[:200],
            )
            return False
        return result

    def close(self) -> None:
        with self._lock:
            for worker in self._all:
                worker.kill()
            self._all.clear()
            self._idle = queue.Queue()


_pool: GradingPool | None = None


def grading_failures() -> int:
    """Checks of the process's grading pool that raised, crashed or timed out so far (0 before any)."""
    return 0 if _pool is None else _pool.errors + _pool.timeouts


def default_pool() -> GradingPool:
    global _pool
    if _pool is None:
        _pool = GradingPool()
        atexit.register(_pool.close)
    return _pool


def grade(response: str, gold: str, pool: GradingPool | None = None, fallback: bool = False) -> bool:
    """True if the last boxed answer of `response` is mathematically equivalent to `gold`.

    No box means wrong, unless `fallback` (for evaluation only, never as an RL reward): then
    math-verify extracts an answer from the unboxed text ('the final answer is', 'answer:', last LaTeX).
    A check that hangs past the pool's timeout is wrong (and logged).
    """
    if gold is None or str(gold).strip() in ("", "None"):  # a missing gold (or one stringified from null)
        return False
    pool = pool or default_pool()
    if is_multi_valued(str(gold)):  # several boxes may answer together, as one list of values
        listed = listed_answer(response)
        if listed is not None:
            return pool.check(listed, str(gold))
    answer = extract_boxed(response)
    if answer is None and fallback:
        return pool.check(_after_think(response), str(gold), whole_text=True)
    if not answer or is_hedged(response):
        return False
    return pool.check(answer, str(gold))


def equivalent(a: str, b: str, pool: GradingPool | None = None) -> bool:
    """Two extracted answers denote the same value (used to group votes and answer partitions)."""
    return a.strip() == b.strip() or (pool or default_pool()).check(a, b)


def grade_many(
    responses: list[str], golds: list[str], pool: GradingPool | None = None, fallback: bool = False
) -> list[bool]:
    """`grade` over many pairs, using all the pool's workers at once."""
    pool = pool or default_pool()
    with ThreadPoolExecutor(max_workers=pool.size) as executor:
        return list(executor.map(lambda pair: grade(pair[0], pair[1], pool, fallback), zip(responses, golds)))
