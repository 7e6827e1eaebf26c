"""Reward functions written for trl's GRPOTrainer, used unchanged: trl's own (`trl.rewards`) give in rltune the
scores they give when called as trl calls them; a reward whose calls fail stops the run instead of training
on zeros; a reward that cannot take its arguments is refused when it is loaded."""

import pytest
import torch

from rltune.batch import RolloutBatch
from rltune.config import RewardSpec
from rltune.errors import ConfigError, RLTuneError
from rltune.reward_pipeline import RewardPipeline, trl_arguments

trl_rewards = pytest.importorskip("trl.rewards")

COMPLETIONS = [
    ["<think>\nadd them\n</think>\nThe answer is $\\boxed{\\frac{1}{3}}$", "I think it is \\boxed{0.5}"],
    ["<think>x</think> \\boxed{7}", "<think>\nseven\n</think>\n\\boxed{7}"],
]
SOLUTIONS = ["$\\frac{1}{3}$", "$7$"]


def conversational_batch() -> RolloutBatch:
    """Two prompts of a conversational dataset (trl's `prompt` column of messages, kept as `messages`) with a
    `solution` column, two completions each."""
    rows = [
        {"messages": [{"role": "user", "content": f"q{g}"}], "prompt": f"q{g}", "solution": s, "gold": s}
        for g, s in enumerate(SOLUTIONS)
    ]
    batch = RolloutBatch([], [], [], [], [], [], rows)
    for g, texts in enumerate(COMPLETIONS):
        for text in texts:
            batch.prompt_ids.append([1])
            batch.completion_ids.append(list(range(3 + 5 * len(batch.completion_texts))))  # lengths 3, 8, 13, 18
            batch.completion_texts.append(text)
            batch.sampling_logprobs.append([0.0] * len(batch.completion_ids[-1]))
            batch.finish_reasons.append("stop")
            batch.group_ids.append(g)
    return batch


@pytest.mark.parametrize(
    "make",
    [
        lambda: trl_rewards.think_format_reward,
        lambda: trl_rewards.accuracy_reward,
        lambda: trl_rewards.reasoning_accuracy_reward,
        lambda: trl_rewards.get_soft_overlong_punishment(max_completion_len=16, soft_punish_cache=8),
        lambda: trl_rewards.get_repetition_penalty_reward(ngram_size=2, max_penalty=-1.0),
        lambda: trl_rewards.get_cosine_scaled_reward(max_len=20),
    ],
    ids=["think_format", "accuracy", "reasoning_accuracy", "soft_overlong", "repetition", "cosine"],
)
def test_trl_reward_functions_score_as_trl_scores_them(make):
    batch = conversational_batch()
    fn = make()
    pipeline = RewardPipeline([RewardSpec(name="trl", function=fn)])
    assert pipeline.components[0].batched
    pipeline.score(batch)
    # trl's call: keyword lists over the batch, completions as one assistant message each
    expected = fn(**trl_arguments(conversational_batch()))
    expected = torch.tensor([float("nan") if v is None else v for v in expected], dtype=torch.float32)
    got = batch.reward_components["trl"]
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.allclose(got.nan_to_num(), expected.nan_to_num())
    assert batch.rewards.isfinite().all()  # None adds nothing to the sum


def test_trl_accuracy_gives_known_scores_and_none_is_left_out_of_the_mean():
    batch = conversational_batch()
    batch.rows[1]["solution"] = "no number here at all"  # an unparseable gold: trl returns None
    pipeline = RewardPipeline([RewardSpec(name="acc", function=trl_rewards.accuracy_reward)])
    pipeline.score(batch)
    scores = batch.reward_components["acc"]
    assert scores[:2].tolist() == [1.0, 0.0]
    assert scores[2:].isnan().all()
    assert batch.rewards.tolist() == [1.0, 0.0, 0.0, 0.0]
    from rltune.metrics import rollout_metrics

    assert rollout_metrics(batch, 0)["reward/acc"] == 0.5  # over the samples it applies to


def test_a_reward_whose_calls_all_fail_stops_with_its_traceback():
    def broken(completion, row):
        return row["no such column"]

    batch = conversational_batch()
    with pytest.raises(
        RLTuneError, match=r"(?s)reward 'broken' failed on 4 of its 4 calls.*KeyError: 'no such column'"
    ):
        RewardPipeline([RewardSpec(name="broken", function=broken)]).score(batch)


def test_one_flaky_call_among_many_is_scored_zero_and_the_run_goes_on():
    def flaky(completion, row):
        if "0.5" in completion.text:
            raise ConnectionError("the judge dropped one request")
        return 1.0

    batch = conversational_batch()
    pipeline = RewardPipeline([RewardSpec(name="flaky", function=flaky)], max_error_fraction=0.5)
    pipeline.score(batch)
    assert batch.reward_components["flaky"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert pipeline.errors == 1


def test_a_reward_that_cannot_take_its_arguments_is_refused_at_load():
    def three(completion, row, extra):
        return 0.0

    with pytest.raises(ConfigError, match=r"reward 'three' cannot be called as reward\(completion, row\)"):
        RewardPipeline([RewardSpec(name="three", function=three)])


def test_a_trl_reward_needing_a_column_the_dataset_lacks_is_refused_before_training():
    pipeline = RewardPipeline([RewardSpec(name="acc", function=trl_rewards.accuracy_reward)])
    with pytest.raises(ConfigError, match="takes solution, which the dataset has no column for"):
        pipeline.check_dataset(["question", "answer"])
    pipeline.check_dataset(["prompt", "solution"])


def test_a_conversational_prompt_only_dataset_trains_with_trl_rewards(tmp_path, demo_assets):
    """trl's conversational format (`prompt`: a list of messages, system message included) with no answer
    column, as a `datasets.Dataset` given to the Trainer, and trl-style rewards reading a column of it."""
    import json
    import shutil

    from datasets import Dataset

    from conftest import demo_recipe
    from rltune.trainer import Trainer

    model_dir, data_file = demo_assets
    chat_model = tmp_path / "chat-model"
    shutil.copytree(model_dir, chat_model)
    config_file = chat_model / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # the tiny vocabulary's
    config_file.write_text(json.dumps(config))
    rows = [json.loads(line) for line in data_file.read_text().splitlines()][:16]
    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "system", "content": "0"}, {"role": "user", "content": r["question"]}],
                "target": r["answer"],
            }
            for r in rows
        ]
    )
    seen = {}

    def starts_right(prompts, completions, target, **kwargs):
        seen.update(prompts=prompts, completions=completions, kwargs=set(kwargs))
        return [1.0 if c[0]["content"].strip().startswith(t) else 0.0 for c, t in zip(completions, target)]

    cfg = demo_recipe(
        tmp_path,
        chat_model,
        data_file,
        {
            "data": {
                "path": "",
                "question_column": "prompt",
                "answer_column": None,
                "use_chat_template": True,
                "system_prompt": "1",
            },
            "rollout": {"engine": "hf", "group_size": 4},
            "train": {"steps": 2, "prompts_per_step": 4},
        },
    )
    calls = []

    def fails_once(completion, row):  # an rltune per-sample reward beside the trl one
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError("one flaky call")
        return 0.0

    cfg.rewards = [RewardSpec(name="starts_right", function=starts_right), RewardSpec(name="x", function=fails_once)]
    with Trainer(cfg, dataset=dataset) as trainer:
        assert trainer.data.rows[0]["prompt"] == "1" + rows[0]["question"]  # the system prompt replaced the row's
        last = trainer.train()
    assert "reward/starts_right" in last
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["reward/errors"] for m in logged] == [1.0, 0.0]  # per step, not a running total
    assert seen["completions"][0][0]["role"] == "assistant"
    assert seen["prompts"][0][0] == {"role": "system", "content": "1"} and seen["prompts"][0][1]["role"] == "user"
    assert "completion_ids" in seen["kwargs"] and "messages" not in seen["kwargs"]  # the prompt goes as `prompts`


def test_a_gold_reading_reward_on_a_prompt_only_dataset_is_refused(tmp_path, demo_assets):
    from conftest import demo_recipe
    from rltune.trainer import Trainer

    model_dir, data_file = demo_assets
    cfg = demo_recipe(tmp_path, model_dir, data_file, {"data": {"answer_column": None}, "rollout": {"engine": "hf"}})
    with pytest.raises(ConfigError, match="reward 'math_accuracy' compares completions with the gold answer"):
        Trainer(cfg)


def test_a_sequence_classification_reward_model_scores_as_its_plain_forward(tmp_path):
    """The built-in reward_model: a tiny classifier built here, its batched, padded scores against one plain
    forward per text."""
    from transformers import AutoModelForSequenceClassification, Qwen2Config

    from rltune.demo import build_tokenizer

    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, num_labels=1, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    classifier = AutoModelForSequenceClassification.from_config(config).eval()
    classifier.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    batch = RolloutBatch([], [], [], [], [], [], [{"prompt": "3+4=", "gold": "7"}, {"prompt": "12+9=", "gold": "21"}])
    for g, texts in enumerate([["7", "8 or 9"], ["21", "2"]]):
        for text in texts:
            batch.prompt_ids.append([1])
            batch.completion_ids.append([2] * len(text))
            batch.completion_texts.append(text)
            batch.sampling_logprobs.append([0.0] * len(text))
            batch.finish_reasons.append("stop")
            batch.group_ids.append(g)
    spec = RewardSpec(name="reward_model", kwargs={"path": str(tmp_path / "rm"), "batch_size": 3})
    pipeline = RewardPipeline([spec])
    assert pipeline.components[0].batched  # one call for the batch
    pipeline.score(batch)
    expected = []
    for i, text in enumerate(batch.completion_texts):
        ids = tokenizer(batch.row_of(i)["prompt"] + text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        expected.append(classifier(input_ids=ids).logits[0, 0].item())
    assert torch.allclose(batch.reward_components["reward_model"], torch.tensor(expected), atol=1e-5)
    assert len(set(expected)) == 4  # the scores tell the completions apart
    # past max_length, the model reads the first max_length tokens (the rest would overrun its positions)
    from rltune.rewards.reward_model import RewardModel

    short = RewardModel(str(tmp_path / "rm"), max_length=5)
    ids = tokenizer("3+4=7 and then some more", add_special_tokens=False, return_tensors="pt")["input_ids"]
    (score,) = short(["3+4="], ["7 and then some more"])
    assert score == pytest.approx(classifier(input_ids=ids[:, :5]).logits[0, 0].item(), abs=1e-5)
    assert score != pytest.approx(classifier(input_ids=ids).logits[0, 0].item(), abs=1e-5)
    config.num_labels = 2
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "classifier")
    tokenizer.save_pretrained(tmp_path / "classifier")
    with pytest.raises(ConfigError, match="has 2 labels; a reward model scores with one"):
        RewardPipeline([RewardSpec(name="reward_model", kwargs={"path": str(tmp_path / "classifier")})])


def test_verl_parquet_layout_by_column_mapping(tmp_path):
    """verl's parquet rows (`prompt` messages, `reward_model.ground_truth`, `data_source`): the gold through a
    dotted answer_column, `data_source` reaching trl-style rewards as a column."""
    from datasets import Dataset

    from rltune.config import DataConfig
    from rltune.data import PromptSource
    from rltune.demo import build_tokenizer

    rows = [
        {
            "data_source": source,
            "prompt": [{"role": "user", "content": q}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": a},
            "extra_info": {"index": i},
        }
        for i, (source, q, a) in enumerate([("gsm8k", "3+4=", "7"), ("math", "9+9=", "18")])
    ]
    path = tmp_path / "train.parquet"
    Dataset.from_list(rows).to_parquet(str(path))
    tokenizer = build_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    cfg = DataConfig(path=str(path), question_column="prompt", answer_column="reward_model.ground_truth")
    source = PromptSource(cfg, tokenizer)
    assert [r["gold"] for r in source.rows] == ["7", "18"]
    assert [r["prompt"] for r in source.rows] == ["3+4=", "9+9="]
    seen = {}

    def by_source(completions, data_source, **kwargs):
        seen["data_source"] = data_source
        return [1.0 if s == "gsm8k" else 0.5 for s in data_source]

    batch = RolloutBatch([[1]] * 2, [[2]] * 2, ["7", "18"], [[0.0]] * 2, ["stop"] * 2, [0, 1], source.rows)
    RewardPipeline([RewardSpec(name="by_source", function=by_source)]).score(batch)
    assert seen["data_source"] == ["gsm8k", "math"] and batch.rewards.tolist() == [1.0, 0.5]
    with pytest.raises(RLTuneError, match="no column 'reward.x' \\(data.answer_column\\)"):
        PromptSource(DataConfig(path=str(path), question_column="prompt", answer_column="reward.x"), tokenizer)


def test_a_token_level_reward_whose_calls_all_fail_stops_too():
    class Broken:
        token_level = True

        def __call__(self, completion, row):
            raise RuntimeError("token reward broken")

    with pytest.raises(RLTuneError, match=r"(?s)reward 'broken' failed on 4 of its 4 calls.*token reward broken"):
        RewardPipeline([RewardSpec(name="broken", function=Broken())]).score(conversational_batch())
