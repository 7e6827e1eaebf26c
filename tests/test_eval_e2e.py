"""`rltune eval` end to end with the real vLLM CPU engine, and the trainer's periodic eval."""

import json
import os
import subprocess
import sys

import pytest

from conftest import demo_recipe
from rltune.trainer import Trainer


def rltune(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "rltune", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


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
    first = rltune(*common, "--k", "1,2", cwd=tmp_path)
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
    second = rltune(*common, "--k", "1,2,4", cwd=tmp_path)
    assert (out / "cache" / "gsm8k.jsonl").read_text() == cache
    assert "answered from the cache" in second.stderr
    again = json.loads((out / "results.json").read_text())
    assert "pass@4" in again["benchmarks"]["gsm8k"]["metrics"]
    assert (
        again["benchmarks"]["gsm8k"]["problems"][0]["samples"]
        == results["benchmarks"]["gsm8k"]["problems"][0]["samples"]
    )

    rltune("eval", "compare", str(out), str(out), "--out", str(tmp_path / "cmp.png"), cwd=tmp_path)
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
    for line in (lines[0], lines[2]):
        assert 0 <= line["eval/arithmetic/pass@1"] <= line["eval/arithmetic/pass@4"] <= 1
        assert line["eval/arithmetic/pass@1"] > 0  # the warmed-up model is right ~30% of the time
    assert "eval/arithmetic/pass@1" not in lines[1]
    assert (tmp_path / "run" / "eval" / "step-2.json").is_file()
