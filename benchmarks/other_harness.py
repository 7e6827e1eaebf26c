"""rltune's verdicts against another harness's, on the completions an `rltune eval` run saved.

The other harness is lighteval's math metric. lighteval 0.13 does not install beside this project's math-verify
(it pins latex2sympy2_extended 1.0.6, math-verify 0.9 needs 1.11), so its metric is rebuilt here from the same
library calls with lighteval's settings (lighteval/metrics/metrics.py, `latex_gold_metric` and
`expr_gold_metric`): the prediction extracted by math-verify with `ExprExtractionConfig()` and
`LatexExtractionConfig(boxed_match_priority=0)` (a box first, else the other patterns), `fallback_mode=
"first_match"`; the gold extracted as LaTeX (MATH-style golds) or as an expression (numeric golds); compared by
`verify(..., float_rounding=5)`. Unlike rltune it also reads unboxed answers.

For each benchmark: the agreement of per-sample verdicts and of pass@k, and every disagreement classified:
- `unboxed`: no box in the response; the other harness read an answer elsewhere (rltune grades boxed answers
  only, by design: the format the RL reward teaches; `rltune eval --answer-fallback` reads them too);
- `hedge`: several different boxed answers at the end, which rltune counts wrong;
- `review`: printed with both answers, for a person to decide (rltune right, the other right, ambiguous gold);
  RESULTS.md records the decisions.

    python benchmarks/other_harness.py runs/eval-out [more eval outputs]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

NUMERIC_GOLD_BENCHMARKS = ("gsm8k", "aime24", "aime25", "amc23", "arithmetic")


def other_verdict(response: str, gold: str, latex_gold: bool, seconds: int = 5) -> tuple[bool, str]:
    """lighteval's verdict and the answer it extracted; a call past `seconds` is wrong (as in lighteval)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    def stop(*_):
        raise TimeoutError

    signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        gold_config = [LatexExtractionConfig()] if latex_gold else [ExprExtractionConfig()]
        golds = parse(f"${gold}$" if latex_gold else gold, extraction_config=gold_config)
        preds = parse(
            response,
            extraction_config=[ExprExtractionConfig(), LatexExtractionConfig(boxed_match_priority=0)],
            fallback_mode="first_match",
        )
        extracted = str(preds[-1]) if preds else ""
        return bool(golds and preds and verify(golds, preds, float_rounding=5)), extracted
    except TimeoutError:
        return False, "(timed out)"
    finally:
        signal.alarm(0)


def classify(sample: dict) -> str:
    """The kind of a disagreement a rule can name; the rest are printed for review."""
    from rltune.eval.grading import extract_boxed, is_hedged

    if extract_boxed(sample["text"]) is None:
        return "unboxed"
    return "hedge" if is_hedged(sample["text"]) else "review"


def compare(run: Path) -> dict:
    from rltune.eval.metrics import pass_at_k

    results = json.loads((run / "results.json").read_text())
    ks = [k for k in results["settings"]["k"] if k <= results["settings"]["n"]]
    report = {}
    for name, bench in results["benchmarks"].items():
        latex_gold = name not in NUMERIC_GOLD_BENCHMARKS
        agree, total, classes, examples = 0, 0, {}, []
        ours_at_k = {k: [] for k in ks}
        theirs_at_k = {k: [] for k in ks}
        for problem in bench["problems"]:
            theirs = []
            for sample in problem["samples"]:
                verdict, extracted = other_verdict(sample["text"], problem["gold"], latex_gold)
                theirs.append(verdict)
                total += 1
                if verdict == sample["correct"]:
                    agree += 1
                    continue
                kind = classify(sample)
                classes[kind] = classes.get(kind, 0) + 1
                examples.append((kind, problem["gold"], sample.get("answer"), extracted, sample["text"][-160:]))
            n = len(theirs)
            for k in ks:
                ours_at_k[k].append(pass_at_k(n, sum(s["correct"] for s in problem["samples"]), k))
                theirs_at_k[k].append(pass_at_k(n, sum(theirs), k))
        problems = len(bench["problems"])
        report[name] = {
            "samples": total,
            "verdicts_agree": agree / total,
            **{f"pass@{k}": (sum(ours_at_k[k]) / problems, sum(theirs_at_k[k]) / problems) for k in ks},
            "disagreements": classes,
            "examples": examples,
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="`rltune eval --out` folders")
    parser.add_argument("--show", type=int, default=10, help="disagreements printed per benchmark")
    args = parser.parse_args()
    for run in map(Path, args.runs):
        for name, r in compare(run).items():
            pairs = [(key, value) for key, value in r.items() if key.startswith("pass@")]
            at_k = ", ".join(f"{key} {100 * a:.1f} vs {100 * b:.1f}" for key, (a, b) in pairs)
            print(
                f"{run.name}/{name}: {r['samples']} samples, verdicts agree {100 * r['verdicts_agree']:.1f}%; "
                f"rltune vs lighteval's metric: {at_k}; disagreements {r['disagreements'] or 'none'}"
            )
            for kind, gold, ours, theirs, tail in r["examples"][: args.show]:
                print(f"  [{kind}] gold={gold!r} rltune={ours!r} other={theirs!r} ...{tail!r}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
