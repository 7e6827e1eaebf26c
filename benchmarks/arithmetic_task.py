"""GPT-3's arithmetic task (Brown et al. 2020, arXiv 2005.14165, section 3.9.1) as train/test jsonl files.

Four of its ten sub-tasks, in its question format: 2-digit addition ("What is 48 plus 76?"), 2-digit
subtraction ("What is 34 minus 53?"), 2-digit multiplication ("What is 24 times 42?") and one-digit
composite operations ("What is 6+(4*8)?"); and, beside them, a task with many right answers that is not
GPT-3's: "between", a whole number strictly between A and B (A = 1..80, B = A + 5..20: 4 to 19 right
answers; the answer column holds "A,B" for the `number_between` reward). Operands are drawn uniformly as
in the paper; the train and test splits share no question. Columns: question, answer, task.

    python benchmarks/arithmetic_task.py runs/arith --train 4000 --test 400
    python benchmarks/arithmetic_task.py runs/arith-between --tasks between --train 800 --test 200
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def problem(task: str, rng: random.Random) -> tuple[str, int | str]:
    if task == "2D+":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return f"What is {a} plus {b}?", a + b
    if task == "2D-":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return f"What is {a} minus {b}?", a - b
    if task == "2Dx":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return f"What is {a} times {b}?", a * b
    if task == "between":
        low = rng.randint(1, 80)
        high = low + rng.randint(5, 20)
        return f"Give a whole number greater than {low} and less than {high}.", f"{low},{high}"
    a, b, c = rng.randint(0, 9), rng.randint(0, 9), rng.randint(0, 9)
    op1, op2 = rng.choice("+-*"), rng.choice("+-*")
    expression = f"{a}{op1}({b}{op2}{c})"
    return f"What is {expression}?", eval(expression)  # three digits and two operators: safe to evaluate


TASKS = ("2D+", "2D-", "2Dx", "1DC")
CHOICES = (*TASKS, "between")


def write_splits(out: Path, train: int, test: int, seed: int = 0, tasks: tuple[str, ...] = TASKS) -> None:
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    misses = 0
    while len(rows) < train + test:
        task = tasks[len(rows) % len(tasks)]
        question, answer = problem(task, rng)
        misses = misses + 1 if question in seen else 0
        if misses > 10_000:
            raise SystemExit(f"{task}: fewer distinct questions than {train} + {test} problems ask; ask for fewer")
        if question not in seen:
            seen.add(question)
            rows.append({"question": question, "answer": str(answer), "task": task})
    rng.shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:train]), ("test", rows[train:])):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    print(f"{out}/train.jsonl: {train} problems, {out}/test.jsonl: {test} (disjoint), tasks {', '.join(tasks)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder for train.jsonl and test.jsonl")
    parser.add_argument("--train", type=int, default=4000, help="training problems")
    parser.add_argument("--test", type=int, default=400, help="held-out problems")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated sub-tasks of {', '.join(CHOICES)}")
    args = parser.parse_args()
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    unknown = sorted(set(tasks) - set(CHOICES))
    if unknown:
        parser.error(f"unknown sub-tasks {unknown}; choose from {', '.join(CHOICES)}")
    write_splits(Path(args.out), args.train, args.test, args.seed, tasks)


if __name__ == "__main__":
    main()
