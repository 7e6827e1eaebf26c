"""The numbers `rltune eval` reports, on completions whose correctness is known.

A first `rltune eval` run (real CLI, hf engine) fills the results cache; the test then replaces the cached
completions with written ones (the cache is a jsonl file of completions per prompt key) and runs the same
command again, which answers from the cache. Every reported pass@k, maj@k and mean@n, and their bootstrap
CIs, are checked against values computed here by hand.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys

import pytest

# gold, the four completions, and maj@1/2/4 by answer equivalence (ties go to the answer seen first)
PROBLEMS = [
    ("1/2", [r"\boxed{0.5}", r"\boxed{\frac{1}{2}}", r"\boxed{7}", r"\boxed{7}"], (True, True, True)),
    ("3", [r"\boxed{4}", r"\boxed{3}", r"\boxed{3.0}", "no answer"], (False, False, True)),
    ("10", [r"\boxed{10}"] * 4, (True, True, True)),
    ("5", [r"\boxed{6}"] * 4, (False, False, False)),
    ("2", [r"\boxed{1}", r"\boxed{1}", r"\boxed{1}", r"\boxed{2}"], (False, False, False)),
    ("9", [r"\boxed{9}", r"\boxed{8}", r"\boxed{8}", r"\boxed{8}"], (True, True, False)),
]
CORRECT = [2, 2, 4, 0, 1, 1]  # right answers among each problem's four
N, KS = 4, (1, 2, 4)


def pass_at_k(n: int, c: int, k: int) -> float:
    return 1 - math.comb(n - c, k) / math.comb(n, k)


def exact_bootstrap_ci(values: list[float]) -> tuple[float, float]:
    """2.5% and 97.5% quantiles of the mean over every possible resample (all len**len of them)."""
    means = sorted(sum(pick) / len(values) for pick in itertools.product(values, repeat=len(values)))
    return means[int(0.025 * len(means))], means[int(0.975 * len(means)) - 1]


def test_reported_pass_maj_mean_and_cis_match_hand_computed_values(tmp_path, tiny_model_dir):
    bench = tmp_path / "known.jsonl"
    bench.write_text(
        "".join(json.dumps({"question": f"q{i}?", "answer": g}) + "\n" for i, (g, _, _) in enumerate(PROBLEMS))
    )
    out = tmp_path / "eval"
    command = [
        sys.executable,
        "-m",
        "rltune",
        "eval",
        "--model",
        str(tiny_model_dir),
        "--benchmarks",
        f"{bench}:question:answer",
        "--n",
        str(N),
        "--k",
        ",".join(map(str, KS)),
        "--engine",
        "hf",
        "--max-tokens",
        "4",
        "--no-chat-template",
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]

    cache_file = out / "cache" / "known.jsonl"
    sampled = json.loads((out / "results.json").read_text())["benchmarks"]["known"]["problems"]
    lines = [json.loads(x) for x in cache_file.read_text().splitlines()]
    assert len(lines) == len(PROBLEMS)  # one line a problem, in benchmark order
    for line, problem, (_, texts, _) in zip(lines, sampled, PROBLEMS):
        assert [s["text"] for s in line["samples"]] == [s["text"] for s in problem["samples"]]
        line["samples"] = [{**s, "text": t} for s, t in zip(line["samples"], texts)]
    cache_file.write_text("".join(json.dumps(x) + "\n" for x in lines))

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "answered from the cache" in second.stderr
    result = json.loads((out / "results.json").read_text())["benchmarks"]["known"]
    metrics, problems = result["metrics"], result["problems"]

    assert [p["correct"] for p in problems] == CORRECT
    assert metrics["grader_errors"] == 0
    means = [c / N for c in CORRECT]
    assert metrics[f"mean@{N}"] == pytest.approx(sum(means) / len(means))
    for j, k in enumerate(KS):
        per_problem = [pass_at_k(N, c, k) for c in CORRECT]
        assert metrics[f"pass@{k}"] == pytest.approx(sum(per_problem) / len(per_problem)), k
        assert metrics[f"maj@{k}"] == pytest.approx(sum(m[j] for _, _, m in PROBLEMS) / len(PROBLEMS)), k
        lo, hi = metrics[f"pass@{k}_ci"]
        want_lo, want_hi = exact_bootstrap_ci(per_problem)
        assert lo <= metrics[f"pass@{k}"] <= hi
        # 1000 resamples estimate the exact bootstrap quantiles to within a few hundredths here
        assert lo == pytest.approx(want_lo, abs=0.07) and hi == pytest.approx(want_hi, abs=0.07), k
    lo, hi = metrics[f"mean@{N}_ci"]
    want_lo, want_hi = exact_bootstrap_ci(means)
    assert lo == pytest.approx(want_lo, abs=0.07) and hi == pytest.approx(want_hi, abs=0.07)
    # pass@k rises with k and maj@k is no pass@k: the numbers are not one metric under several names
    assert metrics["pass@1"] < metrics["pass@2"] < metrics["pass@4"]
    assert metrics["maj@4"] != metrics["pass@4"]
    assert "known" in second.stdout and f"{100 * metrics['pass@4']:.1f}" in second.stdout
