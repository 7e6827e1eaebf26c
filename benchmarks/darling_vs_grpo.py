"""DARLING against GRPO where diversity can pay: a task with many right answers.

The task (rewards/digit_sum.py): the prompt "S=" asks for a two-digit number whose digits sum to S,
S = 1..18, which has 1 to 9 right answers. The demo's tiny model is warmed up to prefer one or two of
them (and to be wrong a fifth of the time). Then, at equal budget and the same seeds, it is trained with
GRPO on the task's reward and with DARLING (the same reward fused with the answer-partition diversity of
each group, arXiv 2509.02534), and evaluated on 16 samples per prompt at T=1: quality (mean@16), distinct
right answers per prompt out of the possible ones, and pass@k for k = 1..16. DARLING's paper claims higher
quality and higher diversity together. Reported: each method's mean over seeds, and the paired
difference DARLING - GRPO with a 95% t-interval over seeds.

    python benchmarks/darling_vs_grpo.py --seeds 5 --steps 60 --out runs/darling-vs-grpo
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from pathlib import Path

from rltune.config import load_recipe
from rltune.demo import build_tiny_model, build_tokenizer, warm_up
from rltune.eval.grading import extract_boxed
from rltune.eval.metrics import pass_at_k
from rltune.rewards.digit_sum import right_answers
from rltune.rollout import SamplingSettings
from rltune.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
TARGETS = range(1, 19)
SAMPLES = 16
# Student's t 97.5% quantile by degrees of freedom (two-sided 95% interval)
T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086,
    21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042,
}  # fmt: skip


def t975(df: int) -> float:
    """The table, and past 30 degrees of freedom 1.96 + 2.4/df (within 0.002 of the exact quantile)."""
    return T975.get(df, 1.96 + 2.4 / df)


def preferring_target(answer: str, rng: random.Random) -> str:
    """The warm-up's habit: the smallest right answer most of the time, the largest sometimes, else a near miss."""
    right = right_answers(int(answer))
    draw = rng.random()
    if draw < 0.6:
        return f"\\boxed{{{right[0]}}}"
    if draw < 0.8:
        return f"\\boxed{{{right[-1]}}}"
    wrong = [n for n in range(10, 100) if abs(n // 10 + n % 10 - int(answer)) == 1]
    return f"\\boxed{{{rng.choice(wrong)}}}"


def build_task(out: Path, warmup_steps: int) -> tuple[Path, Path]:
    rows = [{"question": f"{s}=", "answer": str(s)} for s in TARGETS]
    data = out / "digit_sum.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model_dir = out / "warmup-model"
    if not (model_dir / "config.json").is_file():
        tokenizer = build_tokenizer()
        model = build_tiny_model(len(tokenizer), seed=0)
        warm_up(model, tokenizer, rows * 8, warmup_steps, preferring_target, seed=0)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    return model_dir, data


METHODS = {
    "grpo": ["rewards=[{name: digit_sum}]"],
    # the quality reward enters through the fusion (weight 0 on its own), as in recipes/darling_cpu.yaml
    "darling": [
        "rewards=[{name: digit_sum, weight: 0.0},"
        " {name: diversity_partition, kwargs: {judge: answer, quality: digit_sum}}]"
    ],
}


def evaluate(trainer: Trainer, seed: int) -> dict[str, float]:
    """Quality, distinct right answers (share of the possible ones) and pass@k over the 18 prompts."""
    tokenizer = trainer.tokenizer
    ids = [tokenizer(f"{s}=", add_special_tokens=False)["input_ids"] for s in TARGETS]
    sampling = SamplingSettings(n=SAMPLES, temperature=1.0, max_tokens=12, seed=10_000 + seed)
    batch = trainer.engine.generate(ids, [{} for _ in ids], sampling)
    quality, coverage, passes = [], [], {k: [] for k in (1, 2, 4, 8, 16)}
    for target, members in zip(TARGETS, batch.groups()):
        answers = [(extract_boxed(batch.completion_texts[i]) or "").strip() for i in members]
        right = {a for a in answers if a.isdigit() and int(a) in right_answers(target)}
        correct = sum(a.isdigit() and int(a) in right_answers(target) for a in answers)
        quality.append(correct / len(answers))
        coverage.append(len(right) / len(right_answers(target)))
        for k in passes:
            passes[k].append(pass_at_k(len(answers), correct, k))
    metrics = {"quality": statistics.mean(quality), "coverage": statistics.mean(coverage)}
    metrics.update({f"pass@{k}": statistics.mean(v) for k, v in passes.items()})
    return metrics


def run(
    method: str, seed: int, model_dir: Path, data: Path, steps: int, out: Path, extra: tuple[str, ...] = ()
) -> dict[str, float]:
    """Train `method` (then `extra` recipe overrides, e.g. a variation of it) at `seed`; its eval."""
    overrides = [
        f"model.path={model_dir}",
        f"data.path={data}",
        f"train.steps={steps}",
        "train.prompts_per_step=18",
        f"train.seed={seed}",
        f"train.output_dir={out / f'{method}-seed{seed}'}",
        "train.report_to=[]",
        "train.log_completions_every=0",
        "train.overwrite_output_dir=true",
        *METHODS[method],
        *extra,
    ]
    with Trainer(load_recipe(REPO / "recipes" / "demo_cpu.yaml", overrides)) as trainer:
        before = evaluate(trainer, seed) if seed == 0 and method == "grpo" else None
        trainer.train()
        after = evaluate(trainer, seed)
    if before is not None:
        after["warm-up"] = before
    return after


def interval(values: list[float]) -> tuple[float, float, float]:
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per method (paired)")
    parser.add_argument("--steps", type=int, default=60, help="RL steps per run (18 prompts x 8 samples each)")
    parser.add_argument("--warmup-steps", type=int, default=300, help="supervised warm-up steps")
    parser.add_argument("--out", default="runs/darling-vs-grpo", help="output folder")
    args = parser.parse_args()
    out = Path(args.out)
    model_dir, data = build_task(out, args.warmup_steps)
    results = {m: [run(m, seed, model_dir, data, args.steps, out) for seed in range(args.seeds)] for m in METHODS}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    warm = results["grpo"][0].get("warm-up", {})
    keys = ["quality", "coverage", "pass@1", "pass@4", "pass@16"]
    print(f"\n{args.seeds} seeds, {args.steps} steps; warm-up model: " + ", ".join(f"{k} {warm[k]:.3f}" for k in keys))
    print("| metric | GRPO | DARLING | DARLING - GRPO [95% CI] |\n|---|---|---|---|")
    for key in keys:
        grpo = [r[key] for r in results["grpo"]]
        darling = [r[key] for r in results["darling"]]
        diff, low, high = interval([d - g for d, g in zip(darling, grpo)])
        shown = f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]"
        print(f"| {key} | {statistics.mean(grpo):.3f} | {statistics.mean(darling):.3f} | {shown} |")


if __name__ == "__main__":
    main()
