"""PolicyUpdate's settings reaching the optimizer, and what a skipped update logs (the gradient formulas:
test_update_formulas.py; the lr schedule: test_lr_schedule.py)."""

import logging

import pytest
from test_trainer import recipe

from rltune.trainer import Trainer


@pytest.mark.parametrize("fused", [True, False])
def test_train_fused_optimizer_reaches_adamw(tmp_path, demo_assets, fused):
    train = {"fused_optimizer": fused, "betas": [0.8, 0.95], "weight_decay": 0.1}
    with Trainer(recipe(tmp_path, *demo_assets, train=train)) as trainer:
        group = trainer.optimizer.param_groups[0]
        assert bool(group["fused"]) is fused and group["betas"] == (0.8, 0.95) and group["weight_decay"] == 0.1


def test_a_non_finite_update_is_logged_with_its_step_and_run_of_skips(tmp_path, demo_assets, caplog):
    nan_term = {"loss_terms": [{"name": "plugins.my_terms:NaNLoss", "coef": 1.0}], "mini_batches": 1}
    with caplog.at_level(logging.WARNING, logger="rltune"):
        with Trainer(recipe(tmp_path, *demo_assets, algorithm=nan_term, train={"steps": 2})) as trainer:
            trainer.train()
    skipped = [r.getMessage() for r in caplog.records if "non-finite gradient norm" in r.getMessage()]
    assert skipped == [
        "non-finite gradient norm at step 1: update skipped (1 in a row)",
        "non-finite gradient norm at step 2: update skipped (2 in a row)",
    ]


def test_scoring_through_the_fused_head_leaves_no_hook_on_the_decoder(tmp_path, demo_assets):
    """The fused LM head reads the decoder's output through a forward hook for one forward: a hook left behind
    would keep every later forward's hidden states (generation, evals) alive, a micro-batch at a time."""
    with Trainer(recipe(tmp_path, *demo_assets, train={"steps": 2})) as trainer:
        decoder, _ = trainer.updater._fused_head(trainer.policy)
        trainer.train()
        assert len(decoder._forward_hooks) == 0
