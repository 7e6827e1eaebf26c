"""The change of mean@n between two `rltune eval` runs of the same problems, with a paired bootstrap 95% CI
over problems (each problem's per-sample accuracy after minus before), per benchmark and per value of a
column of the benchmark file (e.g. the sub-task).

    python benchmarks/paired_difference.py runs/eval-before runs/eval-after [--by task --data runs/arith2/test.jsonl]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from rltune.eval.metrics import bootstrap_ci
from rltune.eval.plots import load_results


def per_problem(results: dict, benchmark: str) -> list[float]:
    return [p["correct"] / p["n"] for p in results["benchmarks"][benchmark]["problems"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="eval output folder (or results.json)")
    parser.add_argument("after", help="eval output folder of the same problems")
    parser.add_argument("--by", default=None, help="a column of the benchmark file to break the change down by")
    parser.add_argument("--data", default=None, help="the benchmark jsonl file (with --by)")
    args = parser.parse_args()
    before, after = load_results(args.before), load_results(args.after)
    for name in before["benchmarks"]:
        a, b = per_problem(before, name), per_problem(after, name)
        if len(a) != len(b):
            raise SystemExit(f"{name}: {len(a)} problems before, {len(b)} after: not the same problems")
        groups = {"all": list(range(len(a)))}
        if args.by:
            rows = [json.loads(x) for x in Path(args.data).read_text().splitlines()][: len(a)]
            by = defaultdict(list)
            for i, row in enumerate(rows):
                by[str(row[args.by])].append(i)
            groups.update(sorted(by.items()))
        for label, indices in groups.items():
            diffs = [b[i] - a[i] for i in indices]
            low, high = bootstrap_ci(diffs)
            before_mean = sum(a[i] for i in indices) / len(indices)
            after_mean = sum(b[i] for i in indices) / len(indices)
            change = after_mean - before_mean
            print(
                f"{name} {label:>5} ({len(indices)} problems): mean@n {before_mean:.3f} -> {after_mean:.3f}, "
                f"change {change:+.3f} [{low:+.3f}, {high:+.3f}] (95% paired bootstrap)"
            )


if __name__ == "__main__":
    main()
