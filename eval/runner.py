"""The eval runner: sample n completions per problem with a rollout engine, grade, compute metrics.

Used by `rltune eval` (with an on-disk cache of completions, so a rerun with a larger k or a new
metric never resamples) and by the trainer's periodic evaluation (through the trainer's own engine).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets

from rltune.config import DEFAULT_INSTRUCTION, DataConfig
from rltune.data import PromptSource
from rltune.errors import RLTuneError
from rltune.eval.benchmarks import get_benchmark
from rltune.eval.grading import default_pool, equivalent, extract_boxed, grade_many, grading_failures
from rltune.eval.metrics import (
    answer_classes,
    bootstrap_ci,
    length_statistics,
    majority_is_correct,
    mean_at_n,
    pass_at_k,
    pass_hat_k,
)
from rltune.rewards import final_model_turn
from rltune.rollout import RolloutEngine, SamplingSettings
from rltune.rollout.multi_turn import generate_multi_turn

log = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    benchmarks: list[str] = field(default_factory=lambda: ["gsm8k"])
    """Shipped benchmark names or 'file.jsonl:question_column:answer_column'."""
    n: int = 16
    """Samples per problem."""
    k: list[int] = field(default_factory=lambda: [1])
    """pass@k and maj@k are reported for each k <= n."""
    temperature: float = 0.6
    """Yue et al. 2025 (arXiv 2504.13837) sample pass@k curves at T=0.6, top_p=0.95."""
    top_p: float = 0.95
    max_tokens: int = 1024
    limit: int | None = None
    """First N problems of each benchmark."""
    data_dir: str | None = None
    """Local benchmark folder (<data_dir>/<name>/<file>); None loads from the hub."""
    instruction: str = DEFAULT_INSTRUCTION
    use_chat_template: bool = True
    system_prompt: str | None = None
    seed: int = 0
    answer_fallback: bool = False
    """Grade unboxed responses by math-verify's own extraction ('answer: ...'); off = boxed answers only."""
    batch_size: int = 256
    """Prompts per engine call."""
    environment: str | None = None
    """Multi-turn sampling with this environment ('python_tool', or an import path), as in training;
    the answer graded is the one in the model's last turn. None: one completion per sample."""
    environment_kwargs: dict[str, Any] = field(default_factory=dict)
    max_turns: int = 4
    """With an environment: the most model turns per sample (max_tokens bounds the whole trajectory)."""
    breakdowns: list[str] = field(default_factory=list)
    """Columns of the benchmark's rows to report metrics by, beside its own breakdowns (MATH-500's level and
    subject, AIME's year, Minerva's type, OlympiadBench's subfield) and a `data_source` column."""

    @classmethod
    def from_recipe(cls, recipe) -> EvalSettings:
        """A training recipe's evaluation: its `eval` section, and its prompt format and chat template (the
        periodic eval, and `rltune eval --recipe`)."""
        hook = recipe.eval
        return cls(
            benchmarks=list(hook.benchmarks),
            n=hook.n,
            k=list(hook.k),
            temperature=hook.temperature,
            top_p=hook.top_p,
            max_tokens=hook.max_tokens or recipe.rollout.max_tokens,
            limit=hook.limit,
            data_dir=hook.data_dir,
            instruction=hook.instruction or recipe.data.instruction,
            use_chat_template=recipe.data.use_chat_template,
            system_prompt=recipe.data.system_prompt,
            seed=recipe.train.seed,
            environment=recipe.rollout.environment,
            environment_kwargs=dict(recipe.rollout.environment_kwargs),
            max_turns=recipe.rollout.max_turns,
        )

    def check(self) -> None:
        if self.n < 1:
            raise RLTuneError(f"eval n must be >= 1, got {self.n}")
        bad = [k for k in self.k if k < 1]
        if bad:
            raise RLTuneError(f"eval k values must be >= 1, got {bad}")
        if not self.benchmarks:
            raise RLTuneError("name at least one benchmark")


def evaluate(
    engine: RolloutEngine,
    tokenizer: Any,
    settings: EvalSettings,
    cache_dir: Path | None = None,
    model_id: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Run every benchmark; returns {'settings', 'benchmarks': {name: {'metrics', 'problems'}}}."""
    settings.check()
    out: dict[str, Any] = {"settings": asdict(settings), "model": model_id, "benchmarks": {}}
    context = getattr(engine, "context_length", None)
    env = None
    if settings.environment is not None:
        from rltune.environments import build_environment

        env = build_environment(settings.environment, tokenizer, **settings.environment_kwargs)
    for spec in settings.benchmarks:
        bench = get_benchmark(spec)
        started = time.perf_counter()
        rows = bench.load(settings.data_dir, settings.limit, tuple(settings.breakdowns))
        if not rows:
            raise RLTuneError(f"benchmark {bench.name!r} has no problems")
        prompts = PromptSource(
            DataConfig(
                path=bench.name,
                question_column="question",
                answer_column="gold",
                instruction=settings.instruction,
                system_prompt=settings.system_prompt,
                use_chat_template=settings.use_chat_template,
                shuffle=False,
            ),
            tokenizer,
            dataset=datasets.Dataset.from_list(rows),
            # prompts with no room for max_tokens in the engine's context are skipped and counted
            context_limit=None if context is None else context - settings.max_tokens,
            tools=getattr(env, "tools", None),
        )
        cache = _Cache(cache_dir / f"{bench.name}.jsonl" if cache_dir else None)
        samples = _sample(engine, prompts, settings, cache, model_id, progress, bench.name, tokenizer, env)
        failures = grading_failures()
        problems = _grade(prompts.rows, samples, settings)
        metrics = summarize(problems, settings, time.perf_counter() - started)
        metrics["grader_errors"] = grading_failures() - failures  # checks that failed; counted wrong
        out["benchmarks"][bench.name] = {"metrics": metrics, "problems": problems}
    return out


class _Cache:
    """Completions per (prompt, sampling settings, model weights) key, appended as jsonl lines. Lines that
    are truncated or garbled (a killed run) are reported by the file's name, dropped from the file, and
    their problems sampled again."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, list[dict[str, Any]]] = {}
        if path is None or not path.is_file():
            return
        good, bad = [], []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key, samples = record["key"], record["samples"]
                if not isinstance(samples, list) or not all(isinstance(x, dict) and "text" in x for x in samples):
                    raise ValueError("samples without texts")
            except (ValueError, KeyError, TypeError):
                bad.append(number)
                continue
            good.append(line)
            self.entries.setdefault(key, []).extend(samples)
        if bad:
            log.warning(
                "eval cache %s: line(s) %s are truncated or garbled; dropped, and those problems are sampled again",
                path,
                ", ".join(map(str, bad)),
            )
            partial = path.with_suffix(".jsonl.tmp")
            partial.write_text("".join(line + "\n" for line in good))
            partial.replace(path)

    def add(self, key: str, samples: list[dict[str, Any]]) -> None:
        self.entries.setdefault(key, []).extend(samples)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"key": key, "samples": samples}) + "\n")


def model_fingerprint(model: str) -> str:
    """What the eval cache keys completions on: for a local model folder its path and a sha256 over its
    weight, config and tokenizer files (so a model replaced at the same path is sampled again); for a hub
    id, the id."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    digest = hashlib.sha256()
    for file in sorted(folder.iterdir()):
        if file.is_file() and (file.suffix in (".safetensors", ".bin", ".json", ".model", ".tiktoken", ".txt")):
            digest.update(file.name.encode() + b"\0")
            with file.open("rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
    return f"{model} (sha256 {digest.hexdigest()[:16]})"


def _key(prompt: str, settings: EvalSettings, model_id: str) -> str:
    parts = [model_id, prompt, settings.temperature, settings.top_p, settings.max_tokens, settings.seed]
    if settings.environment is not None:  # tool-using samples are not plain ones
        parts += [settings.environment, settings.environment_kwargs, settings.max_turns]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def _sample(
    engine,
    prompts: PromptSource,
    settings: EvalSettings,
    cache: _Cache,
    model_id: str,
    progress: bool,
    name: str,
    tokenizer: Any,
    env: Any = None,
) -> list[list[dict[str, Any]]]:
    """Each problem's samples, from the cache or the engine (episodes with `env`, an environment)."""
    keys = [_key(row["prompt"], settings, model_id) for row in prompts.rows]
    # Problems that need more samples, grouped by how many they already have (each group is one call).
    by_have: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        have = len(cache.entries.get(key, []))
        if have < settings.n:
            by_have.setdefault(have, []).append(i)
    todo = sum(len(v) for v in by_have.values())
    if todo < len(keys):
        log.info("%s: %d of %d problems answered from the cache", name, len(keys) - todo, len(keys))
    calls = sum(-(-len(indices) // settings.batch_size) for indices in by_have.values())
    call = 0
    for have, indices in sorted(by_have.items()):
        for start in range(0, len(indices), settings.batch_size):
            chunk = indices[start : start + settings.batch_size]
            call += 1
            # A different seed per already-cached count, so extra samples are fresh draws.
            sampling = SamplingSettings(
                n=settings.n - have,
                temperature=settings.temperature,
                top_p=settings.top_p,
                max_tokens=settings.max_tokens,
                seed=settings.seed + have,
                progress=(f"sampling {name}" + (f" ({call}/{calls})" if calls > 1 else "")) if progress else None,
            )
            ids, rows = [prompts.prompt_ids[i] for i in chunk], [prompts.rows[i] for i in chunk]
            batch = generate_multi_turn(engine, env, tokenizer, ids, rows, sampling, settings.max_turns)
            for g, idx in enumerate(batch.groups()):
                cache.add(keys[chunk[g]], [_sample_entry(batch, j) for j in idx])
    return [cache.entries[key][: settings.n] for key in keys]


def _sample_entry(batch, j: int) -> dict[str, Any]:
    """What the cache keeps of sample j: the text graded (with an environment, the model's last turn, the
    whole trajectory under "turns"), why it ended, and its length in tokens."""
    entry = {"text": batch.completion_texts[j], "finish_reason": batch.finish_reasons[j]}
    entry["tokens"] = len(batch.completion_ids[j])
    if batch.turns is not None:
        entry["text"] = final_model_turn(batch.turns[j])
        entry["turns"] = batch.turns[j]
    return entry


def _grade(rows: list[dict[str, Any]], samples: list[list[dict[str, Any]]], settings: EvalSettings) -> list[dict]:
    texts = [s["text"] for per in samples for s in per]
    golds = [row["gold"] for row, per in zip(rows, samples) for _ in per]
    verdicts = iter(grade_many(texts, golds, fallback=settings.answer_fallback))
    problems = []
    for i, (row, per) in enumerate(zip(rows, samples)):
        graded = [{**s, "answer": extract_boxed(s["text"]), "correct": next(verdicts)} for s in per]
        problem = {"index": i, "question": row["question"], "gold": row["gold"], "samples": graded}
        problems.append({**problem, "groups": json.loads(row.get("groups") or "{}")})

    def votes(problem: dict) -> None:
        answers = [s["answer"] or None for s in problem["samples"]]
        correct = [s["correct"] for s in problem["samples"]]
        n = len(correct)
        problem["n"] = n
        problem["correct"] = sum(correct)
        # Greedy classes of the first k samples are the full classes cut at k, so one grouping serves all k.
        classes = answer_classes(answers, equivalent)
        problem["distinct_answers"] = len(classes)
        problem["maj"] = {str(k): majority_is_correct(classes, correct, k) for k in settings.k if k <= n}

    with ThreadPoolExecutor(max_workers=default_pool().size) as executor:
        list(executor.map(votes, problems))
    return problems


def summarize(problems: list[dict], settings: EvalSettings, seconds: float) -> dict[str, Any]:
    """Benchmark-level metrics with 95% bootstrap CIs over problems, completion lengths of right and wrong
    samples, and the same metrics per value of each breakdown (`by`)."""
    metrics: dict[str, Any] = {"problems": len(problems), "n": settings.n, "seconds": round(seconds, 1)}
    metrics.update(score(problems, settings))
    for k in settings.k:
        if k > settings.n:
            log.warning("k=%d > n=%d: pass@%d, pass^%d and maj@%d are not reported", k, settings.n, k, k, k)
    all_samples = [s for p in problems for s in p["samples"]]
    metrics["distinct_answers"] = sum(p["distinct_answers"] for p in problems) / len(problems)
    metrics["no_answer_fraction"] = sum(s["answer"] is None for s in all_samples) / len(all_samples)
    metrics["truncated_fraction"] = sum(s["finish_reason"] == "length" for s in all_samples) / len(all_samples)
    metrics["mean_tokens"] = sum(s["tokens"] for s in all_samples) / len(all_samples)
    metrics["tokens"] = {
        kind: length_statistics([s["tokens"] for s in chosen], [s["finish_reason"] == "length" for s in chosen])
        for kind, chosen in (
            ("all", all_samples),
            ("right", [s for s in all_samples if s["correct"]]),
            ("wrong", [s for s in all_samples if not s["correct"]]),
        )
    }
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for name in sorted({name for p in problems for name in p.get("groups", {})}):
        values = sorted({p["groups"][name] for p in problems if name in p["groups"]}, key=_natural)
        by[name] = {}
        for value in values:
            members = [p for p in problems if p["groups"].get(name) == value]
            by[name][value] = {"problems": len(members), **score(members, settings)}
    if by:
        metrics["by"] = by
    return metrics


def score(problems: list[dict], settings: EvalSettings) -> dict[str, Any]:
    """mean@n, and pass@k, pass^k and maj@k for each k <= n, over `problems` (graded, voted), with 95%
    bootstrap CIs over problems."""
    metrics: dict[str, Any] = {}
    means = [mean_at_n([s["correct"] for s in p["samples"]]) for p in problems]
    metrics[f"mean@{settings.n}"] = sum(means) / len(means)
    metrics[f"mean@{settings.n}_ci"] = bootstrap_ci(means, seed=settings.seed)
    for k in settings.k:
        if k > settings.n:
            continue
        for name, estimator in ((f"pass@{k}", pass_at_k), (f"pass^{k}", pass_hat_k)):
            values = [estimator(p["n"], p["correct"], k) for p in problems]
            metrics[name] = sum(values) / len(values)
            metrics[f"{name}_ci"] = bootstrap_ci(values, seed=settings.seed)
        metrics[f"maj@{k}"] = sum(p["maj"][str(k)] for p in problems) / len(problems)
    return metrics


def _natural(value: str) -> tuple:
    """Level 2 before level 10: numbers by value, then text."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def format_table(results: dict[str, Any]) -> str:
    """The console table: a row per benchmark, then a row per value of each of its breakdowns (indented); the
    lengths are mean tokens of right and wrong samples. Metrics a results file lacks (older ones) show as -."""
    settings = results["settings"]
    ks = [k for k in settings["k"] if k <= settings["n"]]
    n = settings["n"]
    header = [
        "benchmark",
        "problems",
        f"mean@{n}",
        *[f"pass@{k}" for k in ks],
        *[f"pass^{k}" for k in ks],
        *[f"maj@{k}" for k in ks],
        "distinct",
        "no-box",
        "tokens right/wrong",
        "seconds",
    ]

    def percent(m: dict, key: str) -> str:
        return f"{100 * m[key]:.1f}" if key in m else "-"

    def metric_cells(label: str, m: dict) -> list[str]:
        lo, hi = m[f"mean@{n}_ci"]
        cells = [label, str(m["problems"]), f"{100 * m[f'mean@{n}']:.1f} [{100 * lo:.1f},{100 * hi:.1f}]"]
        return cells + [percent(m, f"{kind}{k}") for kind in ("pass@", "pass^", "maj@") for k in ks]

    lines = []
    for name, bench in results["benchmarks"].items():
        m = bench["metrics"]
        tokens = m.get("tokens")
        lengths = f"{tokens['right']['mean']:.0f}/{tokens['wrong']['mean']:.0f}" if tokens else "-"
        distinct, no_box = f"{m['distinct_answers']:.2f}", f"{100 * m['no_answer_fraction']:.1f}%"
        lines.append(metric_cells(name, m) + [distinct, no_box, lengths, f"{m['seconds']:.0f}"])
        for breakdown, values in m.get("by", {}).items():
            for value, sub in values.items():
                lines.append(metric_cells(f"  {breakdown}={value}", sub) + [""] * 4)
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*row).rstrip() for row in [header, *lines])


def flat_metrics(results: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    """`eval/<benchmark>/<metric>` scalars (CIs left out) for the training log, with the lengths of right and
    wrong samples (`.../tokens/right/mean`) and the breakdowns (`.../by/level/3/mean@4`)."""
    out = {}

    def add(path: str, tree: dict[str, Any]) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                add(f"{path}/{key}", value)
            elif isinstance(value, (int, float)) and key not in ("problems", "n", "samples"):
                out[f"{path}/{key}"] = float(value)

    for name, bench in results["benchmarks"].items():
        add(f"{prefix}/{name}", bench["metrics"])
    return out
