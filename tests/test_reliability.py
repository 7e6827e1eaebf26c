"""Failure handling: non-finite values, partial checkpoints, and a real SIGKILL followed by resume."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_rewards import make_batch
from test_trainer import recipe

from conftest import REPO, demo_recipe, write_recipe
from rltune.checkpoint import list_checkpoints, load_state, resolve_checkpoint
from rltune.config import RewardSpec
from rltune.errors import RLTuneError
from rltune.metrics import trim_metrics
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


def wait_for(condition, timeout: float = 600, poll: float = 0.001) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(poll)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["hf", "vllm"])
def test_sigkills_anywhere_then_resume_reproduce_the_uninterrupted_run(tmp_path, demo_assets, engine):
    """Real SIGKILLs of a real training process: while a checkpoint is being written, in the middle of a
    step, and right between steps (with vLLM, whose engine starts from the base model's files, one kill
    mid-step). Each time the run resumes from the last complete checkpoint (the partial one is never
    loaded), and in the end every step's metrics and the final weights equal those of a run that was
    never interrupted."""
    from safetensors.torch import load_file

    if engine == "vllm":
        pytest.importorskip("vllm")

    base = {
        "model": {"path": str(demo_assets[0])},
        "data": {"path": str(demo_assets[1])},
        "rollout": {"engine": engine, "group_size": 4, "vllm": {"max_model_len": 64}},
        "train": {
            "steps": 6,
            "prompts_per_step": 4,
            "micro_batch_size": 16,
            "save_every": 1,
            "keep_checkpoints": 10,
            "progress_bar": False,
            "report_to": [],
        },
    }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}

    def train(out, *extra):
        base["train"]["output_dir"] = str(out)
        path = write_recipe(tmp_path / out.name, base)
        return [sys.executable, "-m", "rltune", "train", str(path), *extra]

    full = tmp_path / "full"
    subprocess.run(train(full), env=env, check=True, capture_output=True, timeout=600)

    run = tmp_path / "killed"
    complete = lambda step: (run / f"checkpoint-{step}" / "trainer_state.pt").is_file()  # noqa: E731
    rng = random.Random(0)
    kills = [
        # while checkpoint-2 is being written: its temporary folder exists, the rename has not happened
        ("checkpoint write", lambda: (run / ".checkpoint-2.tmp").is_dir()),
        # in the middle of step 4: some time after checkpoint-3, before checkpoint-4 starts
        ("mid-step", lambda: complete(3) and time.sleep(rng.uniform(0.02, 0.08)) is None),
        # right between steps: as soon as checkpoint-5 is complete
        ("between steps", lambda: complete(5)),
    ]
    if engine == "vllm":
        kills = kills[1:2]
    extra: tuple[str, ...] = ()
    for name, moment in kills:
        proc = subprocess.Popen(train(run, *extra), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(moment)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        latest = resolve_checkpoint("latest", run)
        load_state(latest)  # the checkpoint a resume would take is whole
        if name == "checkpoint write":
            assert (run / ".checkpoint-2.tmp").is_dir() and latest.name == "checkpoint-1"
        extra = ("train.resume_from=latest",)
    subprocess.run(train(run, *extra), env=env, check=True, capture_output=True, timeout=600)

    expected = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in got] == [1, 2, 3, 4, 5, 6]  # redone steps replace the killed run's lines
    for a, b in zip(expected, got):
        for key in ("reward/total", "loss", "grad_norm", "entropy"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)
    want, have = (
        load_file(full / "checkpoint-6" / "model.safetensors"),
        load_file(run / "checkpoint-6" / "model.safetensors"),
    )
    assert want.keys() == have.keys() and all(torch.equal(want[k], have[k]) for k in want)
    assert not list(run.glob(".checkpoint-*.tmp"))  # the next save of the same step cleared it


def test_a_stuck_rollout_engine_stops_the_run_with_a_clear_error(tmp_path, demo_assets):
    cfg = demo_recipe(
        tmp_path, *demo_assets, {"rollout": {"engine": "plugins.my_engines:StuckEngine", "timeout_s": 1.0}}
    )
    trainer = Trainer(cfg)
    started = time.monotonic()
    try:
        with pytest.raises(RLTuneError, match=r"produced no batch in 1s \(rollout.timeout_s\)"):
            trainer.train()
    finally:
        trainer.close()
    assert time.monotonic() - started < 30


def test_a_resumed_run_drops_metrics_after_its_checkpoint_and_half_written_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "loss": 0.3}\n{"step": 4, "lo')
    trim_metrics(path, last_step=2)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2]


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
