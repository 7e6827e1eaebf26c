"""The project's one answer grader: last `\\boxed{}` + math-verify, in worker processes with a hard timeout.

`grade(response, gold)` is used by the trainer's `math_accuracy` reward and by the eval harness.
math-verify's own timeouts use `signal.alarm`, which only works in a main thread and cannot stop a
parse that hangs in C code, so each check runs in a worker process; a worker that does not answer
within the timeout is killed and replaced, and the answer counts as wrong (logged).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def extract_boxed(text: str) -> str | None:
    """Content of the last brace-balanced `\\boxed{...}` or `\\fbox{...}`; after `</think>` if present.

    `\\boxed 5` (no braces) yields '5'. Returns None when there is no box.
    """
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    if i < len(text) and text[i] == " ":
        rest = text[i + 1 :].split("$", 1)[0].strip()
        return rest.split()[0] if rest else None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def _verify(answer: str, gold: str) -> bool:
    """Runs inside a worker process (math-verify's signal-based timeouts work there)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    gold_parsed = parse(f"${gold}$", extraction_config=configs)
    if not gold_parsed:
        gold_parsed = parse(gold, extraction_config=configs)
    pred_parsed = parse(f"$\\boxed{{{answer}}}$", extraction_config=configs)
    if not gold_parsed or not pred_parsed:
        return answer.strip() == gold.strip()
    return bool(verify(gold_parsed, pred_parsed))


def _serve(conn) -> None:
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        try:
            conn.send(_verify(*job))
        except Exception as exc:  # a parse error is a wrong answer, never a crashed worker
            conn.send(exc.__class__.__name__ + ": " + str(exc)[:200])


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child,), daemon=True)
        self.process.start()
        child.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class GradingPool:
    """Worker processes that check answers, each check bounded by a wall-clock timeout."""

    def __init__(self, workers: int = 2, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.timeout_s = timeout_s
        self.size = workers
        # spawn: forking a process that holds torch/vLLM threads is unsafe.
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self.timeouts = 0

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle.empty() and len(self._all) < self.size:
                worker = _Worker(self._ctx)
                self._all.append(worker)
                return worker
        return self._idle.get()

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        fresh = _Worker(self._ctx)
        with self._lock:
            self._all.remove(worker)
            self._all.append(fresh)
        self._idle.put(fresh)

    def check(self, answer: str, gold: str) -> bool:
        worker = self._take()
        try:
            worker.conn.send((answer, gold))
            # The first check of a fresh worker also pays for importing math-verify.
            if worker.conn.poll(self.timeout_s):
                result = worker.conn.recv()
            else:
                self.timeouts += 1
                log.warning(
                    "grading timed out after %.1fs (counted wrong): answer=%r gold=%r",
                    self.timeout_s,
                    answer[:200],
                    gold[:200],
                )
                self._replace(worker)
                return False
        except (EOFError, OSError, BrokenPipeError):
            log.warning("grading worker died (counted wrong): answer=%r gold=%r", answer[:200], gold[:200])
            self._replace(worker)
            return False
        self._idle.put(worker)
        if isinstance(result, str):
            log.debug("math-verify raised %s for answer=%r gold=%r", result, answer[:200], gold[:200])
            return False
        return result

    def close(self) -> None:
        with self._lock:
            for worker in self._all:
                worker.kill()
            self._all.clear()
            self._idle = queue.Queue()


_pool: GradingPool | None = None


def default_pool() -> GradingPool:
    global _pool
    if _pool is None:
        _pool = GradingPool()
        atexit.register(_pool.close)
    return _pool


def grade(response: str, gold: str, pool: GradingPool | None = None) -> bool:
    """True if the last boxed answer of `response` is mathematically equivalent to `gold`.

    No box means wrong. A check that hangs past the pool's timeout is wrong (and logged).
    """
    answer = extract_boxed(response)
    if answer is None or not answer:
        return False
    return (pool or default_pool()).check(answer, str(gold))


def grade_many(responses: list[str], golds: list[str], pool: GradingPool | None = None) -> list[bool]:
    """`grade` over many pairs, using all the pool's workers at once."""
    pool = pool or default_pool()
    with ThreadPoolExecutor(max_workers=pool.size) as executor:
        return list(executor.map(lambda pair: grade(pair[0], pair[1], pool), zip(responses, golds)))
