"""Preference training on prompt/chosen/rejected pairs through trl: SimPO (trl's CPOTrainer with
loss_type='simpo', cpo_alpha=0) or DPO (trl's DPOTrainer). `rltune prefer RECIPE` trains on the pairs
`rltune prune RECIPE` wrote (rltune.dto)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from rltune.errors import RLTuneError

log = logging.getLogger(__name__)


def load_pairs(path: str):
    """The pairs dataset (a `save_to_disk` folder, or the output_dir of `rltune prune` holding one)."""
    from datasets import load_from_disk

    folder = Path(path)
    if (folder / "dataset").is_dir():
        folder = folder / "dataset"
    if not folder.is_dir():
        raise RLTuneError(f"no pairs dataset at {path!r}: run `rltune prune RECIPE` first (pairs.output_dir)")
    try:
        pairs = load_from_disk(str(folder))
        pairs[len(pairs) - 1] if len(pairs) else None  # reads the last record: a truncated file fails here
    except Exception as exc:  # arrow/json errors of a cut or damaged file
        raise RLTuneError(
            f"the pairs dataset at {str(folder)!r} is damaged ({type(exc).__name__}: {exc}); run `rltune prune` again"
        ) from exc
    missing = {"prompt", "chosen", "rejected"} - set(pairs.column_names)
    if missing:
        raise RLTuneError(f"pairs dataset {path!r} lacks the columns {sorted(missing)}")
    if len(pairs) == 0:
        raise RLTuneError(f"pairs dataset {path!r} is empty")
    return pairs.select_columns(["prompt", "chosen", "rejected"])


def build_preference_trainer(recipe: Any):
    """trl's DPO (or CPO for SimPO) trainer for `recipe.model` on `recipe.pairs.output_dir` with the
    settings of `recipe.prefer`, not yet trained."""
    from rltune.models import load_policy, load_tokenizer

    cfg = recipe.prefer
    pairs = load_pairs(recipe.pairs.output_dir)
    tokenizer = load_tokenizer(recipe.model.path, recipe.model.trust_remote_code)
    model = load_policy(recipe.model)
    common = dict(
        output_dir=cfg.output_dir,
        learning_rate=cfg.lr,
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup,
        max_length=cfg.max_length,
        beta=cfg.beta,
        bf16=cfg.bf16,
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
    )
    if cfg.loss == "simpo":
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        args = CPOConfig(loss_type="simpo", cpo_alpha=cfg.sft_weight, simpo_gamma=cfg.simpo_gamma, **common)
        return CPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
    from trl import DPOConfig, DPOTrainer

    return DPOTrainer(model=model, args=DPOConfig(**common), train_dataset=pairs, processing_class=tokenizer)


def run_preference(recipe: Any) -> dict[str, float]:
    """Train with `build_preference_trainer`; saves the model and tokenizer to `prefer.output_dir` and
    returns the first and last logged loss and reward accuracy."""
    cfg = recipe.prefer
    trainer = build_preference_trainer(recipe)
    tokenizer = trainer.processing_class
    pairs = trainer.train_dataset
    trainer.train()
    trainer.save_model(cfg.output_dir)
    tokenizer.save_pretrained(cfg.output_dir)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    if not logged:
        return {}
    accuracy = next((k for k in logged[0] if k.endswith("rewards/accuracies")), None)
    result = {"loss_first": logged[0]["loss"], "loss_last": logged[-1]["loss"], "pairs": len(pairs)}
    if accuracy:
        result.update(accuracy_first=logged[0][accuracy], accuracy_last=logged[-1][accuracy])
    return result
