"""Every method against plain GRPO over seeds: each paper's claim, the metric that tests it, and a verdict.

Each method runs at the budget of its CPU recipe and its baseline at the same budget, with the same
seeds (paired runs). A row's difference is method - baseline per seed, with a 95% t-interval over the
seeds, and its verdict:
  - a claim of a difference ("higher", "lower"): reproduced when the interval excludes 0 on the claimed
    side, not reproduced when it excludes 0 on the other side or lies inside +-margin (no practical
    difference), inconclusive otherwise;
  - a claim of no loss ("matches": at least as good, within the margin): reproduced when the interval
    lies above -margin, not reproduced when it lies below -margin, inconclusive otherwise.

Runs are kept under --out (one summary.json per run and seed) and reused, so a rerun with more seeds only
runs the new ones; `--rows` limits the rows (and so the runs) to some of them. Each summary is also
recorded under benchmarks/evidence/claims/ (committed), named by the run and a hash of what defines it (the
recipe's text, the overrides, the warm-up, the step counts), so a fresh clone reuses the runs already made
and a changed recipe runs again.

    python benchmarks/claims.py --seeds 3 --out runs/claims              # table on stdout, claims.json
    python benchmarks/claims.py --seeds 3 --out runs/claims --rows nft,rft
    python benchmarks/claims.py --seeds 3 --max-seeds 10 --out runs/claims   # seeds added where undecided
    python benchmarks/claims.py --table-only    # every row at the paired seeds recorded for it; runs nothing
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import darling_vs_grpo

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
RECORD = REPO / "benchmarks" / "evidence" / "claims"
ACCURACY_MARGIN = 0.05  # five points of mean@8: "matches" and "no practical difference" on accuracy
MOST_SEEDS = 1000  # past this, a claim is reported as not decidable by seeds at the spread seen


@dataclasses.dataclass(frozen=True)
class Run:
    """One training (or pruning) run, repeated per seed; `kind` says which driver runs it."""

    kind: str  # "demo" (the demo task, rltune's Trainer), "thinking" (the thinking model), "dto", "darling"
    recipe: str = ""
    overrides: tuple[str, ...] = ()
    warmup_loss: str = "ce"  # the demo model's warm-up loss: cross-entropy (entropy_sft for Light-IF's row)


ENTROPY = "algorithm.loss_terms=[{name: entropy, coef: 0.05}]"
RUNS: dict[str, Run] = {
    "grpo": Run("demo", "demo_cpu.yaml"),
    "grpo_dynamic": Run(
        "demo", "demo_cpu.yaml", ("algorithm.dynamic_sampling=true", "algorithm.dynamic_sampling_reward=math_accuracy")
    ),
    # the GRPO that Dr. GRPO corrects: each sequence's loss divided by its own length
    "grpo_seq_mean": Run("demo", "demo_cpu.yaml", ("algorithm.loss_aggregation=seq_mean_token_mean",)),
    "dr_grpo": Run("demo", "demo_cpu.yaml", ("algorithm.advantage=dr_grpo", "algorithm.loss_aggregation=constant")),
    "nft": Run("demo", "nft_cpu.yaml"),
    "rft": Run("demo", "nft_cpu.yaml", ("algorithm.objective_kwargs.neg_weight=0.0",)),
    "entropy_bonus": Run("demo", "demo_cpu.yaml", (ENTROPY,)),
    "ema_anchor": Run(
        "demo", "demo_cpu.yaml", ("algorithm.kl_coef=0.05", "algorithm.kl_anchor=ema", "algorithm.kl_anchor_decay=0.9")
    ),
    "tea": Run("demo", "demo_cpu.yaml", ("algorithm.loss_terms=[{name: tea, coef: 0.05}]",)),
    "t1_recipe": Run("demo", "t1_entropy_cpu.yaml"),
    "cosine": Run("demo", "cosine_length_cpu.yaml"),
    "entropy_sft": Run("demo", "demo_cpu.yaml", warmup_loss="entropy_sft"),
    "think_accuracy": Run("thinking", "thinking_efficiency_cpu.yaml", ("rewards=[{name: math_accuracy}]",)),
    "think_efficiency": Run("thinking", "thinking_efficiency_cpu.yaml"),
    # the claims that cannot show in the demo's 12 tokens, again where answers run to 100 tokens
    "think_cosine": Run(
        "thinking",
        "thinking_efficiency_cpu.yaml",
        (
            "rewards=[{name: math_accuracy, weight: 0.0}, {name: cosine_length, "
            "kwargs: {max_length: 100, r_c0: 2.0, r_cL: 1.0, r_w0: -1.0, r_wL: 0.0, r_exceed: -1.0}}]",
        ),
    ),
    "think_entropy": Run("thinking", "thinking_efficiency_cpu.yaml", ("rewards=[{name: math_accuracy}]", ENTROPY)),
    "thinking_model": Run("dto"),  # the warmed-up thinking model itself, evaluated
    "dto_simpo": Run("dto", "dto_cpu.yaml"),
    "darling_grpo": Run("darling", overrides=("grpo",)),
    "darling": Run("darling", overrides=("darling",)),
    # three variations of DARLING, to find why its quality falls short of GRPO's (issue: quality half)
    "darling_no_std": Run("darling", overrides=("darling", "algorithm.advantage=dr_grpo")),
    "darling_additive": Run(
        "darling", overrides=("darling", "rewards.1.kwargs.fusion=additive", "rewards.1.kwargs.diversity_weight=0.5")
    ),
    # a third of the budget, before GRPO reaches its ceiling (0.99 at 60 steps)
    "darling_grpo_20": Run("darling", overrides=("grpo", "train.steps=20")),
    "darling_20": Run("darling", overrides=("darling", "train.steps=20")),
}


@dataclasses.dataclass(frozen=True)
class Claim:
    key: str
    method: str
    claim: str  # the paper's claim, in a line
    paper: str
    run: str
    baseline: str
    metric: str
    direction: str  # "higher", "lower" or "matches"
    margin: float
    metric_doc: str


# fmt: off
CLAIMS = [
    Claim("darling_quality", "DARLING", "higher quality than GRPO", "arXiv 2509.02534", "darling", "darling_grpo",
          "quality", "higher", 0.02, "mean@16 on the digit-sum task"),
    Claim("darling_diversity", "DARLING", "more diverse right answers than GRPO", "arXiv 2509.02534", "darling",
          "darling_grpo", "coverage", "higher", 0.02, "distinct right answers / possible, 16 samples"),
    Claim("darling_quality_no_std", "DARLING, no std normalisation (the paper's advantage)",
          "higher quality than GRPO", "arXiv 2509.02534", "darling_no_std", "darling_grpo",
          "quality", "higher", 0.02, "mean@16 on the digit-sum task"),
    Claim("darling_quality_additive", "DARLING, additive fusion (quality + 0.5 x diversity)",
          "higher quality than GRPO", "arXiv 2509.02534", "darling_additive", "darling_grpo",
          "quality", "higher", 0.02, "mean@16 on the digit-sum task"),
    Claim("darling_quality_20", "DARLING, both at 20 steps (a third of the budget)",
          "higher quality than GRPO", "arXiv 2509.02534", "darling_20", "darling_grpo_20",
          "quality", "higher", 0.02, "mean@16 on the digit-sum task"),
    Claim("nft", "NFT", "matches GRPO (DAPO-style filtering on both)", "arXiv 2505.18116", "nft", "grpo_dynamic",
          "accuracy", "matches", ACCURACY_MARGIN, "mean@8 after RL"),
    Claim("nft_negatives", "NFT vs RFT", "learning from negatives beats RFT", "arXiv 2505.18116", "nft", "rft",
          "accuracy", "higher", ACCURACY_MARGIN, "mean@8 after RL"),
    Claim("rft", "RFT", "below GRPO (positives only)", "arXiv 2505.18116", "rft", "grpo_dynamic",
          "accuracy", "lower", ACCURACY_MARGIN, "mean@8 after RL"),
    Claim("dr_grpo_length", "Dr. GRPO", "wrong answers shorter than GRPO's", "arXiv 2503.20783", "dr_grpo",
          "grpo_seq_mean",
          "wrong_tokens", "lower", 0.1, "tokens per wrong eval answer"),
    Claim("dr_grpo_accuracy", "Dr. GRPO", "accuracy kept", "arXiv 2503.20783", "dr_grpo", "grpo",
          "accuracy", "matches", ACCURACY_MARGIN, "mean@8 after RL"),
    Claim("dynamic_sampling", "DAPO dynamic sampling", "better accuracy at equal steps", "arXiv 2503.14476",
          "grpo_dynamic", "grpo", "accuracy", "higher", ACCURACY_MARGIN, "mean@8 after RL"),
    Claim("entropy_bonus", "entropy bonus (T1)", "entropy kept higher", "arXiv 2501.11651",
          "entropy_bonus", "grpo", "entropy_end", "higher", 0.005, "token entropy, last 10 steps"),
    Claim("ema_anchor", "EMA anchor (T1)", "entropy kept higher", "arXiv 2501.11651", "ema_anchor", "grpo",
          "entropy_end", "higher", 0.005, "token entropy, last 10 steps"),
    Claim("t1_recipe", "T1 recipe (oversample, RLOO, bonus, anchor)", "entropy kept higher", "arXiv 2501.11651",
          "t1_recipe", "grpo", "entropy_end", "higher", 0.005, "token entropy, last 10 steps"),
    Claim("tea", "TEA (Light-IF)", "entropy kept higher", "arXiv 2508.03178", "tea", "grpo", "entropy_end",
          "higher", 0.005, "token entropy, last 10 steps"),
    Claim("cosine", "cosine length reward", "length stabilised", "arXiv 2502.03373", "cosine", "grpo",
          "length_sd", "lower", 0.05, "sd of the mean completion length, steps 51-100"),
    Claim("entropy_sft_entropy", "Entropy-SFT warm-up (Light-IF)", "RL starts with higher entropy",
          "arXiv 2508.03178", "entropy_sft", "grpo", "entropy_start", "higher", 0.005, "token entropy, RL steps 1-5"),
    Claim("entropy_sft_accuracy", "Entropy-SFT warm-up (Light-IF)", "better accuracy after RL", "arXiv 2508.03178",
          "entropy_sft", "grpo", "accuracy", "higher", ACCURACY_MARGIN, "mean@8 after RL"),
    Claim("dto_tokens", "DTO pruning + SimPO", "fewer tokens", "arXiv 2505.21765",
          "dto_simpo", "thinking_model", "tokens", "lower", 1.0, "tokens per eval answer"),
    Claim("dto_accuracy", "DTO pruning + SimPO", "accuracy kept (or better)", "arXiv 2505.21765", "dto_simpo",
          "thinking_model", "accuracy", "matches", ACCURACY_MARGIN, "mean@8"),
    Claim("thinking_efficiency_tokens", "thinking_efficiency reward", "fewer tokens", "arXiv 2505.21765",
          "think_efficiency", "think_accuracy", "tokens_end", "lower", 1.0, "completion tokens, last 5 steps"),
    Claim("thinking_efficiency_accuracy", "thinking_efficiency reward", "accuracy kept", "arXiv 2505.21765",
          "think_efficiency", "think_accuracy", "accuracy", "matches", ACCURACY_MARGIN, "mean@8 after RL"),
    Claim("cosine_thinking", "cosine length reward, thinking model", "length stabilised", "arXiv 2502.03373",
          "think_cosine", "think_accuracy", "length_sd", "lower", 0.5, "sd of the mean completion length, steps 21-40"),
    Claim("entropy_bonus_thinking", "entropy bonus (T1), thinking model", "entropy kept higher", "arXiv 2501.11651",
          "think_entropy", "think_accuracy", "entropy_end", "higher", 0.005, "token entropy, last 10 steps"),
]
# fmt: on


def verdict(direction: str, low: float, high: float, margin: float) -> str:
    """The rule of the module docstring, on a 95% interval [low, high] of method - baseline."""
    if math.isnan(low):
        return "inconclusive"
    if direction == "matches":
        if low > -margin:
            return "reproduced"
        return "not reproduced" if high < -margin else "inconclusive"
    sign = 1.0 if direction == "higher" else -1.0
    low, high = sorted((sign * low, sign * high))  # now "claimed side" means > 0
    if low > 0:
        return "reproduced"
    if high < 0 or (-margin < low and high < margin):
        return "not reproduced"
    return "inconclusive"


def seeds_to_decide(diffs: list[float], direction: str, margin: float, most: int = MOST_SEEDS) -> int | None:
    """The seeds at which these paired differences would decide the claim if their mean and spread held: the
    95% interval's half-width below the distance from the mean to the nearest boundary that decides it (0 on
    the mean's side, or the edge of +-margin for no practical difference; -margin for "matches"). None: past
    `most`, or fewer than two differences (no spread)."""
    if len(diffs) < 2:
        return None
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    room = abs(mean + margin) if direction == "matches" else max(abs(mean), margin - abs(mean))
    for n in range(2, most + 1):
        if darling_vs_grpo.t975(n - 1) * sd / math.sqrt(n) < room:
            return n
    return None


def _series(metrics_file: Path, key: str) -> list[float]:
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    return [r[key] for r in rows if r.get(key) is not None]


def _eval_summary(results: dict) -> dict[str, float]:
    bench = next(iter(results["benchmarks"].values()))
    samples = [s for p in bench["problems"] for s in p["samples"]]
    wrong = [s["tokens"] for s in samples if not s["correct"]]
    return {
        "accuracy": bench["metrics"]["mean@8"],
        "pass@8": bench["metrics"]["pass@8"],
        "maj@8": bench["metrics"]["maj@8"],
        "distinct": bench["metrics"]["distinct_answers"],
        "tokens": bench["metrics"]["mean_tokens"],
        "wrong_tokens": statistics.mean(wrong) if wrong else math.nan,
    }


def _training_summary(metrics_file: Path) -> dict[str, float]:
    entropy = _series(metrics_file, "entropy")
    length = _series(metrics_file, "completion/length_mean")
    half = len(length) // 2
    return {
        "entropy_start": statistics.mean(entropy[:5]),
        "entropy_end": statistics.mean(entropy[-10:]),
        "tokens_end": statistics.mean(length[-5:]),
        "length_sd": statistics.pstdev(length[half:]),
    }


def demo_model(out: Path, warmup_loss: str, thinking: bool, warmup_steps: int | None) -> tuple[Path, Path]:
    """The warmed-up demo model (or the thinking model), built once under `out`."""
    from rltune.demo import write_demo_assets
    from rltune.sft import SFTLossConfig

    name = "thinking" if thinking else warmup_loss
    model_dir, data = out / "models" / name, out / "models" / f"{name}.jsonl"
    if not (model_dir / "config.json").is_file():
        loss = SFTLossConfig(warmup_loss, token_ratio=0.8, entropy_coef=0.8)
        steps = warmup_steps or (800 if thinking else 300)
        p_correct = 0.5 if thinking else 0.35  # as `rltune demo-model [--thinking]` builds them
        write_demo_assets(
            model_dir, data, warmup_steps=steps, p_correct=p_correct, loss=loss, thinking=thinking, progress=False
        )
    return model_dir, data


def train_and_eval(
    run: Run, seed: int, model_dir: Path, data: Path, where: Path, max_tokens: int, steps: int | None
) -> dict:
    from rltune.config import load_recipe
    from rltune.demo import accuracy_settings
    from rltune.eval.runner import evaluate
    from rltune.trainer import Trainer

    overrides = [
        f"model.path={model_dir}",
        f"data.path={data}",
        f"train.seed={seed}",
        f"train.output_dir={where}",
        "train.report_to=[]",
        "train.log_completions_every=0",
        "train.overwrite_output_dir=true",
        "train.progress_bar=false",
        *run.overrides,
        *([f"train.steps={steps}"] if steps else []),
    ]
    settings = dataclasses.replace(accuracy_settings(data, max_tokens=max_tokens), seed=seed)
    with Trainer(load_recipe(RECIPES / run.recipe, overrides)) as trainer:
        trainer.train()
        results = evaluate(trainer.engine, trainer.tokenizer, settings, progress=False)
    return {**_eval_summary(results), **_training_summary(where / "metrics.jsonl")}


def rltune(*args: str) -> None:
    command = [sys.executable, "-m", "rltune", *args]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def dto_and_eval(run: Run, seed: int, model_dir: Path, data: Path, where: Path, steps: int | None) -> dict:
    """Prune + SimPO from the thinking model (or, with no recipe, the thinking model itself), then eval."""
    model = model_dir
    if run.recipe:
        paths = [f"model.path={model_dir}", f"data.path={data}", f"pairs.output_dir={where / 'pairs'}"]
        paths.append(f"prefer.output_dir={where / 'model'}")
        rltune("prune", str(RECIPES / run.recipe), *paths, f"pairs.seed={seed}")
        budget = [f"prefer.steps={steps}"] if steps else []
        rltune("prefer", str(RECIPES / run.recipe), *paths, f"prefer.seed={seed}", *budget)
        model = where / "model"
    rltune(
        "eval", "--model", str(model), "--benchmarks", f"{data}:question:answer", "--instruction", "{question}",
        "--no-chat-template", "--temperature", "1.0", "--top-p", "1.0", "--max-tokens", "100", "--n", "8",
        "--k", "1,8", "--seed", str(seed), "--kv-cache-gib", "1", "--out", str(where / "eval"),
    )  # fmt: skip
    return _eval_summary(json.loads((where / "eval" / "results.json").read_text()))


def run_hash(name: str, steps: int | None, warmup_steps: int | None) -> str:
    """What defines run `name`'s results apart from the seed (and rltune's code): its recipe's text, overrides,
    warm-up and step counts."""
    run = RUNS[name]
    recipe = (RECIPES / run.recipe).read_text() if run.recipe else ""
    identity = json.dumps([dataclasses.asdict(run), recipe, steps, warmup_steps])
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def record_folder(name: str, record_dir: Path, steps: int | None, warmup_steps: int | None) -> Path:
    """Where run `name`'s summaries are recorded, one seed<k>.json per seed."""
    return record_dir / f"{name}-{run_hash(name, steps, warmup_steps)}"


def recorded_seeds(name: str, record_dir: Path, steps: int | None, warmup_steps: int | None) -> list[dict]:
    """The summaries of run `name` recorded under `record_dir`, seeds 0, 1, ... up to the first one missing."""
    folder = record_folder(name, record_dir, steps, warmup_steps)
    summaries = []
    while (record := folder / f"seed{len(summaries)}.json").is_file():
        summaries.append(json.loads(record.read_text()))
    return summaries


def run_once(
    name: str,
    seed: int,
    out: Path,
    steps: int | None = None,
    warmup_steps: int | None = None,
    record_dir: Path = RECORD,
) -> dict:
    """The summary of run `name` at `seed`: recorded under `record_dir`, or in --out's summary.json, when it
    has already run."""
    record = record_folder(name, record_dir, steps, warmup_steps) / f"seed{seed}.json"
    if record.is_file():
        return json.loads(record.read_text())
    where = out / name / f"seed{seed}"
    done = where / "summary.json"
    if done.is_file():
        summary = json.loads(done.read_text())
    else:
        summary = train(name, seed, out, where, steps, warmup_steps)
        where.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(summary, indent=1))
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(summary, indent=1))
    return summary


def train(name: str, seed: int, out: Path, where: Path, steps: int | None, warmup_steps: int | None) -> dict:
    """Make run `name` at `seed` in `where` (its models built once under `out`); its summary."""
    run = RUNS[name]
    print(f"running {name} seed {seed}", flush=True)
    thinking_model = demo_model(out, "ce", True, warmup_steps) if run.kind in ("thinking", "dto") else None
    if run.kind == "demo":
        model = demo_model(out, run.warmup_loss, False, warmup_steps)
        return train_and_eval(run, seed, *model, where, max_tokens=12, steps=steps)
    if run.kind == "thinking":
        return train_and_eval(run, seed, *thinking_model, where, max_tokens=100, steps=steps)
    if run.kind == "dto":
        return dto_and_eval(run, seed, *thinking_model, where, steps)
    model_dir, data = darling_vs_grpo.build_task(out / "digit-sum", warmup_steps or 300)
    method, *variation = run.overrides
    summary = darling_vs_grpo.run(
        method, seed, model_dir, data, steps or 60, out / "digit-sum" / name, tuple(variation)
    )
    summary.pop("warm-up", None)
    return summary


def table(claims: list[Claim], results: dict[str, list[dict]], seeds: dict[str, int]) -> tuple[str, list[dict]]:
    """The claims table over each claim's first `seeds[key]` paired seeds; an inconclusive row also says how
    many seeds would decide it at the spread seen so far."""
    lines = [
        "| method | paper's claim | metric | baseline | baseline value | method value | difference [95% CI] | seeds "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for c in claims:
        n = seeds[c.key]
        method = [r[c.metric] for r in results[c.run][:n]]
        base = [r[c.metric] for r in results[c.baseline][:n]]
        diffs = [m - b for m, b in zip(method, base)]
        diff, low, high = darling_vs_grpo.interval(diffs)
        decision = verdict(c.direction, low, high, c.margin)
        needed = seeds_to_decide(diffs, c.direction, c.margin) if decision == "inconclusive" else None
        row = {
            **dataclasses.asdict(c),
            "baseline_value": statistics.mean(base),
            "method_value": statistics.mean(method),
            "difference": diff,
            "ci": [low, high],
            "seeds": len(method),
            "verdict": decision,
            "seeds_to_decide": needed,
        }
        rows.append(row)
        if decision == "inconclusive":
            decision += (
                f" (about {needed} seeds would decide it)" if needed else f" (over {MOST_SEEDS} seeds to decide)"
            )
        lines.append(
            f"| {c.method} | {c.claim} ({c.paper}) | {c.metric_doc} | {c.baseline} | {row['baseline_value']:.3f} | "
            f"{row['method_value']:.3f} | {diff:+.3f} [{low:+.3f}, {high:+.3f}] | {len(method)} | {decision} |"
        )
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seeds", type=int, default=3, help="seeds per run (paired: seed s of a method and its baseline)"
    )
    parser.add_argument(
        "--max-seeds",
        type=int,
        default=None,
        help="add paired seeds, one at a time, to the rows still inconclusive, up to this many (default: --seeds)",
    )
    parser.add_argument("--out", default="runs/claims", help="output folder (runs are reused from it)")
    parser.add_argument(
        "--record", default=str(RECORD), help="folder of the recorded summaries (committed; reused before --out)"
    )
    parser.add_argument("--steps", type=int, default=None, help="training steps of every run (default: each recipe's)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="warm-up steps of the models (default: 300/800)")
    parser.add_argument(
        "--rows", default="", help=f"comma-separated rows (default all): {', '.join(c.key for c in CLAIMS)}"
    )
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="run nothing: the table from the record, each row at the paired seeds recorded for both its runs",
    )
    args = parser.parse_args(argv)
    wanted = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(wanted) - {c.key for c in CLAIMS})
    if unknown:
        parser.error(f"unknown rows {unknown}; the rows are {[c.key for c in CLAIMS]}")
    claims = [c for c in CLAIMS if not wanted or c.key in wanted]
    if args.table_only:
        print_recorded(claims, Path(args.record), args.steps, args.warmup_steps)
        return
    out = Path(args.out)
    results: dict[str, list[dict]] = {name: [] for c in claims for name in (c.baseline, c.run)}
    seeds = {c.key: args.seeds for c in claims}
    most = max(args.max_seeds or args.seeds, args.seeds)
    while True:
        for c in claims:
            for name in (c.baseline, c.run):
                while len(results[name]) < seeds[c.key]:
                    seed = len(results[name])
                    results[name].append(run_once(name, seed, out, args.steps, args.warmup_steps, Path(args.record)))
        text, rows = table(claims, results, seeds)
        open_rows = [r["key"] for r in rows if r["verdict"] == "inconclusive" and r["seeds"] < most]
        if not open_rows:
            break
        for key in open_rows:  # one more paired seed for each claim still undecided
            seeds[key] += 1
    out.mkdir(parents=True, exist_ok=True)  # every run may have come from the record
    (out / "claims.json").write_text(json.dumps({"rows": rows, "runs": results}, indent=1))
    print(text)


def print_recorded(claims: list[Claim], record_dir: Path, steps: int | None, warmup_steps: int | None) -> None:
    """The table of the claims whose runs are recorded at two paired seeds or more (an interval needs two), and
    a line naming the others."""
    names = {name for c in claims for name in (c.baseline, c.run)}
    results = {name: recorded_seeds(name, record_dir, steps, warmup_steps) for name in names}
    seeds = {c.key: min(len(results[c.run]), len(results[c.baseline])) for c in claims}
    shown = [c for c in claims if seeds[c.key] >= 2]
    if shown:
        print(table(shown, results, seeds)[0])
    missing = [c.key for c in claims if seeds[c.key] < 2]
    if missing:
        print(f"not recorded at two paired seeds yet: {', '.join(missing)}")


if __name__ == "__main__":
    main()
