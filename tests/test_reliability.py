"""Failure handling: non-finite values, partial checkpoints, and a real SIGKILL followed by resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_rewards import make_batch
from test_trainer import recipe

from conftest import REPO, write_recipe
from rltune.checkpoint import list_checkpoints, resolve_checkpoint
from rltune.config import RewardSpec
from rltune.errors import RLTuneError
from rltune.reward_pipeline import RewardPipeline
from rltune.trainer import Trainer


def test_nan_reward_is_a_failure_scored_zero():
    batch = make_batch([["a", "b"]])
    pipeline = RewardPipeline([RewardSpec("plugins.my_rewards:not_a_number")])
    pipeline.score(batch)
    assert batch.rewards.tolist() == [0.0, 0.0] and pipeline.errors == 2


def test_non_finite_updates_are_skipped_then_stop_the_run(tmp_path, demo_assets):
    nan_term = {"loss_terms": [{"name": "plugins.my_terms:NaNLoss", "coef": 1.0}], "mini_batches": 1}
    trainer = Trainer(recipe(tmp_path, *demo_assets, algorithm=nan_term, train={"steps": 2, "max_bad_updates": 5}))
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    metrics = trainer.train()
    assert metrics["skipped_updates"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in trainer.policy.state_dict().items())
    stopping = Trainer(
        recipe(tmp_path / "b", *demo_assets, algorithm=nan_term, train={"steps": 5, "max_bad_updates": 2})
    )
    with pytest.raises(RLTuneError, match="2 updates in a row had non-finite gradients"):
        stopping.train()


def test_partial_checkpoints_are_never_resumed(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    torch.save({"step": 2}, run / "checkpoint-2" / "trainer_state.pt")
    (run / ".checkpoint-4.tmp").mkdir()  # killed while writing
    (run / "checkpoint-3").mkdir()  # no state file: incomplete
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-2"]
    assert resolve_checkpoint("latest", run).name == "checkpoint-2"
    with pytest.raises(RLTuneError, match="not a checkpoint folder"):
        resolve_checkpoint(str(run / "checkpoint-3"), run)


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, demo_assets):
    base = {
        "model": {"path": str(demo_assets[0])},
        "data": {"path": str(demo_assets[1])},
        "rollout": {"engine": "hf", "group_size": 4},
        "train": {
            "steps": 6,
            "prompts_per_step": 4,
            "micro_batch_size": 16,
            "save_every": 1,
            "keep_checkpoints": 10,
            "progress_bar": False,
            "tensorboard": False,
        },
    }
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}

    def train(out, *extra):
        base["train"]["output_dir"] = str(out)
        path = write_recipe(tmp_path / out.name, base)
        return [sys.executable, "-m", "rltune", "train", str(path), *extra]

    full = tmp_path / "full"
    subprocess.run(train(full), env=env, check=True, capture_output=True, timeout=600)
    expected = {json.loads(x)["step"]: json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()}

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (killed / "checkpoint-3" / "trainer_state.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / "checkpoint-3").is_dir()
    subprocess.run(train(killed, "train.resume_from=latest"), env=env, check=True, capture_output=True, timeout=600)
    got = {}
    for line in (killed / "metrics.jsonl").read_text().splitlines():
        got[json.loads(line)["step"]] = json.loads(line)  # steps redone after the kill: keep the last
    for step in (4, 5, 6):
        for key in ("reward/total", "loss", "grad_norm", "entropy"):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-5, abs=1e-7), (step, key)
    final = torch.load(killed / "checkpoint-6" / "trainer_state.pt", weights_only=True)
    assert (
        final["step"] == 6
        and final["data"] == torch.load(full / "checkpoint-6" / "trainer_state.pt", weights_only=True)["data"]
    )


def test_bad_inputs_say_what_to_fix(tmp_path, demo_assets, arithmetic_file):
    with pytest.raises(RLTuneError, match="cannot load a tokenizer from '/no/such/model' \\(model.path\\)"):
        Trainer(recipe(tmp_path, "/no/such/model", arithmetic_file))
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"question": "1+1=", "answer": "2"}) + "\n")
    with pytest.raises(RLTuneError, match="has no usable rows"):
        Trainer(recipe(tmp_path, demo_assets[0], empty, data={"max_prompt_tokens": 1}))
    batch = make_batch([["a", "b"]])
    with pytest.raises(RLTuneError, match="returned 1 scores for a group of 2"):
        RewardPipeline([RewardSpec("plugins.my_rewards:WrongCount")]).score(batch)


def test_output_dir_with_another_run_is_refused_unless_replaced(tmp_path, demo_assets):
    Trainer(recipe(tmp_path, *demo_assets, train={"steps": 1})).train()
    with pytest.raises(RLTuneError, match="holds another run .*resume_from=latest.*overwrite_output_dir=true"):
        Trainer(recipe(tmp_path, *demo_assets, train={"steps": 1, "overwrite_output_dir": False}))
    assert (tmp_path / "run" / "checkpoint-1").is_dir()  # nothing was touched
    Trainer(recipe(tmp_path, *demo_assets, train={"steps": 2, "overwrite_output_dir": True, "save_every": 2})).train()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-2"]
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    import random

    import numpy as np

    from rltune.checkpoint import rng_state, set_rng_state

    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), float(np.random.rand()), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == expected
