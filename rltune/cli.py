"""Command line: `rltune train RECIPE [key=value ...]`, `rltune demo [RECIPE] [key=value ...]`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from rltune.errors import RLTuneError

log = logging.getLogger("rltune")

DEFAULT_DEMO_RECIPE = "recipes/demo_cpu.yaml"


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("vllm", "httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_train(args: argparse.Namespace) -> int:
    from rltune.config import load_recipe
    from rltune.trainer import Trainer

    cfg = load_recipe(args.recipe, args.overrides)
    trainer = Trainer(cfg)
    try:
        trainer.train()
    finally:
        trainer.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Warm-up (if the model folder is missing), GRPO, then accuracy before and after."""
    from rltune.config import load_recipe
    from rltune.demo import sampled_accuracy, write_demo_assets
    from rltune.models import load_causal_lm, load_tokenizer
    from rltune.trainer import Trainer

    started = time.perf_counter()
    cfg = load_recipe(args.recipe, args.overrides)
    model_dir, data_file = Path(cfg.model.path), Path(cfg.data.path)
    if not (model_dir / "config.json").is_file() or not data_file.is_file():
        log.info("building the warmed-up tiny model in %s", model_dir)
        write_demo_assets(model_dir, data_file)
    warmup_s = time.perf_counter() - started
    rows = [json.loads(line) for line in data_file.read_text().splitlines()]
    tokenizer = load_tokenizer(str(model_dir))
    before = sampled_accuracy(load_causal_lm(str(model_dir), cfg.model), tokenizer, rows, n=8, temperature=1.0)
    trainer = Trainer(cfg)
    try:
        last = trainer.train()
        after = sampled_accuracy(trainer.policy, tokenizer, rows, n=8, temperature=1.0)
    finally:
        trainer.close()
    first = json.loads((Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()[0])
    summary = {
        "accuracy_before": before,
        "accuracy_after": after,
        "reward_first_step": first["reward/total"],
        "reward_last_step": last["reward/total"],
        "warmup_s": round(warmup_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
    }
    Path(cfg.train.output_dir, "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"\nrltune demo: sampled accuracy (mean@8, T=1) {before:.3f} -> {after:.3f}; "
        f"mean reward {summary['reward_first_step']:.3f} (step 1) -> {summary['reward_last_step']:.3f} "
        f"(step {cfg.train.steps}); {summary['total_s']:.0f}s in all"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rltune", description="RL post-training for language models")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run a recipe")
    train.add_argument("recipe", help="recipe YAML file")
    train.add_argument("overrides", nargs="*", help="section.key=value overrides")
    train.set_defaults(func=cmd_train)
    demo = sub.add_parser("demo", help="the CPU demo: warm-up, GRPO, accuracy before/after")
    demo.add_argument("recipe", nargs="?", default=DEFAULT_DEMO_RECIPE)
    demo.add_argument("overrides", nargs="*")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        return args.func(args)
    except RLTuneError as exc:
        print(f"rltune: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
