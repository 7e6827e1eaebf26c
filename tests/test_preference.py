"""`rltune prefer`: every setting of the recipe's prefer section reaches trl's trainer, for SimPO (trl's
CPO trainer) and DPO alike (the training run itself is in test_dto_e2e.py)."""

from __future__ import annotations

import datasets
import pytest

from rltune.config import ModelConfig
from rltune.dto import DTORecipe, PairsConfig, PreferConfig
from rltune.preference import build_preference_trainer

SETTINGS = dict(beta=0.3, lr=2e-5, steps=7, batch_size=3, gradient_accumulation_steps=2, max_length=48, warmup=2,
                seed=5, logging_steps=3)  # fmt: skip


@pytest.mark.parametrize("loss", ["simpo", "dpo"])
def test_every_prefer_setting_reaches_the_trl_trainer(tmp_path, tiny_model_dir, loss):
    rows = [{"prompt": f"{a}+1=", "chosen": str(a + 1), "rejected": str(a)} for a in range(6)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "pairs"))
    prefer = PreferConfig(loss=loss, simpo_gamma=0.7, sft_weight=0.2, output_dir=str(tmp_path / "out"), **SETTINGS)
    pairs = PairsConfig(output_dir=str(tmp_path / "pairs"))
    recipe = DTORecipe(model=ModelConfig(path=str(tiny_model_dir)), pairs=pairs, prefer=prefer)
    trainer = build_preference_trainer(recipe)
    args = trainer.args
    assert (args.learning_rate, args.max_steps, args.per_device_train_batch_size) == (2e-5, 7, 3)
    assert (args.gradient_accumulation_steps, args.max_length, args.warmup_steps) == (2, 48, 2)
    assert (args.beta, args.seed, args.logging_steps, args.output_dir) == (0.3, 5, 3, str(tmp_path / "out"))
    assert args.save_strategy == "no" and not args.report_to
    assert len(trainer.train_dataset) == 6
    if loss == "simpo":
        assert (type(trainer).__name__, args.loss_type, args.simpo_gamma, args.cpo_alpha) == (
            "CPOTrainer",
            "simpo",
            0.7,
            0.2,
        )
    else:
        assert type(trainer).__name__ == "DPOTrainer"


def test_a_preference_run_saves_the_model_and_reports_its_first_and_last_loss(tmp_path, tiny_model_dir):
    from rltune.preference import run_preference

    rows = [{"prompt": f"{a}+1=", "chosen": str(a + 1), "rejected": str(a)} for a in range(4)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "pairs"))
    prefer = PreferConfig(loss="dpo", lr=1e-3, steps=3, batch_size=2, logging_steps=1, output_dir=str(tmp_path / "out"))
    recipe = DTORecipe(
        model=ModelConfig(path=str(tiny_model_dir)),
        pairs=PairsConfig(output_dir=str(tmp_path / "pairs")),
        prefer=prefer,
    )
    result = run_preference(recipe)
    assert result["pairs"] == 4 and result["loss_first"] == pytest.approx(0.6931, abs=1e-3)  # DPO starts at ln 2
    assert result["loss_last"] < result["loss_first"]  # the chosen side gained on the rejected one
    assert 0.0 <= result["accuracy_first"] <= 1.0 and 0.0 <= result["accuracy_last"] <= 1.0
    assert (tmp_path / "out" / "config.json").is_file() and (tmp_path / "out" / "tokenizer_config.json").is_file()
