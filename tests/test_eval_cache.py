"""`rltune eval` results a user can rely on: the cache follows the weights, survives a torn file, and bad
files (results, benchmark lines) are named in the error."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import run_rltune
from rltune.demo import build_tiny_model, build_tokenizer


def eval_args(model, bench, out):
    return [
        "eval", "--model", str(model), "--benchmarks", f"{bench}:question:answer", "--n", "2", "--k", "1,2",
        "--engine", "hf", "--max-tokens", "4", "--no-chat-template", "--out", str(out),
    ]  # fmt: skip


@pytest.fixture
def bench(tmp_path):
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps({"question": f"{a}+{a}=", "answer": str(2 * a)}) + "\n" for a in range(4)))
    return path


def write_model(folder, seed):
    tokenizer = build_tokenizer()
    build_tiny_model(len(tokenizer), seed=seed, max_positions=256).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_the_cache_follows_the_weights_not_the_path(tmp_path, bench):
    model, out = tmp_path / "model", tmp_path / "eval"
    write_model(model, seed=0)
    first = run_rltune(*eval_args(model, bench, out), cwd=tmp_path)
    again = run_rltune(*eval_args(model, bench, out), cwd=tmp_path)
    assert "answered from the cache" in again.stderr and "answered from the cache" not in first.stderr
    texts = [
        s["text"]
        for p in json.loads((out / "results.json").read_text())["benchmarks"]["sums"]["problems"]
        for s in p["samples"]
    ]

    shutil.rmtree(model)
    write_model(model, seed=1)  # another model at the same path
    replaced = run_rltune(*eval_args(model, bench, out), cwd=tmp_path)
    assert "answered from the cache" not in replaced.stderr
    results = json.loads((out / "results.json").read_text())
    assert "sha256" in results["model"]
    new_texts = [s["text"] for p in results["benchmarks"]["sums"]["problems"] for s in p["samples"]]
    assert new_texts != texts


def test_a_torn_cache_line_is_reported_dropped_and_sampled_again(tmp_path, tiny_model_dir, bench):
    out = tmp_path / "eval"
    run_rltune(*eval_args(tiny_model_dir, bench, out), cwd=tmp_path)
    cache = out / "cache" / "sums.jsonl"
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:-1] + [lines[-1][: len(lines[-1]) // 2]]) + "\n")  # a killed write
    proc = run_rltune(*eval_args(tiny_model_dir, bench, out), cwd=tmp_path)
    assert f"eval cache {cache}: line(s) 4 are truncated or garbled" in proc.stderr
    assert "3 of 4 problems answered from the cache" in proc.stderr
    assert all(json.loads(line) for line in cache.read_text().splitlines())  # the file is whole again
    assert len(json.loads((out / "results.json").read_text())["benchmarks"]["sums"]["problems"]) == 4


def test_a_corrupt_results_file_is_named(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text('{"settings": {"n": 4}, "benchm')
    proc = run_rltune("eval", "compare", str(run), "--out", str(tmp_path / "c.png"), cwd=tmp_path, ok=False)
    assert proc.returncode != 0 and f"{run / 'results.json'} is not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_malformed_benchmark_line_is_named_by_number(tmp_path, tiny_model_dir, bench):
    bench.write_text(bench.read_text() + '{"question": "9+9=", "answer": \n')
    proc = run_rltune(*eval_args(tiny_model_dir, bench, tmp_path / "eval"), cwd=tmp_path, ok=False)
    assert proc.returncode != 0 and f"{bench} line 5: not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.heavy
def test_compare_refuses_runs_with_other_settings_or_problems_unless_forced(tmp_path, tiny_model_dir, bench):
    base, hot, fewer = tmp_path / "base", tmp_path / "hot", tmp_path / "fewer"
    run_rltune(*eval_args(tiny_model_dir, bench, base), cwd=tmp_path)
    run_rltune(*eval_args(tiny_model_dir, bench, hot), "--temperature", "1.0", cwd=tmp_path)
    run_rltune(*eval_args(tiny_model_dir, bench, fewer), "--limit", "3", cwd=tmp_path)

    proc = run_rltune("eval", "compare", str(base), str(hot), "--out", str(tmp_path / "x.png"), cwd=tmp_path, ok=False)
    assert proc.returncode != 0 and "not comparable: they differ in temperature (base: 0.6, hot: 1.0)" in proc.stderr
    proc = run_rltune(
        "eval", "compare", str(base), str(fewer), "--out", str(tmp_path / "x.png"), cwd=tmp_path, ok=False
    )
    assert "the sums problems (base: 4, fewer: 3 problems" in proc.stderr
    assert not (tmp_path / "x.png").exists()

    forced = run_rltune(
        "eval", "compare", str(base), str(hot), "--force", "--out", str(tmp_path / "f.png"), cwd=tmp_path
    )
    assert "note: the runs differ in temperature" in forced.stdout and (tmp_path / "f.png").stat().st_size > 1000
    same = run_rltune("eval", "compare", str(base), str(base), "--out", str(tmp_path / "s.png"), cwd=tmp_path)
    assert "note:" not in same.stdout


def test_pass_at_k_bands_bracket_the_curve():
    from rltune.eval.plots import pass_at_k_bands, pass_at_k_curve

    problems = [{"n": 4, "correct": c} for c in (0, 1, 2, 4, 3, 0)]
    ks, values = pass_at_k_curve(problems, 4)
    bands = pass_at_k_bands(problems, 4)
    assert ks == [1, 2, 4] and len(bands) == 3
    assert all(lo <= v <= hi and lo < hi for v, (lo, hi) in zip(values, bands))


def test_prompts_longer_than_the_context_are_skipped_and_counted_with_every_engine(tmp_path, bench):
    """A model of 64 positions: the short prompts fit with max_tokens 16, a long one does not. rltune eval
    skips it with a counted warning (the hf engine used to generate past the context); calling the engine
    directly with it is refused in one line."""
    from rltune.errors import RLTuneError
    from rltune.rollout import SamplingSettings, build_engine

    tokenizer = build_tokenizer()
    model = tmp_path / "short"
    build_tiny_model(len(tokenizer), seed=0, max_positions=64).save_pretrained(model)
    tokenizer.save_pretrained(model)
    bench.write_text(bench.read_text() + json.dumps({"question": "1+" * 30 + "1=", "answer": "31"}) + "\n")
    args = eval_args(model, bench, tmp_path / "eval")
    args[args.index("--max-tokens") + 1] = "16"
    proc = run_rltune(*args, cwd=tmp_path)
    assert "skipped 1 prompts longer than 48 tokens" in proc.stderr
    assert (
        json.loads((tmp_path / "eval" / "results.json").read_text())["benchmarks"]["sums"]["metrics"]["problems"] == 4
    )

    from rltune.config import ModelConfig
    from rltune.models import load_causal_lm

    engine = build_engine("hf", model=load_causal_lm(str(model), ModelConfig(path=str(model))), tokenizer=tokenizer)
    long_prompt = tokenizer("1+" * 30 + "1=")["input_ids"]
    with pytest.raises(RLTuneError, match=r"cannot take a prompt of \d+ tokens with max_tokens 16: the model holds 64"):
        engine.generate([long_prompt], [{}], SamplingSettings(n=1, max_tokens=16))
