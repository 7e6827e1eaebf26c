import json

import pytest

from rltune.errors import RLTuneError
from rltune.eval.benchmarks import BENCHMARKS, get_benchmark, gsm8k_gold, integer_gold, minerva_gold, olympiad_gold
from rltune.eval.grading import grade_many

EXPECTED_SIZES = {
    "gsm8k": 1319,
    "math500": 500,
    "aime24": 30,
    "aime25": 30,
    "amc23": 40,
    "minerva_math": 272,
    "olympiadbench": 675,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_SIZES))
def test_every_gold_grades_true_against_itself(benchdata, name):
    rows = BENCHMARKS[name].load(benchdata)
    assert len(rows) == EXPECTED_SIZES[name]
    golds = [row["gold"] for row in rows]
    verdicts = grade_many([f"So the final answer is \\boxed{{{g}}}." for g in golds], golds)
    failures = [(i, g) for i, (g, ok) in enumerate(zip(golds, verdicts)) if not ok]
    assert failures == []
    assert all(row["question"] for row in rows)


def test_gold_adapters():
    assert gsm8k_gold({"answer": "He pays 2*1000=2,000\n#### 2,125"}) == "2125"
    assert gsm8k_gold({"answer": "#### 0,1"}) == "0,1"  # only real thousands separators go
    assert integer_gold({"answer": "025"}) == "25"
    assert integer_gold({"answer": 27.0}) == "27"
    assert integer_gold({"answer": "3.5"}) == "3.5"
    assert minerva_gold({"solution": "Thus \\boxed{4.5e33} erg."}) == "4.5e33"
    assert olympiad_gold({"final_answer": ["$3$", "$-1$"]}) == "3, -1"
    assert olympiad_gold({"final_answer": ["$(-\\infty, 0) \\cup\\{1\\}$."]}) == "(-\\infty, 0) \\cup\\{1\\}"


def test_limit_and_local_layout(benchdata):
    rows = BENCHMARKS["aime24"].load(benchdata, limit=3)
    assert len(rows) == 3 and all(r["gold"].isdigit() and not r["gold"].startswith("0") for r in rows)


def test_custom_jsonl_benchmark(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"q": "1+1?", "a": " 2 "}) + "\n")
    bench = get_benchmark(f"{path}:q:a")
    assert bench.name == "mine"
    assert bench.load() == [{"q": "1+1?", "a": " 2 ", "question": "1+1?", "gold": "2", "groups": "{}"}]


def test_bad_benchmark_specs(tmp_path):
    with pytest.raises(RLTuneError, match="unknown benchmark 'gsm9k'"):
        get_benchmark("gsm9k")
    with pytest.raises(RLTuneError, match="does not exist"):
        get_benchmark(f"{tmp_path}/none.jsonl:q:a")
    with pytest.raises(RLTuneError, match="is --data-dir right"):
        BENCHMARKS["gsm8k"].load(tmp_path)
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"q": "1+1?", "answer": "2"}) + "\n" + json.dumps({"q": "2+2?", "answer": None}) + "\n")
    with pytest.raises(
        RLTuneError, match=rf"benchmark 'mine': row 2 of {path}: no value in 'answer' \(missing or null\)"
    ):
        get_benchmark(f"{path}:q:answer").load()
    with pytest.raises(
        RLTuneError, match=r"row 1 of .*: no value in 'a' \(missing or null\); its fields: \['answer', 'q'\]"
    ):
        get_benchmark(f"{path}:q:a").load()


# Where each benchmark loads from without --data-dir: the hub dataset, its subset and split (AIME and
# OlympiadBench publish their problems as a 'train' split only), and the breakdowns its rows carry.
HUB_SOURCES = {
    "gsm8k": ("openai/gsm8k", "main", "test", {}),
    "math500": ("HuggingFaceH4/MATH-500", None, "test", {"level": "3", "subject": "Algebra"}),
    "aime24": ("HuggingFaceH4/aime_2024", None, "train", {"year": "2024"}),
    "aime25": ("yentinglin/aime_2025", None, "train", {"year": "2025"}),
    "amc23": ("math-ai/amc23", None, "test", {}),
    "minerva_math": ("math-ai/minervamath", None, "test", {"type": "Physics"}),
    "olympiadbench": ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train", {"subfield": "Algebra"}),
}


@pytest.mark.parametrize("name", sorted(HUB_SOURCES))
def test_each_benchmark_names_its_hub_source_and_breakdowns(name):
    bench = BENCHMARKS[name]
    path, subset, split, groups = HUB_SOURCES[name]
    assert (bench.hub_path, bench.hub_subset, bench.hub_split) == (path, subset, split)
    row = {"level": "3", "subject": "Algebra", "type": "Physics", "subfield": "Algebra"}  # no year: the copy's own
    assert bench.groups(row) == groups
