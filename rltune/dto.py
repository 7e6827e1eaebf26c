"""DTO — "Don't Think Longer, Think Wisely: Optimizing Thinking Dynamics for Large Reasoning Models":
offline trajectory optimisation into preference pairs (`rltune prune RECIPE`), then preference
training on them (`rltune prefer RECIPE`, rltune.preference).

For every reasoning trace (sampled from the policy, or read from the data):
1. cut the thinking into patterns at cue words (rltune.thinking);
2. Monte-Carlo stop point: after each segment close the thinking with `stop_point.force_suffix`,
   sample `samples` short answers and grade them with the eval harness's grader; the earliest
   boundary whose success rate reaches `threshold` is where the trace stops (this also rescues
   traces whose final answer was wrong but which had the right answer on the way);
3. prune the segments before the stop point: `rule` drops a segment when the trace without it still
   reaches the threshold (model-free), `judge` asks a model which segments are redundant or harmful;
4. verify: the optimised trace must still reach the threshold, otherwise the unpruned truncation is kept;
5. pair: chosen = optimised thinking + a verified correct answer, rejected = the original trace (or the
   longest trace sampled for the prompt), written as a `datasets` dataset with per-pair statistics.

The paper publishes no code or thresholds; the defaults below are rltune's and documented as such.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rltune.config import DataConfig, ModelConfig, RolloutConfig
from rltune.errors import ConfigError, RLTuneError
from rltune.thinking import DEFAULT_CUES, Trace, cap_segments, split_trace

log = logging.getLogger(__name__)

DEFAULT_JUDGE_PROMPT = """You are reviewing the reasoning of a model that solved a math problem.

Problem:
{question}

The reasoning, in numbered steps:
{steps}

Some steps may be redundant (repeating an earlier check), meaningless, or harmful (a wrong detour
that is later abandoned). Which steps can be deleted so that the remaining steps still lead to the
answer {answer}? Never delete the last step. Reply with one line: "REMOVE:" followed by the step
numbers separated by commas, or "REMOVE: none"."""
"""Judge prompt: `{question}`, `{steps}` ('[i] text' lines) and `{answer}` (the gold) are filled in."""


@dataclass
class ThinkingConfig:
    cues: list[str] = field(default_factory=lambda: list(DEFAULT_CUES))
    """Words that open a new thinking pattern; the trace is cut before each (DTO: "Wait", "Alternatively", "Hmm"...)."""
    sentence_start: bool = True
    """Cut only where a cue starts a sentence or line (a mid-sentence 'but' stays put)."""
    think_open: str = "<think>"
    think_close: str = "</think>"


@dataclass
class StopPointConfig:
    force_suffix: str = "\n</think>\n\nThe final answer is \\boxed{"
    """Appended to a thinking prefix to force an answer (R1-style models); the grader reads the box."""
    samples: int = 8
    """M: forced answers sampled per boundary (DTO's value is unpublished)."""
    threshold: float = 0.5
    """T: success rate a boundary needs to count as 'the answer is reached' (unpublished; rltune's default)."""
    temperature: float = 0.6
    top_p: float = 0.95
    answer_max_tokens: int = 32
    """Tokens allowed after the force suffix (the rest of the answer)."""
    max_boundaries: int = 32
    """Neighbouring segments are merged so that at most this many boundaries are tried per trace."""


@dataclass
class PruneConfig:
    method: Literal["rule", "judge", "none"] = "rule"
    """rule: drop a segment when the trace without it still reaches the threshold (model-free);
    judge: ask `judge_model` which segments to drop (DTO uses an auxiliary LLM); none: truncate only."""
    judge_model: str | None = None
    """Judge model folder or hub id; None asks the policy itself."""
    judge_prompt: str = DEFAULT_JUDGE_PROMPT
    judge_max_tokens: int = 64
    judge_chat_template: bool = True
    """Wrap the judge prompt in the judge tokenizer's chat template, when it has one."""


@dataclass
class PairsConfig:
    traces_column: str | None = None
    """Read the traces from this data column instead of sampling them (one trace per row)."""
    rejected: Literal["original", "longest"] = "original"
    """The rejected side: the trace that was optimised, or the longest trace sampled for the prompt."""
    output_dir: str = "runs/dto/pairs"
    """Where the pairs dataset (save_to_disk), summary.json and traces.jsonl go."""
    overwrite: bool = False
    """Replace pairs already in output_dir (otherwise that is refused)."""
    seed: int = 0


@dataclass
class PreferConfig:
    """Preference training through trl (rltune.preference)."""

    loss: Literal["simpo", "dpo"] = "simpo"
    """simpo: trl's CPOTrainer with loss_type='simpo' and cpo_alpha=0 (reference-free, length-normalised;
    the loss DTO names); dpo: trl's DPOTrainer (sigmoid loss against the initial policy)."""
    beta: float = 2.0
    """SimPO beta (SimPO paper, arXiv 2405.14734: 2.0-2.5); DPO's usual value is 0.1."""
    simpo_gamma: float = 1.0
    """SimPO target margin gamma (gamma/beta = 0.5 in the SimPO paper)."""
    sft_weight: float = 0.0
    """SimPO only: weight of an added NLL loss on the chosen side (trl's cpo_alpha; 0 is plain SimPO, >0
    is CPO-SimPO, which keeps a small model from drifting off its own format)."""
    lr: float = 1e-6
    steps: int = 100
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 8192
    """Prompt + response tokens; longer pairs are cut by trl."""
    warmup: float = 0.1
    """Linear warm-up: a share of the steps (< 1) or a number of steps (>= 1)."""
    bf16: bool = False
    seed: int = 0
    output_dir: str = "runs/dto/prefer"
    """The trained model and tokenizer are saved here."""
    logging_steps: int = 10


@dataclass
class DTORecipe:
    """`rltune prune` uses model, data, rollout (trace sampling: group_size traces per prompt, temperature,
    max_tokens, engine), thinking, stop_point, prune and pairs; `rltune prefer` uses model, pairs and prefer."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    thinking: ThinkingConfig = field(default_factory=ThinkingConfig)
    stop_point: StopPointConfig = field(default_factory=StopPointConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    prefer: PreferConfig = field(default_factory=PreferConfig)


def check_recipe(recipe: DTORecipe) -> None:
    sp = recipe.stop_point
    if sp.samples < 1:
        raise ConfigError(f"stop_point.samples must be >= 1, got {sp.samples}")
    if not 0 < sp.threshold <= 1:
        raise ConfigError(f"stop_point.threshold must be in (0, 1], got {sp.threshold}")
    if sp.max_boundaries < 1:
        raise ConfigError(f"stop_point.max_boundaries must be >= 1, got {sp.max_boundaries}")


# --------------------------------------------------------------------------------------------------
# Monte-Carlo answer forcing


@dataclass
class Forced:
    rate: float
    """Share of forced answers graded correct."""
    answer: str | None
    """One correct forced continuation (after the force suffix), if any."""


class AnswerForcer:
    """Closes thinking prefixes, samples forced answers with the rollout engine, grades them."""

    def __init__(self, engine, tokenizer, cfg: StopPointConfig, seed: int = 0):
        self.engine, self.tokenizer, self.cfg = engine, tokenizer, cfg
        self.seed = seed
        self.calls = 0
        self.samples_drawn = 0

    def __call__(self, prefixes: list[str], golds: list[str]) -> list[Forced]:
        """`prefixes[i]` is prompt + head + kept segments; one result per prefix."""
        from rltune.eval.grading import grade_many
        from rltune.rollout import SamplingSettings

        if not prefixes:
            return []
        cfg = self.cfg
        ids = [self.tokenizer(p + cfg.force_suffix, add_special_tokens=False)["input_ids"] for p in prefixes]
        self.calls += 1
        sampling = SamplingSettings(
            n=cfg.samples,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_tokens=cfg.answer_max_tokens,
            seed=self.seed + 7919 * self.calls,
            progress="forcing answers",
        )
        batch = self.engine.generate(ids, [{} for _ in ids], sampling)
        self.samples_drawn += len(batch)
        texts = batch.completion_texts
        correct = grade_many([cfg.force_suffix + t for t in texts], [golds[g] for g in batch.group_ids])
        out = []
        for members in batch.groups():
            hits = [i for i in members if correct[i]]
            out.append(Forced(len(hits) / len(members), texts[hits[0]] if hits else None))
        return out


def stop_point(rates: list[float], threshold: float) -> int | None:
    """Number of segments to keep: the earliest boundary (1-based) whose success rate reaches the threshold."""
    return next((i + 1 for i, rate in enumerate(rates) if rate >= threshold), None)


# --------------------------------------------------------------------------------------------------
# the per-trace work item


@dataclass
class Item:
    prompt: str
    gold: str
    question: str
    trace: Trace
    original_correct: bool
    group: int
    stop: int | None = None
    stop_answer: str | None = None
    kept: list[int] = field(default_factory=list)
    """Indices of the segments kept (after truncation and pruning)."""
    answer: str | None = None
    """Verified correct forced continuation of the kept segments."""
    verified_pruned: bool = True
    judge_reply: str | None = None

    def prefix(self, kept: list[int]) -> str:
        return self.prompt + self.trace.head + "".join(self.trace.segments[i] for i in kept)

    def completion(self, kept: list[int], force_suffix: str, answer: str) -> str:
        """The trace cut down to `kept`, closed by the force suffix and a verified answer."""
        return self.prefix(kept)[len(self.prompt) :] + force_suffix + answer


def find_stop_points(items: list[Item], force: AnswerForcer, threshold: float) -> None:
    """Fill `stop`, `stop_answer` and `kept` (= the first `stop` segments) of every item."""
    jobs = [(item, i) for item in items for i in range(1, len(item.trace.segments) + 1)]
    results = force([item.prefix(list(range(i))) for item, i in jobs], [item.gold for item, _ in jobs])
    by_item: dict[int, list[Forced]] = {}
    for (item, _), res in zip(jobs, results):
        by_item.setdefault(id(item), []).append(res)
    for item in items:
        results_i = by_item.get(id(item), [])
        item.stop = stop_point([r.rate for r in results_i], threshold)
        if item.stop is not None:
            item.stop_answer = results_i[item.stop - 1].answer
            item.kept = list(range(item.stop))
            item.answer = item.stop_answer


def prune_by_rule(items: list[Item], force: AnswerForcer, threshold: float) -> None:
    """Try dropping each segment before the stop point, earliest first; a drop stays when the shortened
    trace still reaches the threshold. One batched engine call per candidate position."""
    rounds = max((len(item.kept) - 1 for item in items), default=0)
    for position in range(rounds):
        trials = [item for item in items if position < item.stop - 1]
        candidates = [[i for i in item.kept if i != position] for item in trials]
        results = force([item.prefix(kept) for item, kept in zip(trials, candidates)], [it.gold for it in trials])
        for item, kept, res in zip(trials, candidates, results):
            if res.rate >= threshold:
                item.kept, item.answer = kept, res.answer


def parse_judge_reply(reply: str, steps: int) -> set[int]:
    """0-based indices the judge asks to remove, from its last 'REMOVE:' line; never the last step."""
    lines = [line for line in reply.splitlines() if "REMOVE:" in line.upper()]
    if not lines:
        return set()
    listed = lines[-1].upper().split("REMOVE:", 1)[1]
    return {int(n) - 1 for n in re.findall(r"\d+", listed) if 1 <= int(n) < steps}


def judge_prompts(items: list[Item], cfg: PruneConfig, tokenizer) -> list[str]:
    prompts = []
    for item in items:
        steps = "\n".join(f"[{n + 1}] {item.trace.segments[i].strip()}" for n, i in enumerate(item.kept))
        text = cfg.judge_prompt.format(question=item.question, steps=steps, answer=item.gold)
        if cfg.judge_chat_template and getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        prompts.append(text)
    return prompts


def prune_by_judge(items: list[Item], engine, tokenizer, cfg: PruneConfig, seed: int) -> None:
    """Drop the segments the judge names (greedy decoding)."""
    from rltune.rollout import SamplingSettings

    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in judge_prompts(items, cfg, tokenizer)]
    batch = engine.generate(
        ids, [{} for _ in ids], SamplingSettings(n=1, temperature=0.0, max_tokens=cfg.judge_max_tokens, seed=seed)
    )
    for item, reply in zip(items, batch.completion_texts):
        drop = {item.kept[n] for n in parse_judge_reply(reply, len(item.kept))}
        item.kept = [i for i in item.kept if i not in drop]
        item.judge_reply = reply


def verify(items: list[Item], force: AnswerForcer, threshold: float) -> None:
    """An optimised trace that no longer reaches the threshold falls back to its plain truncation."""
    items = [item for item in items if item.kept != list(range(item.stop))]
    results = force([item.prefix(item.kept) for item in items], [item.gold for item in items])
    for item, res in zip(items, results):
        if res.rate >= threshold and res.answer is not None:
            item.answer = res.answer
        else:
            item.kept, item.answer, item.verified_pruned = list(range(item.stop)), item.stop_answer, False


# --------------------------------------------------------------------------------------------------
# the pipeline


def attention_flops(lengths: list[int]) -> float:
    """Attention cost estimate: proportional to the sum of squared sequence lengths (DTO's FLOPs measure)."""
    return float(sum(n * n for n in lengths))


def _prepare_output(cfg: PairsConfig) -> Path:
    out = Path(cfg.output_dir)
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise RLTuneError(f"pairs.output_dir {out} is not empty; set pairs.overwrite=true to replace it")
        shutil.rmtree(out)
    return out


def build_pairs(recipe: DTORecipe) -> dict[str, Any]:
    """Run the whole DTO data pipeline; writes the pairs dataset and returns the summary."""
    from datasets import Dataset

    from rltune.data import PromptSource
    from rltune.eval.grading import grade_many
    from rltune.models import load_tokenizer
    from rltune.rollout import SamplingSettings, engine_from_recipe

    check_recipe(recipe)
    out = _prepare_output(recipe.pairs)
    sp, th, r = recipe.stop_point, recipe.thinking, recipe.rollout
    tokenizer = load_tokenizer(recipe.model.path, recipe.model.trust_remote_code)
    data = PromptSource(recipe.data, tokenizer, seed=recipe.pairs.seed)
    if recipe.pairs.traces_column and recipe.pairs.traces_column not in data.rows[0]:
        raise RLTuneError(f"pairs.traces_column {recipe.pairs.traces_column!r} is not a column of {recipe.data.path!r}")
    room = r.max_tokens + sp.answer_max_tokens + len(tokenizer(sp.force_suffix, add_special_tokens=False)["input_ids"])
    engine = engine_from_recipe(
        r, recipe.model, seed=recipe.pairs.seed, max_model_len=data.max_prompt_length + room, tokenizer=tokenizer
    )
    try:
        if recipe.pairs.traces_column:
            texts = [str(row[recipe.pairs.traces_column]) for row in data.rows]
            first_row = {}  # rows with the same prompt form one group (for pairs.rejected=longest)
            groups = [first_row.setdefault(row["prompt"], i) for i, row in enumerate(data.rows)]
        else:
            sampling = SamplingSettings.from_rollout(r, seed=recipe.pairs.seed, progress="sampling traces")
            batch = engine.generate(data.prompt_ids, data.rows, sampling)
            texts, groups = batch.completion_texts, batch.group_ids
        rows = [data.rows[g] for g in groups]
        correct = grade_many(texts, [row["gold"] for row in rows])
        items = []
        for text, group, row, ok in zip(texts, groups, rows, correct):
            trace = split_trace(text, th.cues, th.think_open, th.think_close, th.sentence_start)
            trace.segments = cap_segments(trace.segments, sp.max_boundaries)
            question = str(row[recipe.data.question_column])
            items.append(Item(row["prompt"], row["gold"], question, trace, ok, group))
        force = AnswerForcer(engine, tokenizer, sp, seed=recipe.pairs.seed)
        find_stop_points(items, force, sp.threshold)
        stopped = [item for item in items if item.stop is not None]
        if recipe.prune.method == "rule":
            prune_by_rule(stopped, force, sp.threshold)
        elif recipe.prune.method == "judge":
            _judge(stopped, recipe, engine, tokenizer)
        if recipe.prune.method != "none":
            verify(stopped, force, sp.threshold)
    finally:
        engine.close()

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    tokens = [count(item.trace.text) for item in items]
    longest: dict[int, int] = {}
    for i, item in enumerate(items):
        if item.group not in longest or tokens[i] > tokens[longest[item.group]]:
            longest[item.group] = i
    records, stats = [], []
    for i, item in enumerate(items):
        if item.stop is None:
            continue
        chosen = item.completion(item.kept, sp.force_suffix, item.answer)
        truncated = item.completion(list(range(item.stop)), sp.force_suffix, item.stop_answer)
        prompt_tokens = len(data.prompt_ids[item.group])
        stats.append(
            (prompt_tokens, tokens[i], count(truncated), count(chosen), len(item.trace.segments), len(item.kept))
        )
        j = longest[item.group] if recipe.pairs.rejected == "longest" else i
        if items[j].original_correct and stats[-1][3] >= tokens[j]:
            continue  # no preference signal: the rejected side is right and no longer
        records.append(
            {
                "prompt": item.prompt,
                "chosen": chosen,
                "rejected": items[j].trace.text,
                "gold": item.gold,
                "rejected_correct": items[j].original_correct,
                "segments": len(item.trace.segments),
                "stop_segment": item.stop,
                "kept_segments": len(item.kept),
                "pruned_verified": item.verified_pruned,
                "chosen_tokens": stats[-1][3],
                "rejected_tokens": tokens[j],
                "prompt_tokens": prompt_tokens,
            }
        )
    if not records:
        raise RLTuneError(
            f"no preference pairs: {len(items)} traces, {len(stopped)} reached stop_point.threshold="
            f"{sp.threshold}; check stop_point.force_suffix against this model's output format"
        )
    out.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(records).save_to_disk(str(out / "dataset"))
    with open(out / "traces.jsonl", "w") as f:
        for item, n in zip(items, tokens):
            line = {"group": item.group, "gold": item.gold, "correct": item.original_correct, "tokens": n}
            line.update(segments=item.trace.segments, stop=item.stop, kept=item.kept, judge=item.judge_reply)
            f.write(json.dumps(line) + "\n")
    summary = summarize(items, records, stats, force.samples_drawn)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _judge(items: list[Item], recipe: DTORecipe, engine, tokenizer) -> None:
    cfg = recipe.prune
    if cfg.judge_model is None:
        prune_by_judge(items, engine, tokenizer, cfg, recipe.pairs.seed)
        return
    from rltune.models import load_tokenizer
    from rltune.rollout import engine_from_recipe

    judge_cfg = ModelConfig(
        path=cfg.judge_model, dtype=recipe.model.dtype, trust_remote_code=recipe.model.trust_remote_code
    )
    judge_tokenizer = load_tokenizer(cfg.judge_model, judge_cfg.trust_remote_code)
    longest = max(len(judge_tokenizer(p)["input_ids"]) for p in judge_prompts(items, cfg, judge_tokenizer))
    judge = engine_from_recipe(
        recipe.rollout,
        judge_cfg,
        seed=recipe.pairs.seed,
        max_model_len=longest + cfg.judge_max_tokens,
        tokenizer=judge_tokenizer,
    )
    try:
        prune_by_judge(items, judge, judge_tokenizer, cfg, recipe.pairs.seed)
    finally:
        judge.close()


def summarize(
    items: list[Item], records: list[dict], stats: list[tuple[int, ...]], forced_samples: int
) -> dict[str, Any]:
    """Counts, mean tokens and the attention-FLOPs ratio of the traces with a stop point: original,
    truncated at the stop point, and optimised (truncated + pruned)."""
    prompt, original, truncated, optimised, segments, kept = (list(col) for col in zip(*stats)) if stats else ([],) * 6

    def mean(xs: list[int]) -> float:
        return sum(xs) / len(xs) if xs else 0.0

    def flops_ratio(lengths: list[int]) -> float:
        base = attention_flops([p + n for p, n in zip(prompt, original)])
        return attention_flops([p + n for p, n in zip(prompt, lengths)]) / base if base else 0.0

    wrong = [item for item in items if not item.original_correct]
    return {
        "traces": len(items),
        "originally_correct": len(items) - len(wrong),
        "with_stop_point": len(stats),
        "originally_wrong": len(wrong),
        "rescued": sum(item.stop is not None for item in wrong),
        "pairs": len(records),
        "pruned_fell_back": sum(item.stop is not None and not item.verified_pruned for item in items),
        "mean_segments": mean(segments),
        "mean_kept_segments": mean(kept),
        "mean_tokens_original": mean(original),
        "mean_tokens_truncated": mean(truncated),
        "mean_tokens_optimised": mean(optimised),
        "attention_flops_ratio_truncated": flops_ratio(truncated),
        "attention_flops_ratio_optimised": flops_ratio(optimised),
        "forced_answer_samples": forced_samples,
    }
