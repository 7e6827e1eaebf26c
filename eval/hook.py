"""Periodic evaluation as a trainer callback: the current policy, sampled by the trainer's engine."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from rltune.config import RecipeConfig
from rltune.eval.runner import EvalSettings, evaluate, flat_metrics, format_table

if TYPE_CHECKING:
    from rltune.trainer import Trainer

log = logging.getLogger(__name__)


class PeriodicEval:
    def __init__(self, recipe: RecipeConfig):
        self.every = recipe.eval.every
        self.at_start = recipe.eval.at_start
        self.settings = EvalSettings.from_recipe(recipe)
        self.first: dict | None = None  # the first eval's results, the baseline of the collapse alarm

    def run(self, trainer: Trainer, step: int) -> dict[str, float]:
        """Evaluate on the main process; returns `eval/<benchmark>/<metric>` scalars."""
        metrics: dict[str, float] = {}
        if trainer.accelerator.is_main_process:
            with trainer.current_policy_engine() as engine:
                results = evaluate(engine, trainer.tokenizer, self.settings, progress=trainer.cfg.train.progress_bar)
            out = Path(trainer.cfg.train.output_dir) / "eval" / f"step-{step}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))
            log.info("eval at step %d:\n%s", step, format_table(results))
            metrics = flat_metrics(results)
            if self.first is None:
                self.first = results
            metrics.update(collapse_alarms(self.first, results, step))
        trainer.accelerator.wait_for_everyone()
        return metrics

    def __call__(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        if self.every and step % self.every == 0:
            metrics.update(self.run(trainer, step))


def collapse_alarms(first: dict, current: dict, step: int) -> dict[str, float]:
    """`eval/<benchmark>/alarm_pass_at_k_collapse`: 1.0 when pass@k at the largest k fell below its first
    value by more than half the width of that value's 95% CI while pass@1 rose (RL sharpening the
    distribution onto fewer solvable problems: Yue et al. 2025, arXiv 2504.13837), else 0.0; a WARNING
    when it fires."""
    alarms = {}
    for name, bench in current["benchmarks"].items():
        before = first["benchmarks"].get(name, {}).get("metrics")
        now = bench["metrics"]
        ks = sorted(int(key.split("@")[1]) for key in now if key.startswith("pass@") and not key.endswith("_ci"))
        if before is None or len(ks) < 2 or f"pass@{ks[-1]}" not in before:
            continue
        k = ks[-1]
        lo, hi = before[f"pass@{k}_ci"]
        dropped = before[f"pass@{k}"] - now[f"pass@{k}"] > (hi - lo) / 2
        fired = dropped and now["pass@1"] > before["pass@1"]
        alarms[f"eval/{name}/alarm_pass_at_k_collapse"] = float(fired)
        if fired:
            log.warning(
                "eval %s at step %d: pass@%d fell %.3f -> %.3f (beyond its CI) while pass@1 rose %.3f -> %.3f: "
                "the policy may be solving fewer problems at all",
                name,
                step,
                k,
                before[f"pass@{k}"],
                now[f"pass@{k}"],
                before["pass@1"],
                now["pass@1"],
            )
    return alarms
