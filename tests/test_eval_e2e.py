"""`rltune eval` end to end with the real vLLM CPU engine, and the trainer's periodic eval."""

import json
import math

import pytest

from conftest import demo_recipe, run_rltune
from rltune.trainer import Trainer


@pytest.mark.slow
def test_eval_cli_with_vllm_results_cache_and_plots(tmp_path, tiny_model_dir, benchdata):
    pytest.importorskip("vllm")
    out = tmp_path / "eval"
    common = [
        "eval",
        "--model",
        str(tiny_model_dir),
        "--benchmarks",
        "gsm8k,math500",
        "--data-dir",
        str(benchdata),
        "--limit",
        "3",
        "--n",
        "4",
        "--engine",
        "vllm",
        "--out",
        str(out),
        "--max-tokens",
        "16",
        "--no-chat-template",
    ]
    first = run_rltune(*common, "--k", "1,2", cwd=tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert set(results["benchmarks"]) == {"gsm8k", "math500"}
    for bench in results["benchmarks"].values():
        assert bench["metrics"]["problems"] == 3
        assert {"mean@4", "pass@1", "pass@2", "maj@1", "maj@2", "distinct_answers"} <= set(bench["metrics"])
        assert all(len(p["samples"]) == 4 for p in bench["problems"])
    assert (out / "pass_at_k.png").stat().st_size > 1000
    assert "gsm8k" in first.stdout and "pass@2" in first.stdout
    cache = (out / "cache" / "gsm8k.jsonl").read_text()

    # A larger k on the same samples is answered from the cache: nothing is sampled again.
    second = run_rltune(*common, "--k", "1,2,4", cwd=tmp_path)
    assert (out / "cache" / "gsm8k.jsonl").read_text() == cache
    assert "answered from the cache" in second.stderr
    again = json.loads((out / "results.json").read_text())
    assert "pass@4" in again["benchmarks"]["gsm8k"]["metrics"]
    assert (
        again["benchmarks"]["gsm8k"]["problems"][0]["samples"]
        == results["benchmarks"]["gsm8k"]["problems"][0]["samples"]
    )

    run_rltune("eval", "compare", str(out), str(out), "--out", str(tmp_path / "cmp.png"), cwd=tmp_path)
    assert (tmp_path / "cmp.png").stat().st_size > 1000


def test_trainer_runs_periodic_eval(tmp_path, demo_assets):
    model_dir, data_file = demo_assets
    cfg = demo_recipe(
        tmp_path,
        model_dir,
        data_file,
        {
            "rollout": {"engine": "hf", "group_size": 4},
            "train": {"steps": 2, "prompts_per_step": 4},
            "eval": {
                "every": 2,
                "at_start": True,
                "benchmarks": [f"{data_file}:question:answer"],
                "n": 4,
                "k": [1, 4],
                "limit": 10,
                "temperature": 1.0,
                "top_p": 1.0,
            },
        },
    )
    Trainer(cfg).train()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2]
    for step, line in ((0, lines[0]), (2, lines[2])):
        # the logged numbers are those of the step's saved per-problem verdicts, by the formulas
        saved = json.loads((tmp_path / "run" / "eval" / f"step-{step}.json").read_text())
        problems = saved["benchmarks"]["arithmetic"]["problems"]
        assert len(problems) == 10 and all(len(p["samples"]) == 4 for p in problems)
        correct = [sum(s["correct"] for s in p["samples"]) for p in problems]
        assert 0 < sum(correct) < 40  # the warmed-up model is right ~30% of the time
        for k in (1, 4):
            by_hand = sum(1 - math.comb(4 - c, k) / math.comb(4, k) for c in correct) / 10
            assert line[f"eval/arithmetic/pass@{k}"] == pytest.approx(by_hand), (step, k)
        assert line["eval/arithmetic/mean@4"] == pytest.approx(sum(correct) / 40)
        assert line["eval/arithmetic/maj@4"] == pytest.approx(sum(p["maj"]["4"] for p in problems) / 10)
    assert "eval/arithmetic/pass@1" not in lines[1]
    first, last = (
        json.loads((tmp_path / "run" / "eval" / f"step-{s}.json").read_text())["benchmarks"]["arithmetic"]["metrics"]
        for s in (0, 2)
    )
    lo, hi = first["pass@4_ci"]
    fired = first["pass@4"] - last["pass@4"] > (hi - lo) / 2 and last["pass@1"] > first["pass@1"]
    assert lines[2]["eval/arithmetic/alarm_pass_at_k_collapse"] == float(fired)
