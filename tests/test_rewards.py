import re

import numpy as np
import pytest
import torch

from rltune.batch import RolloutBatch
from rltune.config import RewardSpec
from rltune.errors import ConfigError, RLTuneError
from rltune.reward_pipeline import RewardPipeline

P = "plugins.my_rewards:"


def make_batch(groups: list[list[str]], golds: list[str] | None = None) -> RolloutBatch:
    golds = golds or ["0"] * len(groups)
    batch = RolloutBatch([], [], [], [], [], [], [{"gold": g} for g in golds])
    for g, texts in enumerate(groups):
        for text in texts:
            batch.prompt_ids.append([1])
            batch.completion_ids.append(list(range(len(text))))
            batch.completion_texts.append(text)
            batch.sampling_logprobs.append([0.0] * len(text))
            batch.finish_reasons.append("stop")
            batch.group_ids.append(g)
    return batch


def score(specs, groups, **kwargs):
    batch = make_batch(groups, kwargs.pop("golds", None))
    pipeline = RewardPipeline(specs, **kwargs)
    pipeline.score(batch)
    return batch, pipeline


def test_builtin_math_accuracy_and_format_with_weights():
    specs = [RewardSpec("math_accuracy", 1.0), RewardSpec("format", 0.5)]
    batch, _ = score(specs, [["\\boxed{3}", "\\boxed{4}", "3"]], golds=["3"])
    assert batch.reward_components["math_accuracy"].tolist() == [1.0, 0.0, 0.0]
    assert batch.reward_components["format"].tolist() == [1.0, 1.0, 0.0]
    assert batch.rewards.tolist() == [1.5, 0.5, 0.0]


def test_math_accuracy_kwargs_give_signed_rewards():
    batch, _ = score(
        [RewardSpec("math_accuracy", kwargs={"correct": 1.0, "incorrect": -1.0})],
        [["\\boxed{3}", "\\boxed{4}"]],
        golds=["3"],
    )
    assert batch.rewards.tolist() == [1.0, -1.0]


def test_user_function_and_class_by_import_path():
    batch, _ = score(
        [RewardSpec(P + "brevity", 1.0), RewardSpec(P + "Contains", 2.0, {"needle": "x"})], [["ab", "xbcd"]]
    )
    assert batch.reward_components["brevity"].tolist() == pytest.approx([-0.2, -0.4])
    assert batch.reward_components["Contains"].tolist() == [0.0, 1.0]
    assert batch.rewards.tolist() == pytest.approx([-0.2, 1.6])


def test_async_reward():
    batch, _ = score([RewardSpec(P + "async_length")], [["abc", "a"], ["abcdef"]])
    assert batch.rewards.tolist() == [3.0, 1.0, 6.0]


def test_async_reward_calls_of_a_batch_run_concurrently():
    pipeline = RewardPipeline([RewardSpec(P + "ConcurrencyProbe")])
    pipeline.score(make_batch([["a", "b", "c", "d"], ["e", "f", "g", "h"]]))
    probe = pipeline.components[0].fn
    assert probe.max_in_flight == 8  # every call awaits at once, none waits for another


def test_exception_scores_zero_and_is_counted(caplog):
    batch, pipeline = score([RewardSpec(P + "flaky")], [["good", "bad one"]])
    assert batch.rewards.tolist() == [1.0, 0.0]
    assert pipeline.errors == 1
    assert "bad one" in caplog.text and "cannot score this one" in caplog.text


def test_exception_fails_when_asked():
    with pytest.raises(RLTuneError, match="flaky"):
        score([RewardSpec(P + "flaky")], [["bad"]], on_error="fail")


@pytest.mark.parametrize("name", ["sleepy", "async_sleepy"])
def test_timeout_scores_zero(name):
    batch, pipeline = score([RewardSpec(P + name)], [["fast", "slow"]], timeout_s=0.5)
    assert batch.rewards.tolist() == [1.0, 0.0]
    assert pipeline.errors == 1


def test_wrong_return_types_name_the_reward_and_the_value():
    """None is trl's 'does not apply' (no score, nothing added to the sum); every other non-number is refused,
    naming the reward and the value."""
    batch, _ = score([RewardSpec(P + "maybe_none")], [["skip", "keep"]])
    assert batch.reward_components["maybe_none"][0].isnan() and batch.rewards.tolist() == [0.0, 2.0]
    for returned, shown in [("'high'", "'high' (str)"), ("[1.0]", "[1.0] (list)")]:
        spec = RewardSpec(function=eval(f"lambda completion, row: {returned}"), name="bad")
        with pytest.raises(RLTuneError, match=re.escape(f"reward 'bad' returned {shown}")):
            score([spec], [["a"]])
    group = RewardSpec(function=type("G", (), {"group": True, "__call__": lambda self, cs, row: 1.0})(), name="g")
    with pytest.raises(RLTuneError, match=r"group reward 'g' returned 1.0 \(float\).*a list of 2 numbers"):
        score([group], [["a", "b"]])
    # one rule for numbers: real ones only, the reward named
    for value, shown in [(10**400, "too large for a float"), (np.str_("0.5"), "(str_)"),
                         (np.datetime64("2026-01-01"), "(datetime64)"), (1 + 2j, "(1+2j) (complex)"),
                         (np.complex128(1 + 0j), "(complex128)"), (torch.tensor(1j), "(complex)")]:  # fmt: skip
        spec = RewardSpec(function=lambda c, row, value=value: value, name="odd")
        with pytest.raises(RLTuneError, match=r"reward 'odd' returned .*" + re.escape(shown)):
            score([spec], [["a"]])
    arrays = type("A", (), {"group": True, "__call__": lambda self, cs, row: np.array([0.5, 1.0])})()
    batch, _ = score([RewardSpec(function=arrays, name="arr"), RewardSpec(function=lambda c, row: True, name="b")],
                     [["a", "b"]])  # fmt: skip
    assert batch.rewards.tolist() == [1.5, 2.0]  # a group reward's 1-D array, and a bool as 1
    numpy_and_tensor = [RewardSpec(function=lambda c, row: np.float32(0.5), name="np")]
    numpy_and_tensor.append(RewardSpec(function=lambda c, row: torch.tensor(0.25), name="pt"))
    batch, _ = score(numpy_and_tensor, [["a"]])
    assert batch.rewards.tolist() == [0.75]


def test_group_reward_runs_per_group_after_sample_rewards():
    batch, _ = score(
        [RewardSpec(P + "brevity", 0.0), RewardSpec(P + "RankInGroup", 1.0)], [["aaa", "a", "aa"], ["bb", "bbbb"]]
    )
    assert batch.reward_components["RankInGroup"].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert torch.equal(batch.rewards, batch.reward_components["RankInGroup"])


def test_duplicate_names_get_suffixes():
    batch, _ = score([RewardSpec("format"), RewardSpec("format")], [["\\boxed{1}"]])
    assert set(batch.reward_components) == {"format", "format_2"}


def test_bad_specs_fail_clearly():
    with pytest.raises(ConfigError, match="unknown reward 'math_acc'"):
        RewardPipeline([RewardSpec("math_acc")])
    with pytest.raises(ConfigError, match="cannot import module"):
        RewardPipeline([RewardSpec("no_such_pkg.mod:fn")])
    with pytest.raises(ConfigError, match="takes no kwargs"):
        RewardPipeline([RewardSpec(P + "brevity", kwargs={"x": 1})])
    with pytest.raises(ConfigError, match="bad kwargs"):
        RewardPipeline([RewardSpec(P + "Contains", kwargs={"wrong": 1})])


def test_digit_sum_accepts_every_right_answer_and_nothing_else():
    from rltune.rewards.digit_sum import right_answers

    assert [len(right_answers(s)) for s in (1, 9, 10, 18)] == [1, 9, 9, 1]
    texts = [
        "\\boxed{27}",
        "\\boxed{72}",
        "\\boxed{90}",
        "\\boxed{28}",
        "\\boxed{9}",
        "\\boxed{09}",
        "27",
        "\\boxed{108}",
    ]
    batch, _ = score([RewardSpec("digit_sum")], [texts], golds=["9"])
    assert batch.rewards.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_gpt3_arithmetic_splits_are_disjoint_and_right(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import REPO

    script = REPO / "benchmarks" / "arithmetic_task.py"
    subprocess.run(
        [sys.executable, script, tmp_path, "--train", "300", "--test", "60", "--tasks", "2D+,1DC"], check=True
    )
    train, test = (
        [json.loads(x) for x in (tmp_path / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "test")
    )
    assert len(train) == 300 and len(test) == 60 and not {r["question"] for r in train} & {r["question"] for r in test}
    for row in train + test:
        expression = row["question"].removeprefix("What is ").removesuffix("?").replace(" plus ", "+")
        assert eval(expression) == int(row["answer"]) and row["task"] in ("2D+", "1DC")


def test_final_number_scores_only_the_last_number():
    texts = ["48 + 76 = 124", "so \\boxed{124}.", "124 or maybe 125", "1,240 / 10 = 124.0", "no number", "-124"]
    batch, _ = score([RewardSpec("final_number")], [texts], golds=["124"])
    assert batch.rewards.tolist() == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]


def test_number_between_grades_the_last_number_strictly_inside_the_bounds():
    texts = [
        "Any number such as 57",
        "\\boxed{56}",
        "56 or 60",  # the last number counts
        "60",  # the upper bound is outside
        "55",  # so is the lower
        "56.5",  # not a whole number
        "fifty-seven",
    ]
    batch, _ = score([RewardSpec("number_between")], [texts], golds=["55,60"])
    assert batch.rewards.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    from rltune.rewards.number_between import right_number

    for gold in ("57", "55,60,65", "a,b", "55.5,60"):  # a gold that is not two whole bounds says what it needs
        with pytest.raises(ValueError, match="two whole-number bounds 'A,B'"):
            right_number("57", gold)
    assert right_number("-3", "-5, 0") == -3
