"""The learning-rate schedule as the run logs it: warmup counted in RL steps, with every scheduler."""

import json

import pytest
from test_trainer import recipe

from rltune.trainer import Trainer

# lr / train.lr logged after each of 3 RL steps with warmup_steps=2 and 2 optimizer steps per RL step
# (4 warmup and 6 scheduler steps in all): the lr at scheduler step k is k/4 during warmup, then held
# (constant) or decayed linearly to 0 at step 6.
EXPECTED = {"constant": [0.5, 1.0, 1.0], "linear": [0.5, 1.0, 0.0]}


@pytest.mark.parametrize("scheduler", list(EXPECTED))
def test_warmup_is_counted_in_rl_steps_with_every_scheduler(tmp_path, demo_assets, scheduler):
    lr = 1e-3
    train = {"steps": 3, "warmup_steps": 2, "lr_scheduler": scheduler, "lr": lr}
    with Trainer(recipe(tmp_path, *demo_assets, algorithm={"mini_batches": 2}, train=train)) as trainer:
        trainer.train()
    logged = [json.loads(line)["lr"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == pytest.approx([lr * f for f in EXPECTED[scheduler]], abs=1e-12)
