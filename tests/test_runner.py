"""The eval runner's parts that need no engine: the completion cache file, the model fingerprint, voting
over graded samples and the benchmark summary."""

from __future__ import annotations

import json
import logging

import pytest

from rltune.eval.metrics import bootstrap_ci
from rltune.eval.runner import EvalSettings, _Cache, _grade, flat_metrics, format_table, model_fingerprint, summarize


def test_the_cache_reads_good_lines_drops_torn_ones_and_rewrites_the_file(tmp_path, caplog):
    path = tmp_path / "gsm8k.jsonl"
    good = [json.dumps({"key": "a", "samples": [{"text": "1"}]}), json.dumps({"key": "b", "samples": [{"text": "2"}]}),
            json.dumps({"key": "a", "samples": [{"text": "3"}, {"text": "4"}]})]  # fmt: skip
    path.write_text("\n".join([good[0], "", '{"key": "c", "samp', good[1], '{"key": "d"}', good[2]]) + "\n")
    with caplog.at_level(logging.WARNING):
        cache = _Cache(path)
    # every good line counts, before and after the bad ones; a key's samples add up across lines
    assert {k: [s["text"] for s in v] for k, v in cache.entries.items()} == {"a": ["1", "3", "4"], "b": ["2"]}
    assert "line(s) 3, 5 are truncated or garbled" in caplog.text and str(path) in caplog.text
    assert path.read_text().splitlines() == good
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = _Cache(path)
    assert again.entries == cache.entries and "garbled" not in caplog.text


def test_a_cache_with_only_good_lines_is_left_as_it_is(tmp_path):
    path = tmp_path / "math.jsonl"
    text = json.dumps({"key": "a", "samples": [{"text": "1"}]}) + "\n\n"
    path.write_text(text)
    assert _Cache(path).entries == {"a": [{"text": "1"}]}
    assert path.read_text() == text
    assert _Cache(tmp_path / "missing.jsonl").entries == {}


def test_the_fingerprint_follows_each_weight_config_and_tokenizer_file(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "config.json").write_text("{}")
    first = model_fingerprint(str(model))
    assert first.startswith(f"{model} (sha256 ") and model_fingerprint(str(model)) == first
    (model / "README.md").write_text("not read")
    assert model_fingerprint(str(model)) == first
    (model / "tokenizer.json").write_text("{}")
    assert model_fingerprint(str(model)) != first
    # the file names are part of the digest: the same bytes under other names are another model
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "model.safetensors").write_bytes(b"weights")
    (renamed / "config.json").write_text("{}")
    moved = model_fingerprint(str(renamed)).split("sha256 ")[1]
    (renamed / "model.safetensors").rename(renamed / "other.safetensors")
    assert model_fingerprint(str(renamed)).split("sha256 ")[1] != moved
    assert model_fingerprint("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"


def test_samples_without_an_answer_never_form_a_majority(tmp_path):
    """Three samples with no boxed answer and two agreeing wrong ones: the majority is the wrong answer,
    the unanswered ones are no class at all."""
    texts = ["no answer", "still none", "nothing", "\\boxed{5}", "\\boxed{5}", "\\boxed{4}"]
    samples = [[{"text": t, "finish_reason": "stop", "tokens": 3} for t in texts]]
    settings = EvalSettings(benchmarks=["x"], n=6, k=[1, 6])
    (problem,) = _grade([{"question": "2+2", "gold": "4"}], samples, settings)
    assert [s["answer"] for s in problem["samples"]] == [None, None, None, "5", "5", "4"]
    assert problem["correct"] == 1 and problem["distinct_answers"] == 2
    assert problem["maj"] == {"1": False, "6": False}


def test_the_summary_cis_use_the_run_seed():
    corrects = [(i * 7) % 5 for i in range(40)]  # of 4 samples each
    problems = [{"n": 4, "correct": c, "maj": {"1": c > 2}, "distinct_answers": 1,
                 "samples": [{"correct": i < c, "answer": "1", "finish_reason": "stop", "tokens": 4} for i in range(4)]}
                for c in corrects]  # fmt: skip
    means = [c / 4 for c in corrects]
    assert bootstrap_ci(means, seed=0) != bootstrap_ci(means, seed=7)
    for seed in (0, 7):
        metrics = summarize(problems, EvalSettings(benchmarks=["x"], n=4, k=[1], seed=seed), 1.0)
        assert metrics["mean@4_ci"] == bootstrap_ci(means, seed=seed)
        assert metrics["pass@1_ci"] == bootstrap_ci(means, seed=seed)
    assert metrics["mean@4"] == pytest.approx(sum(means) / 40)


def graded_problem(correct: list[bool], tokens: list[int], groups: dict, truncated: int = 0) -> dict:
    samples = [
        {"correct": c, "answer": "1", "finish_reason": "length" if i < truncated else "stop", "tokens": t}
        for i, (c, t) in enumerate(zip(correct, tokens))
    ]
    n = len(correct)
    return {"n": n, "correct": sum(correct), "maj": {"1": correct[0], "2": correct[0]}, "distinct_answers": 1,
            "samples": samples, "groups": groups}  # fmt: skip


def test_the_summary_reports_pass_hat_k_lengths_of_right_and_wrong_answers_and_each_breakdown():
    problems = [
        graded_problem([True, True, True, False], [10, 12, 14, 40], {"level": "1", "subject": "Algebra"}, 1),
        graded_problem([True, False, False, False], [20, 50, 60, 70], {"level": "10", "subject": "Algebra"}),
        graded_problem([True, True, False, False], [8, 9, 30, 30], {"level": "2"}),
    ]
    m = summarize(problems, EvalSettings(benchmarks=["x"], n=4, k=[1, 2]), 1.0)
    # pass^2: both of two samples right, C(c, 2) / C(4, 2) per problem
    assert m["pass^2"] == pytest.approx((3 / 6 + 0 + 1 / 6) / 3) and m["pass^1"] == m["pass@1"]
    assert m["pass@2"] > m["pass@1"] > m["pass^2"] and len(m["pass^2_ci"]) == 2
    assert m["tokens"]["right"]["mean"] == pytest.approx((10 + 12 + 14 + 20 + 8 + 9) / 6)
    assert m["tokens"]["wrong"]["mean"] == pytest.approx((40 + 50 + 60 + 70 + 30 + 30) / 6)
    assert m["tokens"]["right"]["truncated_fraction"] == pytest.approx(1 / 6) and m["tokens"]["all"]["samples"] == 12
    assert list(m["by"]["level"]) == ["1", "2", "10"]  # numbers by value
    assert m["by"]["level"]["10"]["problems"] == 1 and m["by"]["level"]["10"]["mean@4"] == 0.25
    assert m["by"]["subject"] == {"Algebra": {**m["by"]["subject"]["Algebra"], "problems": 2}}
    assert m["by"]["subject"]["Algebra"]["pass^2"] == pytest.approx((3 / 6 + 0) / 2)
    table = format_table({"settings": {"n": 4, "k": [1, 2]}, "benchmarks": {"x": {"metrics": m}}})
    assert "pass^2" in table and "  level=10" in table and "  subject=Algebra" in table and "12/47" in table
    flat = flat_metrics({"benchmarks": {"x": {"metrics": m}}})
    assert flat["eval/x/by/level/10/mean@4"] == 0.25 and flat["eval/x/tokens/wrong/mean"] == pytest.approx(280 / 6)


def test_the_shipped_benchmarks_break_down_by_their_own_fields(benchdata):
    from rltune.eval.benchmarks import get_benchmark

    def groups(name: str, **kwargs) -> list[dict]:
        return [json.loads(row["groups"]) for row in get_benchmark(name).load(benchdata, **kwargs)]

    math500 = groups("math500")
    assert {g["level"] for g in math500} == {"1", "2", "3", "4", "5"} and len({g["subject"] for g in math500}) == 7
    assert {g["year"] for g in groups("aime24")} == {"2024"} and {g["year"] for g in groups("aime25")} == {"2025"}
    assert len({g["subfield"] for g in groups("olympiadbench", limit=200)}) > 1
    assert groups("gsm8k", limit=3) == [{}, {}, {}]


def test_a_mixed_set_breaks_down_by_data_source_and_by_the_columns_asked_for(tmp_path):
    from rltune.eval.benchmarks import aime_year, get_benchmark

    rows = [{"q": "1+1", "a": "2", "data_source": "easy", "book": "b1"}, {"q": "2+2", "a": "4", "data_source": "hard"}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = get_benchmark(f"{path}:q:a").load(breakdowns=("book",))
    assert [json.loads(r["groups"]) for r in loaded] == [{"data_source": "easy", "book": "b1"}, {"data_source": "hard"}]
    url = "https://artofproblemsolving.com/wiki/index.php/1999_AIME_Problems/Problem_3"
    assert aime_year("2024")({"url": url}) == {"year": "1999"} and aime_year("2024")({"Year": 2001}) == {"year": "2001"}
    assert aime_year("2024")({}) == {"year": "2024"}


def test_a_recipes_evaluation_takes_each_setting_from_the_recipe():
    """The periodic eval and `rltune eval --recipe` sample as the recipe says: every setting, at a value
    other than its default (and the eval section's instruction and max_tokens over the rollout's)."""
    from rltune.config import load_recipe

    overrides = [
        "eval.benchmarks=[math500, aime24]", "eval.n=6", "eval.k=[1,3]", "eval.temperature=0.9", "eval.top_p=0.8",
        "eval.limit=7", "eval.data_dir=/data/bench", "data.use_chat_template=false", "data.system_prompt=Be brief.",
        "train.seed=11", "rollout.environment=python_tool", "rollout.environment_kwargs={timeout_s: 2.0}",
        "rollout.max_turns=3", "rollout.max_tokens=99", "data.instruction='{question} Box it.'",
    ]  # fmt: skip
    settings = EvalSettings.from_recipe(load_recipe("demo_cpu", overrides))
    expected = dict(
        benchmarks=["math500", "aime24"], n=6, k=[1, 3], temperature=0.9, top_p=0.8, limit=7, data_dir="/data/bench",
        use_chat_template=False, system_prompt="Be brief.", seed=11, environment="python_tool",
        environment_kwargs={"timeout_s": 2.0}, max_turns=3, max_tokens=99, instruction="{question} Box it.",
    )  # fmt: skip
    assert {key: getattr(settings, key) for key in expected} == expected
    own = EvalSettings.from_recipe(
        load_recipe("demo_cpu", [*overrides, "eval.max_tokens=40", "eval.instruction='Q: {question}'"])
    )
    assert (own.max_tokens, own.instruction) == (40, "Q: {question}")
