"""DTO pipeline pieces on a scripted engine (the forced answers must be fixed to test the selection
logic exactly); tests/test_dto_e2e.py runs the whole pipeline on the real vLLM engine."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from rltune.batch import RolloutBatch
from rltune.config import load_recipe
from rltune.demo import THINKING_CHARS, build_tokenizer
from rltune.dto import (
    AnswerForcer,
    DTORecipe,
    Item,
    PruneConfig,
    StopPointConfig,
    build_pairs,
    find_stop_points,
    judge_prompts,
    parse_judge_reply,
    prune_by_judge,
    prune_by_rule,
    stop_point,
    verify,
)
from rltune.errors import RLTuneError
from rltune.thinking import split_trace

TOKENIZER = build_tokenizer(THINKING_CHARS, with_bos=False)
FORCE = "</think>\\boxed{"


class ScriptedEngine:
    """Answers a forced prompt with the last number stated before the force suffix; answers a judge
    prompt with `judge_reply`. Deterministic, so stop points and pruning decisions are exact."""

    judge_reply = "REMOVE: 1"

    def __init__(self, tokenizer: Any = None, **_: Any):
        self.tokenizer = tokenizer or TOKENIZER
        self.prompts: list[str] = []

    def generate(self, prompt_ids, rows, sampling) -> RolloutBatch:
        batch = RolloutBatch([], [], [], [], [], [], list(rows))
        for group, ids in enumerate(prompt_ids):
            text = self.tokenizer.decode(ids)
            self.prompts.append(text)
            if text.endswith(FORCE):
                numbers = re.findall(r"-?\d+", text[: -len(FORCE)].split("=", 1)[-1])
                reply = (numbers[-1] if numbers else "") + "}"
            else:
                reply = self.judge_reply
            for _ in range(sampling.n):
                batch.prompt_ids.append(list(ids))
                batch.completion_ids.append(self.tokenizer(reply)["input_ids"])
                batch.completion_texts.append(reply)
                batch.sampling_logprobs.append([0.0])
                batch.finish_reasons.append("stop")
                batch.group_ids.append(group)
        return batch

    def close(self) -> None:
        pass


def make_item(completion: str, gold: str, question: str = "3+4=") -> Item:
    trace = split_trace(completion, ["Wait", "Hmm", "Let me check"])
    return Item(question, gold, question, trace, original_correct=False, group=0)


def forcer(samples: int = 2) -> AnswerForcer:
    return AnswerForcer(ScriptedEngine(), TOKENIZER, StopPointConfig(force_suffix=FORCE, samples=samples))


def test_stop_point_is_the_earliest_boundary_reaching_the_threshold():
    assert stop_point([0.0, 0.5, 1.0], 0.5) == 2
    assert stop_point([0.25, 0.25], 0.5) is None
    assert stop_point([], 0.5) is None


def test_stop_point_rescues_a_wrong_trace_and_the_rule_prunes_a_detour():
    wrong = make_item("<think>I get 6. Wait, 7. Hmm, 7. Let me check: 8.</think>\\boxed{8}", "7")
    right = make_item("<think>I get 7. Hmm, 7.</think>\\boxed{7}", "7")
    never = make_item("<think>I get 5. Wait, 6.</think>\\boxed{6}", "7")
    force = forcer()
    find_stop_points([wrong, right, never], force, threshold=0.5)
    assert (wrong.stop, right.stop, never.stop) == (2, 1, None)
    assert wrong.kept == [0, 1] and wrong.answer == "7}"
    # every boundary of every trace went to the engine in one batched call
    assert force.calls == 1
    prune_by_rule([wrong, right], force, threshold=0.5)
    assert wrong.kept == [1]  # "I get 6." is a detour: " Wait, 7." alone still reaches 7
    assert right.kept == [0]
    verify([wrong, right], force, threshold=0.5)
    assert (
        wrong.verified_pruned
        and wrong.completion(wrong.kept, FORCE, wrong.answer) == "<think> Wait, 7.</think>\\boxed{7}"
    )


class SumEngine(ScriptedEngine):
    """Answers a forced prompt with the sum of every number stated in the trace: a segment then matters
    on its own, and dropping it loses the answer."""

    def generate(self, prompt_ids, rows, sampling) -> RolloutBatch:
        batch = super().generate(prompt_ids, rows, sampling)
        for i, ids in enumerate(batch.prompt_ids):
            text = self.tokenizer.decode(ids)
            reply = str(sum(int(n) for n in re.findall(r"-?\d+", text[: -len(FORCE)].split("=", 1)[-1]))) + "}"
            batch.completion_texts[i], batch.completion_ids[i] = reply, self.tokenizer(reply)["input_ids"]
        return batch


def test_the_rule_keeps_a_segment_whose_drop_loses_the_answer():
    needed = make_item("<think>I get 3. Hmm, and 4.</think>\\boxed{7}", "7")
    force = AnswerForcer(SumEngine(), TOKENIZER, StopPointConfig(force_suffix=FORCE, samples=2))
    find_stop_points([needed], force, threshold=0.5)
    assert needed.stop == 2 and needed.kept == [0, 1]
    prune_by_rule([needed], force, threshold=0.5)
    assert needed.kept == [0, 1]  # without "I get 3." the trace answers 4


def test_verification_falls_back_to_the_plain_truncation():
    item = make_item("<think>I get 6. Wait, 7.</think>\\boxed{7}", "7")
    find_stop_points([item], forcer(), 0.5)
    item.kept = [0]  # a pruning that loses the answer
    verify([item], forcer(), 0.5)
    assert item.kept == [0, 1] and not item.verified_pruned and item.answer == "7}"


def test_judge_reply_parsing():
    assert parse_judge_reply("The second one repeats.\nREMOVE: 1, 3", steps=4) == {0, 2}
    assert parse_judge_reply("remove: 2\nREMOVE: none", steps=4) == set()
    assert parse_judge_reply("REMOVE: 4, 9, 0", steps=4) == set()  # never the last step, nor out of range
    assert parse_judge_reply("I cannot tell.", steps=4) == set()


def test_judge_prompt_lists_the_steps_and_its_choice_is_applied():
    item = make_item("<think>I get 6. Wait, 7. Hmm, 7.</think>\\boxed{7}", "7")
    find_stop_points([item], forcer(), 0.5)
    prompt = judge_prompts([item], PruneConfig(method="judge"), TOKENIZER)[0]
    assert "[1] I get 6.\n[2] Wait, 7.\n[3] Hmm, 7." not in prompt  # only the steps up to the stop point
    assert "[1] I get 6.\n[2] Wait, 7.\n" in prompt and "answer 7?" in prompt
    prune_by_judge([item], ScriptedEngine(), TOKENIZER, PruneConfig(method="judge"), seed=0)
    assert item.kept == [1] and item.judge_reply == "REMOVE: 1"


class OneJudgeReplyEach(ScriptedEngine):
    """Judges by the prompt (a detour through 6: drop step 1; else keep everything) and records how it was asked."""

    asked: list = []

    def generate(self, prompt_ids, rows, sampling) -> RolloutBatch:
        OneJudgeReplyEach.asked.append(sampling)
        batch = super().generate(prompt_ids, rows, sampling)
        batch.completion_texts = [
            "REMOVE: 1" if "I get 6" in self.tokenizer.decode(batch.prompt_ids[i]) else "REMOVE: none"
            for i in range(len(batch))
        ]
        return batch


def test_the_judge_answers_each_trace_once_greedily_within_its_token_budget():
    items = [
        make_item("<think>I get 6. Wait, 7.</think>\\boxed{7}", "7"),
        make_item("<think>I get 7. Hmm, 7.</think>\\boxed{7}", "7"),
    ]
    find_stop_points(items, forcer(), 0.5)
    OneJudgeReplyEach.asked.clear()
    prune_by_judge(items, OneJudgeReplyEach(), TOKENIZER, PruneConfig(method="judge", judge_max_tokens=40), seed=5)
    (sampling,) = OneJudgeReplyEach.asked
    assert (sampling.n, sampling.temperature, sampling.max_tokens, sampling.seed) == (1, 0.0, 40, 5)
    assert [item.judge_reply for item in items] == ["REMOVE: 1", "REMOVE: none"]
    assert [item.kept for item in items] == [[1], [0]]


@pytest.fixture
def traces_recipe(tmp_path: Path) -> Path:
    model = tmp_path / "tokenizer"
    TOKENIZER.save_pretrained(model)
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    traces = [
        ("3+4=", "7", "<think>I get 6. Wait, 7. Hmm, 8.</think>\\boxed{8}"),  # wrong, rescued at step 2
        ("3+4=", "7", "<think>I get 7. Hmm, 7. Wait, 7.</think>\\boxed{7}"),  # right, cut to one step
        ("2+2=", "4", "<think>I get 4.</think>\\boxed{4}"),  # right and already minimal: no pair
        ("2+2=", "4", "<think>I get 5. Wait, 3.</think>\\boxed{3}"),  # never right: no pair
    ]
    data = tmp_path / "traces.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a, "trace": t}) + "\n" for q, a, t in traces))
    recipe = {
        "model": {"path": str(model)},
        "data": {"path": str(data), "instruction": "{question}", "use_chat_template": False},
        "rollout": {"engine": "tests.test_dto:ScriptedEngine", "max_tokens": 64},
        "thinking": {"cues": ["Wait", "Hmm"]},
        "stop_point": {"force_suffix": FORCE, "samples": 2},
        "pairs": {"traces_column": "trace", "output_dir": str(tmp_path / "pairs")},
    }
    path = tmp_path / "dto.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_build_pairs_writes_a_dataset_with_statistics(traces_recipe: Path):
    from datasets import load_from_disk

    summary = build_pairs(load_recipe(traces_recipe, cls=DTORecipe))
    assert summary["traces"] == 4 and summary["originally_correct"] == 2
    assert summary["with_stop_point"] == 3 and summary["rescued"] == 1 and summary["pairs"] == 2
    assert summary["mean_tokens_optimised"] < summary["mean_tokens_original"]
    assert 0 < summary["attention_flops_ratio_optimised"] < summary["attention_flops_ratio_truncated"] <= 1
    out = Path(load_recipe(traces_recipe, cls=DTORecipe).pairs.output_dir)
    pairs = load_from_disk(str(out / "dataset"))
    rows = sorted(pairs, key=lambda r: r["rejected_correct"])
    assert rows[0]["chosen"] == "<think> Wait, 7.</think>\\boxed{7}" and not rows[0]["rejected_correct"]
    assert (
        rows[1]["chosen"] == "<think>I get 7.</think>\\boxed{7}"
        and rows[1]["rejected_tokens"] > rows[1]["chosen_tokens"]
    )
    logged = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
    assert len(logged) == 4 and logged[0]["segments"] == ["I get 6.", " Wait, 7.", " Hmm, 8."]
    assert logged[0]["stop"] == 2 and logged[0]["correct"] is False  # rescued: right once cut after step 2
    assert json.loads((out / "summary.json").read_text()) == summary
    # a second run does not silently replace the first one's pairs
    with pytest.raises(RLTuneError, match="pairs.overwrite"):
        build_pairs(load_recipe(traces_recipe, cls=DTORecipe))
    rejected_longest = load_recipe(traces_recipe, ["pairs.overwrite=true", "pairs.rejected=longest"], cls=DTORecipe)
    assert build_pairs(rejected_longest)["pairs"] == 3  # 2+2: the long wrong trace is the rejected side


def test_bad_dto_settings_are_refused(traces_recipe: Path):
    from rltune.errors import ConfigError

    with pytest.raises(ConfigError, match="threshold"):
        build_pairs(load_recipe(traces_recipe, ["stop_point.threshold=0"], cls=DTORecipe))
    with pytest.raises(RLTuneError, match="traces_column"):
        build_pairs(load_recipe(traces_recipe, ["pairs.traces_column=nope"], cls=DTORecipe))


class HalfRightEngine(ScriptedEngine):
    """ScriptedEngine whose every second sample of a forced answer is wrong; samples traces itself (the same
    trace for every prompt) and records each call's sampling settings and whether it was closed."""

    calls: list = []
    closed: list = []
    trace = "<think>I get 7. Hmm, 7.</think>\\boxed{7}"

    def generate(self, prompt_ids, rows, sampling) -> RolloutBatch:
        HalfRightEngine.calls.append(sampling)
        batch = super().generate(prompt_ids, rows, sampling)
        for i, ids in enumerate(batch.prompt_ids):
            if sampling.progress == "sampling traces":
                reply = self.trace
            elif self.tokenizer.decode(ids).endswith(FORCE) and i % 2:
                reply = "9}"
            else:
                continue
            batch.completion_texts[i], batch.completion_ids[i] = reply, self.tokenizer(reply)["input_ids"]
        return batch

    def close(self) -> None:
        HalfRightEngine.closed.append(True)


def test_forced_answers_are_sampled_with_the_stop_point_settings_and_rated_by_share():
    HalfRightEngine.calls.clear()
    cfg = StopPointConfig(force_suffix=FORCE, samples=4, answer_max_tokens=5, temperature=0.7, top_p=0.9)
    force = AnswerForcer(HalfRightEngine(), TOKENIZER, cfg, seed=3)
    (forced,) = force(["3+4=<think>I get 7."], ["7"])
    assert forced.rate == 0.5 and forced.answer == "7}"
    (sampling,) = HalfRightEngine.calls
    assert (sampling.n, sampling.max_tokens, sampling.temperature, sampling.top_p) == (4, 5, 0.7, 0.9)
    assert sampling.seed == 3 + 7919 and sampling.progress == "forcing answers"


def test_pairs_sample_their_traces_with_the_rollout_settings_and_close_the_engine(traces_recipe: Path):
    import importlib

    engine = importlib.import_module("tests.test_dto").HalfRightEngine  # the class the recipe's path loads
    engine.calls.clear()
    engine.closed.clear()
    overrides = ["pairs.traces_column=null", "rollout.engine=tests.test_dto:HalfRightEngine", "rollout.group_size=3",
                 "rollout.temperature=0.8", "pairs.seed=9", "stop_point.threshold=0.5"]  # fmt: skip
    summary = build_pairs(load_recipe(traces_recipe, overrides, cls=DTORecipe))
    traces = engine.calls[0]
    assert traces.progress == "sampling traces"
    assert (traces.n, traces.temperature, traces.max_tokens, traces.seed) == (3, 0.8, 64, 9)
    forcing = next(c for c in engine.calls if c.progress == "forcing answers")
    assert forcing.seed == 9 + 7919  # the forced answers are drawn with pairs.seed too
    assert summary["traces"] == 4 * 3 and engine.closed == [True]


def test_the_pairs_summary_means_and_flops_ratio_by_hand():
    from rltune.dto import attention_flops, summarize

    # (prompt, original, truncated, optimised, segments, kept tokens) of two traces with a stop point
    stats = [(5, 10, 6, 4, 3, 2), (5, 21, 8, 6, 4, 3)]
    summary = summarize([], [], stats, forced_samples=0)
    assert summary["mean_tokens_original"] == 15.5 and summary["mean_tokens_truncated"] == 7.0
    assert summary["mean_segments"] == 3.5 and summary["mean_kept_segments"] == 2.5
    base = attention_flops([15, 26])
    assert summary["attention_flops_ratio_optimised"] == pytest.approx(attention_flops([9, 11]) / base)
