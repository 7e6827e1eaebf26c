"""Loading rewards into the pipeline: what is refused at load, before any model or engine starts (scoring
itself: test_rewards.py, trl-style rewards: test_trl_rewards.py)."""

import pytest

from rltune.config import RewardSpec
from rltune.errors import ConfigError
from rltune.reward_pipeline import RewardPipeline


class Scorer:
    """A class-based reward that forgot its __call__."""

    def score(self, completion, row):
        return 1.0


class NeedsThreshold:
    def __init__(self, threshold: float):
        self.threshold = threshold

    def __call__(self, completion, row):
        return float(len(completion.text) > self.threshold)


def test_a_reward_class_whose_instances_cannot_be_called_is_refused_at_load():
    with pytest.raises(
        ConfigError, match=r"reward 'scorer': class Scorer is not callable once built; give it a __call__"
    ):
        RewardPipeline([RewardSpec(name="scorer", function=Scorer)])


def test_a_reward_class_is_built_with_its_kwargs_and_refused_with_wrong_ones():
    pipeline = RewardPipeline([RewardSpec(name="long", function=NeedsThreshold, kwargs={"threshold": 3})])
    assert pipeline.components[0].fn.threshold == 3
    with pytest.raises(ConfigError, match=r"reward 'long': bad kwargs \['limit'\]"):
        RewardPipeline([RewardSpec(name="long", function=NeedsThreshold, kwargs={"limit": 3})])
    with pytest.raises(ConfigError, match="is a function and takes no kwargs"):
        RewardPipeline([RewardSpec(name="f", function=lambda completion, row: 0.0, kwargs={"limit": 3})])
    with pytest.raises(ConfigError, match="resolved to 3, which is not callable"):
        RewardPipeline([RewardSpec(name="three", function=3)])


def reads_accuracy(completion, row):
    return completion.rewards["acc"]


reads_accuracy.needs_rewards = ("acc",)


def accuracy(completion, row):
    return 1.0


class GroupReadsAccuracy:
    group = True
    needs_rewards = ("acc",)

    def __call__(self, completions, row):
        return [c.rewards["acc"] for c in completions]


def test_a_reward_may_read_the_per_sample_rewards_it_can_see():
    """A per-sample reward reads those listed before it (they run in recipe order); a group reward, which
    runs after every per-sample one, reads any of them; nobody reads a group reward."""
    acc, reads = RewardSpec(name="acc", function=accuracy), RewardSpec(name="reads", function=reads_accuracy)
    RewardPipeline([acc, reads])
    with pytest.raises(ConfigError, match="reward 'reads' reads the per-sample reward 'acc': list it before 'reads'"):
        RewardPipeline([reads, acc])
    RewardPipeline([RewardSpec(name="group", function=GroupReadsAccuracy), acc])  # listed after, still seen
    group_acc = RewardSpec(name="acc", function=GroupReadsAccuracy)  # a group reward named acc
    with pytest.raises(ConfigError, match="reads the per-sample reward 'acc'"):
        RewardPipeline([group_acc, RewardSpec(name="reads", function=reads_accuracy)])


def only_long(completion, row):
    return 1.0 if len(completion.text) > 2 else None  # None: does not apply


def test_samples_no_reward_applies_to_score_zero_with_one_warning(caplog):
    import logging

    from test_rewards import make_batch

    pipeline = RewardPipeline([RewardSpec(name="long", function=only_long)])
    with caplog.at_level(logging.WARNING, logger="rltune"):
        every = make_batch([["abc", "abcd"]])
        pipeline.score(every)
        assert every.rewards.tolist() == [1.0, 1.0] and not caplog.records  # all apply: nothing to say
        some = make_batch([["abc", "ab", "a"]])
        pipeline.score(some)
    assert some.rewards.tolist() == [1.0, 0.0, 0.0]
    assert [r.getMessage() for r in caplog.records] == [
        "2 of 3 samples got None from every reward (none applies to them): they score 0"
    ]


def tokens_unless_broken(completion, row):
    if completion.text == "raises":
        raise ValueError("a broken sample")
    value = float("nan") if completion.text == "nan" else 1.0
    return [value] * len(completion.token_ids)


tokens_unless_broken.token_level = True


def test_a_token_level_reward_failing_on_some_samples_still_scores_the_others():
    from test_rewards import make_batch

    pipeline = RewardPipeline([RewardSpec(name="t", function=tokens_unless_broken)], max_error_fraction=1.0)
    batch = make_batch([["raises", "nan", "ok", "fine"]])
    pipeline.score(batch)
    assert batch.reward_components["t"].tolist() == [0.0, 0.0, 2.0, 4.0] and pipeline.errors == 2


def fails_naming_the_sample(completion, row):
    if completion.text != "ok":
        raise ValueError(f"cannot score {completion.text!r}")
    return 1.0


def test_too_many_failures_stop_the_step_showing_the_first_failure():
    from test_rewards import make_batch

    from rltune.errors import RLTuneError

    pipeline = RewardPipeline([RewardSpec(name="f", function=fails_naming_the_sample)], max_error_fraction=0.5)
    with pytest.raises(RLTuneError, match="failed on 2 of its 3 calls") as stopped:
        pipeline.score(make_batch([["first", "ok", "second"]]))
    assert "cannot score 'first'" in str(stopped.value) and "'second'" not in str(stopped.value)


def test_trl_style_arguments_of_a_batch_of_one_completion():
    """A batch of one completion (group_size 1, as a sampler of one): every column still reaches the reward."""
    from test_rewards import make_batch

    from rltune.reward_pipeline import trl_arguments

    batch = make_batch([["7"]], golds=["7"])
    batch.rows[0]["prompt"] = "3+4="
    arguments = trl_arguments(batch)
    assert (
        arguments["prompts"] == ["3+4="]
        and arguments["completions"] == ["7"]
        and arguments["completion_ids"] == batch.completion_ids
    )
    assert {key: values for key, values in arguments.items() if key in batch.rows[0]} == {
        key: [value] for key, value in batch.rows[0].items()
    }
