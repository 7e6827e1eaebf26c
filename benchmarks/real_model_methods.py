"""The methods on a real model: SmolLM2-135M-Instruct on GPT-3 arithmetic (recipes/smollm2_arith_cpu.yaml).

Every method trains from the same model at the recipe's budget (45 steps of 8 prompts x 8 samples) with the
same seeds, and is evaluated on the same 200 held-out problems (4 samples each at T=0.6, eval seed 0, the
answer graded wherever it is: `--answer-fallback`). Reported per method: held-out mean@4 and pass@4, the
eval completion length (on the between task also the distinct right answers per problem); against its
baseline (GRPO, or GRPO with dynamic sampling for NFT), the paired difference with two 95% intervals: a
t-interval over seeds (seed s of the method against seed s of the baseline) and a paired bootstrap over
problems (each problem's accuracy averaged over the seeds). The headline is GRPO against the model before
training: per seed (bootstrap over problems) and over seeds (t-interval of the per-seed changes).

Each run's summary is recorded under benchmarks/evidence/real_model/<method>-<hash>/seed<k>.json (committed),
the hash covering the recipe's text, the method's overrides and the eval settings: a fresh clone reuses
the runs already made and nothing runs twice. Runs go under --out; their checkpoints are deleted once
evaluated (1.6 GB each).

    rltune demo-model --smollm2 runs/smollm2-135m-instruct
    python benchmarks/arithmetic_task.py runs/arith2 --tasks 2D+,1DC --train 4000 --test 400
    python benchmarks/real_model_methods.py --methods grpo --seeds 5          # the headline
    python benchmarks/real_model_methods.py --seeds 3                         # every method
    python benchmarks/arithmetic_task.py runs/arith-between --tasks between --train 800 --test 200
    python benchmarks/real_model_methods.py --methods grpo_between,darling_between --seeds 3   # many answers

On the between task (`number_between`: a whole number strictly between A and B) "distinct" counts the
different right answers per problem, the diversity DARLING claims, with its paired difference to the baseline
(the same two intervals); the base model's rows come first. A second table says where each between run's
right answers lie: the shares at A+1 and A+2, and the distinct right answers per right sample.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import time
from pathlib import Path

from claims import rltune
from darling_vs_grpo import interval

from rltune.eval.metrics import bootstrap_ci
from rltune.rewards.number_between import between_bounds, right_number

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "smollm2_arith_cpu.yaml"
RECORD = REPO / "benchmarks" / "evidence" / "real_model"
DYNAMIC = ("algorithm.dynamic_sampling=true", "algorithm.dynamic_sampling_reward=final_number")
METHODS: dict[str, tuple[str, ...]] = {
    "grpo": (),
    "grpo_dynamic": DYNAMIC,
    # NFT (arXiv 2505.18116) keeps DAPO's filtering, as in the paper; correct = a right final number
    "nft": ("algorithm.objective=nft", "algorithm.objective_kwargs={correct_reward: final_number}", *DYNAMIC),
    "dr_grpo": ("algorithm.advantage=dr_grpo", "algorithm.loss_aggregation=constant"),
    # the paper's sequence clip range (3e-4 / 4e-4) and its mean over sequences
    "gspo": ("algorithm.objective=gspo", "algorithm.loss_aggregation=seq_mean_token_mean"),
    # DARLING (arXiv 2509.02534): quality (a right final number) x partition diversity, the paper's GRPO
    # without std normalisation; the task has one right answer, so partitions are by meaning (MiniLM
    # embeddings), not by answer
    "darling": (
        "rewards=[{name: final_number, weight: 0.0}, {name: math_accuracy, weight: 0.5}, "
        "{name: diversity_partition, weight: 1.0, kwargs: {judge: embedding, quality: final_number}}]",
        "algorithm.advantage=dr_grpo",
    ),
    # where right answers are many: a number between two bounds (the `between` task); DARLING partitions by it
    "grpo_between": ("rewards=[{name: number_between}]",),
    "darling_between": (
        "rewards=[{name: number_between, weight: 0.0}, {name: diversity_partition, "
        "kwargs: {judge: final_number, quality: number_between}}]",
        "algorithm.advantage=dr_grpo",
    ),
}
# the model before training: evaluated once, the same for every seed; one per task
BASE, BASE_BETWEEN = "base", "base_between"
BETWEEN_TASK = ("grpo_between", "darling_between", BASE_BETWEEN)  # trained and evaluated on --between-data
BASELINES = {
    "grpo_dynamic": "grpo", "nft": "grpo_dynamic", "dr_grpo": "grpo", "gspo": "grpo", "darling": "grpo",
    "darling_between": "grpo_between",
}  # fmt: skip
SAMPLES = 4  # per held-out problem
MEAN, PASS = f"mean@{SAMPLES}", f"pass@{SAMPLES}"
EVAL = (
    "--benchmarks", "{data}:question:answer", "--limit", "200", "--n", str(SAMPLES), "--k", f"1,{SAMPLES}",
    "--max-tokens", "200", "--dtype", "float32", "--answer-fallback", "--seed", "0",
)  # fmt: skip


def run_hash(method: str) -> str:
    """What defines a run's result apart from its seed (and rltune's code)."""
    identity = json.dumps([RECIPE.read_text(), METHODS.get(method, ()), EVAL])
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def evaluate(model: Path, train_data: Path, where: Path, between: bool) -> dict:
    """The held-out eval (test.jsonl beside the training problems) of `model`; on the between task each sample
    is graded again by `number_between`, and "distinct" counts the different right answers per problem."""
    test = train_data.with_name("test.jsonl")
    rltune("eval", "--model", str(model), *(a.format(data=test) for a in EVAL), "--out", str(where))
    bench = next(iter(json.loads((where / "results.json").read_text())["benchmarks"].values()))
    spread = {
        "distinct_texts": distinct_texts(bench["problems"]),
        "distinct_first_lines": distinct_texts(bench["problems"], first_line=True),
    }
    if between:
        return {**between_grades(bench["problems"]), **spread}
    return {
        MEAN: bench["metrics"][MEAN],
        PASS: bench["metrics"][PASS],
        "tokens": bench["metrics"]["mean_tokens"],
        "correct": [p["correct"] for p in bench["problems"]],  # of SAMPLES, per problem, for paired intervals
        **spread,
    }


def distinct_texts(problems: list[dict], first_line: bool = False) -> float:
    """How many different answers (whole texts, outer whitespace aside) a problem's samples hold, on average:
    the diversity that shows where the task has one right answer. With `first_line`, only each text's first
    line counts: on this task the working and the number, without what follows them (a sign-off, a remark)."""

    def part(text: str) -> str:
        return text.strip().split("\n")[0] if first_line else text.strip()

    return statistics.mean(len({part(s["text"]) for s in p["samples"]}) for p in problems)


def between_grades(problems: list[dict]) -> dict:
    right = [[right_number(s["text"], p["gold"]) for s in p["samples"]] for p in problems]
    correct = [sum(r is not None for r in rs) for rs in right]
    right_answers = [len({r for r in rs if r is not None}) for rs in right]
    lows, highs = zip(*(between_bounds(p["gold"]) for p in problems))
    return {
        MEAN: sum(correct) / (SAMPLES * len(problems)),
        PASS: sum(c > 0 for c in correct) / len(problems),
        "tokens": statistics.mean(s["tokens"] for p in problems for s in p["samples"]),
        "distinct": statistics.mean(right_answers),
        "correct": correct,
        "right_answers": right_answers,  # distinct right numbers, per problem, for paired intervals
        # where the right answers lie, per problem: each right sample's number less the lower bound (1 is A+1,
        # the nearest), and how many right numbers the problem has, for the answer spread table
        "right_offsets": [[r - low for r in rs if r is not None] for rs, low in zip(right, lows)],
        "possible": [high - low - 1 for low, high in zip(lows, highs)],
    }


def answer_spread(run: dict) -> dict:
    """Where a between run's right answers lie: how many right samples, the shares that are A+1 and A+2 (the
    numbers nearest the lower bound, where a collapsed policy lands), the distinct right answers as a share of
    the most the samples could hold, min(samples, right numbers), and per right sample (does a policy that is
    right more often also spread its answers, or repeat one)."""
    offsets = [o for problem in run["right_offsets"] for o in problem]
    per_right = [len(set(problem)) / len(problem) for problem in run["right_offsets"] if problem]
    return {
        "right": len(offsets),
        "a1": offsets.count(1) / max(len(offsets), 1),
        "a2": offsets.count(2) / max(len(offsets), 1),
        "of_most": statistics.mean(
            len(set(problem)) / max(min(SAMPLES, possible), 1)  # bounds with nothing between: none to hold
            for problem, possible in zip(run["right_offsets"], run["possible"])
        ),
        "per_right": statistics.mean(per_right) if per_right else 0.0,
    }


def answer_spread_table(results: dict[str, list[dict]]) -> str:
    """One row per between run that kept its right answers (records since they were kept)."""
    lines = [
        f"| method | seed | right samples | A+1 share | A+2 share | distinct right of min({SAMPLES}, possible) "
        "| distinct right per right sample |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, runs in results.items():
        for seed, run in enumerate(runs):
            if "right_offsets" in run:
                s = answer_spread(run)
                lines.append(
                    f"| {method} | {seed} | {s['right']} | {s['a1']:.0%} | {s['a2']:.0%} | {s['of_most']:.0%} "
                    f"| {s['per_right']:.2f} |"
                )
    return "\n".join(lines) if len(lines) > 2 else ""


def training_summary(metrics_file: Path, between: bool) -> dict:
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    key = "reward/number_between" if between else "reward/final_number"
    reward = [r[key] for r in rows if key in r]
    length = [r["completion/length_mean"] for r in rows if "completion/length_mean" in r]
    return {
        "train_reward_start": statistics.mean(reward[:5]),
        "train_reward_end": statistics.mean(reward[-5:]),
        "train_length_end": statistics.mean(length[-5:]),
    }


def run_once(method: str, seed: int, args: argparse.Namespace) -> dict | None:
    """The summary of `method` at `seed`: from the record, or trained and evaluated now (and recorded); None
    with --table-only when it is not recorded."""
    record = Path(args.record) / f"{method}-{run_hash(method)}" / f"seed{seed}.json"
    if record.is_file():
        return json.loads(record.read_text())
    if args.table_only:
        return None
    where = Path(args.out) / method / f"seed{seed}"
    print(f"running {method} seed {seed}", flush=True)
    start = time.monotonic()
    between = method in BETWEEN_TASK
    data = Path(args.between_data if between else args.data)
    if method in (BASE, BASE_BETWEEN):
        summary = evaluate(Path(args.model), data, where / "eval", between)
    else:
        rltune(
            "train", str(RECIPE), f"model.path={args.model}", f"data.path={data}", f"train.seed={seed}",
            f"train.output_dir={where}", "train.overwrite_output_dir=true", "train.report_to=[]",
            "train.progress_bar=false", *METHODS[method],
        )  # fmt: skip
        trained = time.monotonic() - start
        checkpoints = sorted(where.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        summary = {**evaluate(checkpoints[-1], data, where / "eval", between), "train_seconds": trained}
        summary.update(training_summary(where / "metrics.jsonl", between))
        for checkpoint in checkpoints:
            shutil.rmtree(checkpoint)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(summary, indent=1))
    return summary


def accuracy(run: dict) -> list[float]:
    return [c / SAMPLES for c in run["correct"]]


def solved(run: dict) -> list[float]:
    return [float(c > 0) for c in run["correct"]]


def right_answers(run: dict) -> list[float]:
    return [float(n) for n in run["right_answers"]]


def paired(method: list[dict], baseline: list[dict], per_problem) -> tuple[float, float, float, float, float]:
    """method - baseline: the mean, a t-interval over paired seeds and a bootstrap interval over problems."""
    by_seed = [statistics.mean(per_problem(m)) - statistics.mean(per_problem(b)) for m, b in zip(method, baseline)]
    mean, low, high = interval(by_seed)
    problems = zip(*(per_problem(m) for m in method), *(per_problem(b) for b in baseline))
    n = len(method)
    diffs = [(sum(p[:n]) - sum(p[n:])) / n for p in problems]
    return (mean, low, high, *bootstrap_ci(diffs))


def methods_table(results: dict[str, list[dict]]) -> str:
    lines = [
        f"| method | baseline | seeds | {MEAN} | {PASS} | eval tokens | distinct texts of {SAMPLES} (first lines) "
        f"| distinct right answers | {MEAN} - baseline [seeds] [problems] | {PASS} - baseline [seeds] [problems] "
        "| distinct right answers - baseline [seeds] [problems] |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, runs in results.items():
        base_name = BASELINES.get(method)
        row = f"| {method} | {base_name or '-'} | {len(runs)} | " + " | ".join(
            f"{statistics.mean(r[key] for r in runs):.3f}" for key in (MEAN, PASS, "tokens")
        )
        if all("distinct_texts" in r for r in runs):  # a record written before the count existed lacks it
            texts, first = (statistics.mean(r[key] for r in runs) for key in ("distinct_texts", "distinct_first_lines"))
            row += f" | {texts:.2f} ({first:.2f})"
        else:
            row += " | -"
        # one right answer per problem on the arithmetic task: distinct right answers mean something on between only
        row += f" | {statistics.mean(r['distinct'] for r in runs):.2f}" if method in BETWEEN_TASK else " | -"
        baseline = results.get(base_name, [])
        n = min(len(runs), len(baseline))  # the seeds paired with the baseline's; none without a baseline
        # the right answers per problem exist on the between task, in records written since they were kept
        kept = all("right_answers" in r for r in runs[:n] + baseline[:n])
        for per_problem in (accuracy, solved, right_answers):
            if n and (per_problem is not right_answers or kept):
                d, lo, hi, plo, phi = paired(runs[:n], baseline[:n], per_problem)
                over_seeds = f"[{lo:+.3f}, {hi:+.3f}]" if n > 1 else "[one seed]"  # a spread needs two seeds
                row += f" | {d:+.3f} {over_seeds} [{plo:+.3f}, {phi:+.3f}]"
            else:
                row += " | -"
        lines.append(row + " |")
    return "\n".join(lines)


def headline(base: dict, grpo: list[dict]) -> str:
    lines = [f"| seed | {MEAN} before | {MEAN} after | change [95% paired bootstrap over problems] | {PASS} after |"]
    lines.append("|---|---|---|---|---|")
    changes = []
    for seed, run in enumerate(grpo):
        diffs = [a - b for a, b in zip(accuracy(run), accuracy(base))]
        low, high = bootstrap_ci(diffs)
        changes.append(statistics.mean(diffs))
        lines.append(
            f"| {seed} | {base[MEAN]:.3f} | {run[MEAN]:.3f} | {changes[-1]:+.3f} [{low:+.3f}, {high:+.3f}] "
            f"| {run[PASS]:.3f} |"
        )
    if len(changes) > 1:  # a spread over seeds needs two of them
        mean, low, high = interval(changes)
        lines.append(f"| over {len(grpo)} seeds | | | {mean:+.3f} [{low:+.3f}, {high:+.3f}] (t-interval) | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (paired across methods)")
    parser.add_argument("--model", default="runs/smollm2-135m-instruct", help="the model before training")
    parser.add_argument("--data", default="runs/arith2/train.jsonl", help="training problems (test.jsonl beside)")
    parser.add_argument(
        "--between-data", default="runs/arith-between/train.jsonl", help="the between task's problems (test beside)"
    )
    parser.add_argument("--out", default="runs/real-model", help="folder of the runs")
    parser.add_argument("--record", default=str(RECORD), help="folder of the recorded summaries (committed)")
    parser.add_argument("--table-only", action="store_true", help="print the tables of the recorded runs only")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; the methods are {list(METHODS)}")
    bases = [BASE] + ([BASE_BETWEEN] if set(methods) & set(BETWEEN_TASK) else [])
    for path in (args.model, args.data, *([args.between_data] if len(bases) > 1 else [])):
        if not args.table_only and not Path(path).exists():
            parser.error(f"{path} does not exist: make it with the commands in this script's docstring")
    before = {name: run_once(name, 0, args) for name in bases}
    results: dict[str, list[dict]] = {name: [run] for name, run in before.items() if run is not None}
    for seed in range(args.seeds):  # seed by seed, so every method's first seeds land before later ones
        for method in methods:
            summary = run_once(method, seed, args)
            if summary is not None and len(results.setdefault(method, [])) == seed:  # seeds 0.. without gaps
                results[method].append(summary)
    results = {method: runs for method, runs in results.items() if runs}
    if before[BASE] is not None and results.get("grpo"):
        print(headline(before[BASE], results["grpo"]))
    print(methods_table(results))
    spread = answer_spread_table(results)
    if spread:
        print("\nWhere the right answers lie on the between task:\n" + spread)


if __name__ == "__main__":
    main()
