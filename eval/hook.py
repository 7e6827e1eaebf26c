"""Periodic evaluation as a trainer callback: the current policy, sampled by the trainer's engine."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from rltune.config import EvalHookConfig, RecipeConfig
from rltune.eval.runner import EvalSettings, evaluate, flat_metrics, format_table

if TYPE_CHECKING:
    from rltune.trainer import Trainer

log = logging.getLogger(__name__)


class PeriodicEval:
    def __init__(self, recipe: RecipeConfig):
        hook: EvalHookConfig = recipe.eval
        self.every = hook.every
        self.at_start = hook.at_start
        self.settings = EvalSettings(
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
        )

    def run(self, trainer: Trainer, step: int) -> dict[str, float]:
        """Evaluate on the main process; returns `eval/<benchmark>/<metric>` scalars."""
        metrics: dict[str, float] = {}
        if trainer.accelerator.is_main_process:
            results = evaluate(trainer.engine, trainer.tokenizer, self.settings, progress=False)
            out = Path(trainer.cfg.train.output_dir) / "eval" / f"step-{step}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))
            log.info("eval at step %d:\n%s", step, format_table(results))
            metrics = flat_metrics(results)
        trainer.accelerator.wait_for_everyone()
        return metrics

    def __call__(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        if self.every and step % self.every == 0:
            metrics.update(self.run(trainer, step))
