"""The performance benchmarks run end to end (tiny model, few steps): the numbers themselves are in
benchmarks/RESULTS.md; this only keeps the scripts working."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, out: Path, *args: str) -> tuple[str, list[dict]]:
    """(stdout, result rows) of `python benchmarks/<script> ... --out out`."""
    run = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout, [json.loads(x) for x in out.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.heavy
def test_vs_trl_and_update_mfu_run(tmp_path):
    stdout, rows = run_benchmark(
        "vs_trl.py", tmp_path / "vs_trl.jsonl", "--sizes", "tiny", "--sides", "rltune-hf,trl", "--steps", "3"
    )
    assert [r["side"] for r in rows] == ["rltune-hf", "trl"]
    assert all(r["step_s"] > 0 and r["completion_tokens"] > 0 for r in rows)
    assert "steps/s vs trl" in stdout

    _, rows = run_benchmark(
        "update_mfu.py",
        tmp_path / "mfu.jsonl",
        *("--size", "tiny", "--seq", "64", "--prompt", "16", "--batch", "4", "--repeats", "2"),
        *("--variants", "plain,rltune,rltune-budget,rltune-mixed,rltune-compile-head"),
        *("--varied-lengths", "--token-budget", "128"),
    )
    assert [r["variant"] for r in rows] == ["plain", "rltune", "rltune-budget", "rltune-mixed", "rltune-compile-head"]
    assert all(4 * 16 < r["tokens"] < 4 * 64 and r["tflops"] > 0 for r in rows)  # pads are not counted

    bound = subprocess.run(
        [sys.executable, "benchmarks/matmul_bound.py", "--size", "tiny", "--tokens", "256", "--repeats", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bound.returncode == 0, bound.stderr[-3000:]
    assert "decode step, 32 rows" in bound.stdout and "s of matmuls" in bound.stdout


def test_lm_head_against_a_git_revision_runs_both_versions_on_the_same_inputs():
    """benchmarks/lm_head_vs_revision.py: the committed head (HEAD) beside the working tree's, small shapes;
    the two agree (they are the same code here, or a change that must keep the numerics)."""
    run = subprocess.run(
        [sys.executable, "benchmarks/lm_head_vs_revision.py", "--rev", "HEAD", "--entropy", "--repeats", "1"]
        + ["--shapes", "64x500x32:float32,48x700x32:bf16"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert sum(line.strip().startswith(("HEAD ", "working tree ")) for line in lines) == 4
    differences = [float(line.split()[-1]) for line in lines if "relative difference" in line]
    assert len(differences) == 6 and max(differences) < 1e-2


def test_gsm8k_shape_workload_has_prompts_and_end_tokens_in_proportion(tmp_path, monkeypatch):
    """The vs_trl `gsm8k-shape` assets: prompts of 0.3-0.5 x the token limit, one token a character, and
    about 1/64 of the vocabulary in the generation config's end tokens (both trainers stop on those)."""
    from transformers import AutoTokenizer, GenerationConfig

    sys.path.insert(0, str(REPO / "benchmarks"))
    import vs_trl

    small = dict(vocab_size=640, hidden_size=64, intermediate_size=128, num_hidden_layers=1, head_dim=32)
    monkeypatch.setitem(vs_trl.SIZES, "small", (dict(small, num_attention_heads=2, num_key_value_heads=1), 64))
    model_dir, data = vs_trl.build_assets("small", tmp_path, workload="gsm8k-shape")

    end_ids = GenerationConfig.from_pretrained(model_dir).eos_token_id
    assert len(set(end_ids)) == 640 // 64 and 1 in end_ids
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert all(tokenizer.decode([i]) for i in end_ids if i != 1)  # fillers: they decode to text
    prompts = [json.loads(x)["question"] for x in data.read_text().splitlines()]
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert lengths == [len(p) for p in prompts] and min(lengths) >= 19 and max(lengths) <= 32
    assert len(set(prompts)) == len(prompts)


def test_gsm8k_workload_prompts_are_real_questions_in_the_chat_template(tmp_path, benchdata):
    """`--workload gsm8k`: GSM8K test questions in the model's chat template, one JSON line each; a data
    folder without gsm8k/ stops with a message that names the option."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import vs_trl

    from rltune.demo import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    tokenizer.save_pretrained(tmp_path / "model")
    data = vs_trl.build_gsm8k_prompts(tmp_path / "model", benchdata, tmp_path, count=5)
    prompts = [json.loads(x)["question"] for x in data.read_text().splitlines()]
    questions = [json.loads(x)["question"] for x in (benchdata / "gsm8k" / "test.jsonl").read_text().splitlines()[:5]]
    assert len(prompts) == 5
    for prompt, question in zip(prompts, questions):
        assert prompt.startswith("<user>" + question) and prompt.endswith("\\boxed{}.<assistant>")
    with pytest.raises(SystemExit, match="--data-dir"):
        vs_trl.build_gsm8k_prompts(tmp_path / "model", tmp_path, tmp_path)


@pytest.mark.slow
@pytest.mark.heavy
def test_darling_vs_grpo_and_paired_difference_run(tmp_path):
    """The two evidence scripts end to end at a toy budget: one seed of each method, then a paired
    comparison of two eval result files."""
    out = tmp_path / "darling"
    proc = subprocess.run(
        [sys.executable, "benchmarks/darling_vs_grpo.py", "--seeds", "1", "--steps", "2", "--warmup-steps", "20"]
        + ["--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"grpo", "darling"} and all(0 <= r[0]["coverage"] <= 1 for r in results.values())
    assert "| coverage |" in proc.stdout

    def eval_file(path, correct):
        problems = [{"correct": c, "n": 4} for c in correct]
        path.write_text(json.dumps({"settings": {}, "benchmarks": {"t": {"problems": problems, "metrics": {}}}}))
        return path

    before = eval_file(tmp_path / "before.json", [0, 1, 0, 2])
    after = eval_file(tmp_path / "after.json", [4, 1, 2, 2])
    proc = subprocess.run(
        [sys.executable, "benchmarks/paired_difference.py", before, after], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mean@n 0.188 -> 0.562, change +0.375" in proc.stdout


def test_claims_verdicts_follow_the_interval_and_the_claim():
    """benchmarks/claims.py's rule: a claimed difference is reproduced when the interval excludes 0 on its side,
    not reproduced on the other side or inside +-margin, inconclusive otherwise; "matches" needs the interval
    above -margin."""
    verdict = benchmark_module("claims").verdict
    assert verdict("higher", 0.01, 0.2, 0.05) == "reproduced"
    assert verdict("higher", -0.2, -0.01, 0.05) == "not reproduced"
    assert verdict("higher", -0.03, 0.04, 0.05) == "not reproduced"  # no practical difference
    assert verdict("higher", -0.1, 0.2, 0.05) == "inconclusive"
    assert verdict("lower", -0.2, -0.01, 0.05) == "reproduced"
    assert verdict("lower", 0.01, 0.2, 0.05) == "not reproduced"
    assert verdict("matches", -0.04, 0.3, 0.05) == "reproduced"
    assert verdict("matches", -0.3, -0.06, 0.05) == "not reproduced"
    assert verdict("matches", -0.1, 0.1, 0.05) == "inconclusive"
    assert verdict("higher", float("nan"), float("nan"), 0.05) == "inconclusive"  # one seed


def benchmark_module(name: str):
    """benchmarks/<name>.py, imported as the scripts import each other (benchmarks/ on the path)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_seeds_to_decide_is_where_the_interval_would_clear_the_nearest_boundary():
    import statistics

    from darling_vs_grpo import t975

    claims = benchmark_module("claims")
    assert claims.seeds_to_decide([0.1], "higher", 0.05) is None  # no spread measured
    # mean 0.1, sd 0.02: the half-width is 0.18 at 2 seeds and 0.050 at 3, under the 0.1 that excludes 0
    assert claims.seeds_to_decide([0.08, 0.1, 0.12], "higher", 0.05) == 3
    for diffs, direction, margin in [
        ([0.12, -0.08, 0.06, -0.02], "higher", 0.05),  # mean 0.02: inside the margin is closer (0.03 away)
        ([0.3, -0.1, 0.25, -0.05], "lower", 0.05),  # mean 0.1: excluding 0, on the other side
        ([0.1, -0.2, 0.05, -0.03], "matches", 0.05),  # mean -0.02: above -margin
    ]:
        n = claims.seeds_to_decide(diffs, direction, margin)
        mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
        for seeds, decided in ((n, True), (n - 1, False)):  # the same mean and spread over n and n - 1 seeds
            half = t975(seeds - 1) * sd / seeds**0.5
            assert (claims.verdict(direction, mean - half, mean + half, margin) != "inconclusive") is decided


def test_claims_adds_paired_seeds_only_to_the_rows_still_inconclusive(tmp_path, monkeypatch, capsys):
    """--max-seeds: a row decided at 3 seeds stops there; an undecided one gets a seed at a time up to the
    maximum, its runs only (each run's summaries stand in for trained runs: the seed loop is under test)."""
    claims = benchmark_module("claims")
    accuracy = {  # per run, per seed
        "grpo": [0.5] * 10,
        "grpo_seq_mean": [0.5] * 10,
        "dr_grpo": [0.5 + d for d in (0.01, -0.2, 0.15, 0.02, -0.1, 0.12, -0.04, 0.09, -0.13, 0.1)],
    }
    wrong_tokens = {"grpo_seq_mean": [10.0] * 10, "dr_grpo": [8.0, 8.1, 7.9, 8.0, 8.2, 7.8, 8.0, 8.1, 8.0, 7.9]}
    ran = []

    def run_once(name, seed, out, steps=None, warmup_steps=None, record_dir=None):
        ran.append((name, seed))
        return {"accuracy": accuracy[name][seed], "wrong_tokens": wrong_tokens.get(name, [0.0] * 10)[seed]}

    monkeypatch.setattr(claims, "run_once", run_once)
    rows = "dr_grpo_length,dr_grpo_accuracy"
    claims.main(["--rows", rows, "--seeds", "3", "--max-seeds", "6", "--out", str(tmp_path)])
    table = {r["key"]: r for r in json.loads((tmp_path / "claims.json").read_text())["rows"]}
    assert table["dr_grpo_length"]["seeds"] == 3 and table["dr_grpo_length"]["verdict"] == "reproduced"
    assert table["dr_grpo_accuracy"]["seeds"] == 6 and table["dr_grpo_accuracy"]["verdict"] == "inconclusive"
    assert table["dr_grpo_accuracy"]["seeds_to_decide"] > 6
    assert sorted(ran) == sorted(
        [("grpo_seq_mean", s) for s in range(3)] + [("dr_grpo", s) for s in range(6)] + [("grpo", s) for s in range(6)]
    )  # each run once per seed, whichever rows share it
    assert "inconclusive (about" in capsys.readouterr().out


def test_claims_runs_are_recorded_by_what_defines_them_and_reused(tmp_path):
    """A run's summary is recorded under its name and a hash of its recipe, overrides and budgets: a run made
    in --out is recorded, a recorded run is not run again, and another budget or recipe is another run."""
    claims = benchmark_module("claims")
    record, out = tmp_path / "record", tmp_path / "out"
    (out / "nft" / "seed0").mkdir(parents=True)
    (out / "nft" / "seed0" / "summary.json").write_text(json.dumps({"accuracy": 0.5}))
    assert claims.run_once("nft", 0, out, record_dir=record) == {"accuracy": 0.5}
    (recorded,) = record.glob("nft-*/seed0.json")
    (out / "nft").rename(tmp_path / "elsewhere")  # from now on only the record has it
    assert claims.run_once("nft", 0, out, record_dir=record) == {"accuracy": 0.5}
    hashes = {
        claims.run_hash("nft", None, None),
        claims.run_hash("nft", 10, None),
        claims.run_hash("nft", None, 100),
        claims.run_hash("rft", None, None),  # the same recipe, another override
        claims.run_hash("grpo", None, None),
    }
    assert len(hashes) == 5 and recorded.parent.name == f"nft-{claims.run_hash('nft', None, None)}"
    # a fresh clone: every run of the rows from the record, no --out folder yet
    for name in ("grpo_dynamic", "rft"):
        for seed in range(2):
            folder = record / f"{name}-{claims.run_hash(name, None, None)}"
            folder.mkdir(exist_ok=True)
            (folder / f"seed{seed}.json").write_text(json.dumps({"accuracy": 0.5 + 0.1 * seed}))
    (record / recorded.parent.name / "seed1.json").write_text(json.dumps({"accuracy": 0.7}))
    claims.main(["--rows", "rft", "--seeds", "2", "--out", str(tmp_path / "fresh"), "--record", str(record)])
    (row,) = json.loads((tmp_path / "fresh" / "claims.json").read_text())["rows"]
    assert row["key"] == "rft" and row["seeds"] == 2 and row["difference"] == 0.0


def test_claims_table_only_reads_each_row_at_its_recorded_paired_seeds(tmp_path, monkeypatch, capsys):
    """--table-only: a row reads the seeds recorded for both its runs (up to the first gap), a row with fewer
    than two is named as not recorded, and nothing is trained."""
    claims = benchmark_module("claims")
    record = tmp_path / "record"
    accuracy = {"grpo_dynamic": [0.9, 0.8, 0.7, 0.6], "rft": [0.5, 0.6, 0.9], "nft": [0.4]}
    for name, values in accuracy.items():
        folder = record / f"{name}-{claims.run_hash(name, None, None)}"
        folder.mkdir(parents=True)
        for seed, value in enumerate(values):
            (folder / f"seed{seed}.json").write_text(json.dumps({"accuracy": value}))
    (record / f"rft-{claims.run_hash('rft', None, None)}" / "seed4.json").write_text(json.dumps({"accuracy": 0.0}))
    monkeypatch.setattr(claims, "train", lambda *a, **k: pytest.fail("--table-only trained a run"))
    claims.main(["--rows", "rft,nft", "--table-only", "--record", str(record), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("| RFT |")]
    assert "| 0.800 | 0.667 | -0.133 [" in row and "| 3 |" in row  # seeds 0-2 paired; seed 4 is past a gap
    assert "not recorded at two paired seeds yet: nft" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.heavy
def test_claims_script_runs_rows_at_a_toy_budget_and_reuses_its_runs(tmp_path):
    """One row (its runs: GRPO and dynamic sampling) at 2 steps and 1 seed: the table and claims.json; a
    second call with a second seed runs only the new seed."""
    out = tmp_path / "claims"

    def claims(seeds):
        args = ["--rows", "dynamic_sampling", "--seeds", seeds, "--steps", "2", "--warmup-steps", "20"]
        proc = subprocess.run(
            [sys.executable, "benchmarks/claims.py", *args, "--out", str(out), "--record", str(tmp_path / "record")],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    claims("1")
    stdout = claims("2")
    assert stdout.count("running ") == 2  # seed 1 of the two runs, seed 0 from their summary.json
    rows = json.loads((out / "claims.json").read_text())["rows"]
    assert [r["key"] for r in rows] == ["dynamic_sampling"] and all(r["seeds"] == 2 for r in rows)
    assert all(r["verdict"] in ("reproduced", "not reproduced", "inconclusive") for r in rows)
    assert "| DAPO dynamic sampling |" in stdout


@pytest.mark.slow
@pytest.mark.heavy
def test_async_speed_script_runs_sync_and_async_through_a_server(tmp_path):
    pytest.importorskip("vllm")
    proc = subprocess.run(
        [sys.executable, "benchmarks/async_speed.py", "--seeds", "1", "--steps", "2", "--async-steps", "0,1"]
        + ["--out", str(tmp_path / "async"), "--port", "8317"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "async" / "results-vllm_server.json").read_text())
    assert set(results) == {"0", "1"} and all(r[0]["steps_per_s"] > 0 for r in results.values())
    assert results["0"][0]["update_wait_s"] == 0 and results["1"][0]["update_wait_s"] > 0


def test_real_model_paired_differences_over_seeds_and_over_problems():
    """method - baseline: the mean of the per-seed differences, a t-interval over seeds, and a bootstrap over
    problems of each problem's difference averaged over the seeds (the same mean)."""
    methods = benchmark_module("real_model_methods")
    method = [{"correct": [4, 2, 0, 4]}, {"correct": [4, 4, 0, 2]}]
    baseline = [{"correct": [2, 2, 0, 0]}, {"correct": [0, 2, 0, 2]}]
    mean, low, high, p_low, p_high = methods.paired(method, baseline, methods.accuracy)
    # per seed: (10 - 4) / 16 = 0.375 and (10 - 4) / 16 = 0.375: no spread over seeds
    assert mean == pytest.approx(0.375) and low == pytest.approx(0.375) and high == pytest.approx(0.375)
    # per problem, averaged over the seeds: 0.75, 0.25, 0, 0.5 -> the bootstrap interval brackets 0.375
    assert 0 <= p_low < 0.375 < p_high <= 0.75
    solved = methods.paired(method, baseline, methods.solved)
    assert solved[0] == pytest.approx(0.25)  # 3 of 4 problems solved against 2 of 4, in both seeds


def test_real_model_runs_are_recorded_by_method_and_recipe_and_tables_come_from_the_record(
    tmp_path, monkeypatch, capsys
):
    """A recorded run is not run again; the hash tells the methods apart and follows the recipe's text; with
    --table-only the headline and the methods table come from the record alone, each method over its seeds
    without gaps."""
    methods = benchmark_module("real_model_methods")
    assert len({methods.run_hash(m) for m in methods.METHODS}) == len(methods.METHODS)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(methods.RECIPE.read_text())
    monkeypatch.setattr(methods, "RECIPE", recipe)
    before = methods.run_hash("grpo")
    recipe.write_text(recipe.read_text() + "\n# another line\n")
    assert methods.run_hash("grpo") != before
    record = tmp_path / "record"

    def write(method, seed, correct):
        folder = record / f"{method}-{methods.run_hash(method)}"
        folder.mkdir(parents=True, exist_ok=True)
        summary = {"correct": correct, "mean@4": sum(correct) / 16, "pass@4": sum(c > 0 for c in correct) / 4}
        texts = {"distinct_texts": 1.0 + seed, "distinct_first_lines": 1.0} if method == "gspo" else {}
        (folder / f"seed{seed}.json").write_text(json.dumps({**summary, "tokens": 12.0, "distinct": 1.5, **texts}))

    write("base", 0, [0, 1, 0, 0])
    for seed in range(3):
        write("grpo", seed, [4, 2, 1, seed])
        write("gspo", seed, [4, 2, 1, seed + 1])
    write("dr_grpo", 1, [4, 4, 4, 4])  # seed 0 missing: not in the table
    args = ["--table-only", "--record", str(record), "--seeds", "3", "--methods", "grpo,gspo,dr_grpo"]
    methods.main(args)
    out = capsys.readouterr().out
    assert "| over 3 seeds | | | +0.438 [+0.282, +0.593] (t-interval) | |" in out
    assert "| gspo | grpo | 3 |" in out and "+0.062 [+0.062, +0.062]" in out
    assert "| 12.000 | 2.00 (1.00) | - |" in out and "| grpo | - | 3 | 0.500 | 0.917 | 12.000 | - | - |" in out
    assert "dr_grpo" not in out
    methods.main([*args[:4], "1", *args[5:]])  # one seed: no spread over seeds to print
    out = capsys.readouterr().out
    assert "| gspo | grpo | 1 |" in out and "+0.062 [one seed] [" in out and "nan" not in out
    args = ["--record", str(record), "--seeds", "1", "--methods", "grpo", "--model", str(recipe), "--data", str(recipe)]
    methods.main(args)  # every run recorded: nothing trains
    assert "running" not in capsys.readouterr().out


def test_between_task_has_many_right_answers_graded_by_number_between(tmp_path):
    """The arithmetic script's between task: distinct questions whose answer column holds the bounds, a clear
    error when more are asked than exist; the real-model script grades its samples by number_between and
    counts distinct right answers."""
    arithmetic_task = benchmark_module("arithmetic_task")
    arithmetic_task.write_splits(tmp_path, 800, 200, tasks=("between",))
    rows = [json.loads(line) for name in ("train", "test") for line in (tmp_path / f"{name}.jsonl").open()]
    assert len({r["question"] for r in rows}) == 1000
    for r in rows:
        low, high = (int(x) for x in r["answer"].split(","))
        assert 5 <= high - low <= 20 and r["question"].endswith(f"greater than {low} and less than {high}.")
    with pytest.raises(SystemExit, match="fewer distinct questions"):
        arithmetic_task.write_splits(tmp_path, 1280, 1, tasks=("between",))
    methods = benchmark_module("real_model_methods")
    samples = ["say 57", "\\boxed{57}", "58", "60"]
    problems = [{"gold": "55,60", "samples": [{"text": t, "tokens": 5} for t in samples]}]
    problems.append({"gold": "10,20", "samples": [{"text": "no", "tokens": 1}] * 4})
    grades = methods.between_grades(problems)
    assert grades["correct"] == [3, 0] and grades["distinct"] == 1.0  # 2 distinct right answers, then none
    assert grades["right_answers"] == [2, 0]
    # 57, 57, 58 lie 2, 2, 3 above the lower bound 55; 60 is not below 60; 4 and 9 numbers lie between
    assert grades["right_offsets"] == [[2, 2, 3], []] and grades["possible"] == [4, 9]
    spread = methods.answer_spread(grades)
    assert spread["right"] == 3 and spread["a1"] == 0 and spread["a2"] == 2 / 3
    assert spread["of_most"] == (2 / 4 + 0) / 2  # 2 distinct of the 4 the samples could hold, then none
    assert spread["per_right"] == 2 / 3  # the problem without a right sample does not count
    problems[1]["gold"] = "10,12"  # one right number: one distinct right answer would be all of them
    problems[1]["samples"] = [{"text": "11", "tokens": 1}] * 4
    assert methods.answer_spread(methods.between_grades(problems))["of_most"] == (2 / 4 + 1 / 1) / 2
    problems[1]["gold"] = "10,11"  # no whole number between: nothing to hold, and no error
    assert methods.answer_spread(methods.between_grades(problems))["of_most"] == (2 / 4 + 0) / 2
    assert grades["mean@4"] == 3 / 8 and grades["pass@4"] == 0.5 and grades["tokens"] == 3.0
    assert methods.distinct_texts(problems) == 2.5  # 4 different texts, then one repeated; outer spaces aside
    problems[1]["samples"] = [{"text": t, "tokens": 1} for t in ("no", " no\n", "No", "no")]
    assert methods.distinct_texts(problems) == 3.0
    problems[0]["samples"] = [{"text": t, "tokens": 1} for t in ("57\nbye", "57\nhi", "\n57", "58\nbye")]
    assert methods.distinct_texts(problems) == 3.0  # 4 different texts, then 2
    assert methods.distinct_texts(problems, first_line=True) == 2.0  # 57 and 58, then 2
    # the training reward is the task's own, whichever others the run logs beside it
    metrics = tmp_path / "metrics.jsonl"
    logged = [
        {"reward/final_number": 0.1 * i, "reward/number_between": 0.5, "completion/length_mean": 9} for i in range(8)
    ]
    metrics.write_text("".join(json.dumps(row) + "\n" for row in logged))
    assert methods.training_summary(metrics, between=True)["train_reward_start"] == 0.5
    assert methods.training_summary(metrics, between=False)["train_reward_start"] == pytest.approx(0.2)


def test_between_rows_give_the_paired_difference_of_distinct_right_answers(tmp_path, capsys):
    """DARLING's claim on the between task, more distinct right answers, gets the same paired intervals as
    accuracy; a record without the per-problem counts (written before they were kept) prints none."""
    methods = benchmark_module("real_model_methods")
    record = tmp_path / "record"

    def write(method, seed, right):
        folder = record / f"{method}-{methods.run_hash(method)}"
        folder.mkdir(parents=True, exist_ok=True)
        summary = {"correct": [4, 4, 2], "mean@4": 10 / 12, "pass@4": 1.0, "tokens": 9.0, "distinct": 1.0}
        if right is not None:
            summary["right_answers"] = right
        (folder / f"seed{seed}.json").write_text(json.dumps(summary))

    for seed in range(2):
        write("grpo_between", seed, [1, 1, 1])
        write("darling_between", seed, [3, 2 + seed, 1])
    args = ["--table-only", "--record", str(record), "--seeds", "2", "--methods", "grpo_between,darling_between"]
    methods.main(args)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| darling_between"))
    # per seed: +3/3 and +4/3 distinct right answers a problem; no accuracy difference
    assert row.count("+0.000 [+0.000, +0.000] [+0.000, +0.000]") == 2
    # per problem, averaged over the seeds: +2, +1.5, 0
    assert row.endswith("| +1.167 [-0.951, +3.284] [+0.500, +2.000] |")
    assert "Where the right answers lie" not in capsys.readouterr().out  # no record kept the right numbers
    write("grpo_between", 1, None)
    methods.main(args)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| darling_between"))
    assert row.endswith("| - |")
    # the answer spread table: a row per run that kept where its right answers lie, at its seed
    folder = record / f"darling_between-{methods.run_hash('darling_between')}"
    kept = {**json.loads((folder / "seed1.json").read_text()), "right_offsets": [[1, 1, 2], [1], []]}
    kept["possible"] = [9, 4, 4]  # 9 right numbers: 4 samples can hold 4 of them
    (folder / "seed1.json").write_text(json.dumps(kept))
    methods.main(args)
    out = capsys.readouterr().out.split("Where the right answers lie on the between task:")[1]
    assert [line for line in out.splitlines() if line.startswith("| darling_between")] == [
        "| darling_between | 1 | 4 | 75% | 25% | 25% | 0.83 |"  # (2/4 + 1/4 + 0)/3; (2/3 + 1)/2
    ]
