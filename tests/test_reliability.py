"""Failure handling: non-finite values, partial checkpoints, and a real SIGKILL followed by resume."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
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
@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=pytest.mark.heavy)])
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
    with pytest.raises(RLTuneError, match="model.path '/no/such/model' does not exist"):
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


# --- the adversarial probes of 2026-12 (issue: reliability, round 2) ------------------------------------


def _load(tmp_path, demo_assets, *overrides, base="recipes/demo_cpu.yaml"):
    """The demo recipe on the demo assets with CLI-style overrides, as `rltune train` would load it."""
    from rltune.config import load_recipe

    path = write_recipe(tmp_path, {"model": {"path": str(demo_assets[0])}, "data": {"path": str(demo_assets[1])}}, base)
    return load_recipe(path, list(overrides))


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_grad_norm=-1", "train.max_grad_norm must be >= 0"),
        ("train.lr=.inf", "train.lr must be a finite number"),
        ("train.lr=.nan", "train.lr must be a finite number"),
        ("train.lr=-1e-3", "train.lr must be > 0"),
        ("train.betas=[0.9, 1.5]", r"train.betas must be in \[0, 1\)"),
        ("train.weight_decay=-0.1", "train.weight_decay must be >= 0"),
        ("train.log_every=0", "train.log_every must be > 0"),
        ("reward_options.timeout_s=0", "reward_options.timeout_s must be > 0"),
        ("rollout.top_p=1.5", r"rollout.top_p must be in \(0, 1\]"),
        ("rollout.vllm.gpu_memory_utilization=0", r"gpu_memory_utilization must be in \(0, 1\]"),
        ("algorithm.kl_anchor_decay=1", r"kl_anchor_decay must be in \[0, 1\)"),
        ("train.save_on_signal_s=-5", "train.save_on_signal_s must be > 0"),
    ],
)
def test_numeric_settings_are_finite_and_in_range(tmp_path, demo_assets, override, message):
    from rltune.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, demo_assets, override)


def test_other_recipe_kinds_and_python_built_recipes_are_range_checked(tmp_path, demo_assets):
    from rltune.config import RecipeConfig, load_recipe
    from rltune.dto import DTORecipe
    from rltune.errors import ConfigError

    dto = write_recipe(
        tmp_path / "dto",
        {"model": {"path": str(demo_assets[0])}, "data": {"path": str(demo_assets[1])}},
        "recipes/dto_pairs.yaml",
    )
    with pytest.raises(ConfigError, match="prefer.lr must be > 0"):
        load_recipe(dto, ["prefer.lr=-1"], cls=DTORecipe)
    cfg = _load(tmp_path, demo_assets)
    cfg.train.lr = float("inf")
    assert isinstance(cfg, RecipeConfig)
    with pytest.raises(ConfigError, match="train.lr"):
        Trainer(cfg)


def test_max_grad_norm_zero_means_no_clipping(tmp_path, demo_assets):
    one = {"mini_batches": 1}  # one optimizer step: both measure the same gradient
    clipped = Trainer(recipe(tmp_path / "a", *demo_assets, algorithm=one, train={"steps": 1, "max_grad_norm": 1e-6}))
    unclipped = Trainer(recipe(tmp_path / "b", *demo_assets, algorithm=one, train={"steps": 1, "max_grad_norm": 0}))
    before = {k: v.clone() for k, v in unclipped.policy.state_dict().items()}
    small, big = clipped.train(), unclipped.train()
    assert big["grad_norm"] == pytest.approx(small["grad_norm"], rel=1e-4)  # the same gradient, measured
    moved = max((v - before[k]).abs().max().item() for k, v in unclipped.policy.state_dict().items())
    assert moved > 1e-4  # a zero bound would have zeroed every update
    clipped.close()
    unclipped.close()


def test_a_diverging_run_stops_before_saving_wrecked_weights(tmp_path, demo_assets, caplog):
    """lr=1 collapses the demo policy to one degenerate answer within a step (every group flat, reward 0,
    exit 0 before): the weight-growth guard stops it, and nothing after the last good checkpoint is saved."""
    trainer = Trainer(recipe(tmp_path, *demo_assets, train={"steps": 5, "lr": 1.0, "save_every": 1}))
    with pytest.raises(RLTuneError, match=r"weights' norm grew from .* over train.max_weight_growth=3"):
        trainer.train()
    trainer.close()
    assert list_checkpoints(tmp_path / "run") == []


def test_nan_weights_are_never_checkpointed_and_stop_the_run(tmp_path, demo_assets):
    from rltune.checkpoint import save_checkpoint

    trainer = Trainer(recipe(tmp_path, *demo_assets, train={"steps": 1}))
    with torch.no_grad():
        next(trainer.policy.parameters())[0, 0] = float("nan")
    with pytest.raises(
        RLTuneError,
        match=r"not saving checkpoint-7: \d+ weight tensors hold NaN/inf \(first 'model.embed_tokens.weight'\)",
    ):
        save_checkpoint(tmp_path / "run", 7, trainer.policy, trainer.tokenizer, {}, "", 2)
    assert not list((tmp_path / "run").glob("*checkpoint-7*"))
    with pytest.raises(RLTuneError, match="weights became non-finite"):
        trainer.updater.check_weights(0)
    trainer.close()


def test_entropy_collapse_to_uniform_stops_the_run():
    from rltune.guards import CollapseGuard

    guard = CollapseGuard(vocab_size=100, steps_in_a_row=2)
    guard.check(1, 0.5)
    guard.check(2, 4.5)  # ln 100 = 4.6: uniform
    with pytest.raises(RLTuneError, match="collapsed at step 3"):
        guard.check(3, 4.6)
    untrained = CollapseGuard(vocab_size=100, steps_in_a_row=2)
    for step in range(1, 5):
        untrained.check(step, 4.6)  # started uniform (an untrained model): not a collapse


def test_hung_sync_rewards_time_out_together_and_never_keep_the_process_alive(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path[:0] = [{str(REPO / 'tests')!r}]\n"
        "from test_rewards import make_batch\n"
        "from rltune.config import RewardSpec\n"
        "from rltune.reward_pipeline import RewardPipeline\n"
        "def hang(completion, row):\n"
        "    time.sleep(1000)\n"
        "batch = make_batch([[str(i) for i in range(8)] for _ in range(4)])\n"
        # every call failing would stop the step (max_error_fraction); here the timeouts themselves are tested
        "pipeline = RewardPipeline([RewardSpec(function=hang, name='hang')], timeout_s=2.0, max_error_fraction=1.0)\n"
        "started = time.monotonic()\n"
        "pipeline.score(batch)\n"
        "print(round(time.monotonic() - started, 1), pipeline.errors, flush=True)\n"
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seconds, errors = proc.stdout.split()
    assert int(errors) == 32 and float(seconds) < 4.0  # 32 timeouts at once, not 32 x 2 s
    assert time.monotonic() - started < 30  # and the process exited with 32 threads still asleep


def test_an_async_reward_that_blocks_its_event_loop_times_out(caplog):
    async def blocking(completion, row):
        time.sleep(4)  # blocks the loop: asyncio.wait_for can never fire
        return 1.0

    batch = make_batch([["a", "b"]])
    pipeline = RewardPipeline([RewardSpec(function=blocking, name="blocking")], timeout_s=1.0, max_error_fraction=1.0)
    started = time.monotonic()
    pipeline.score(batch)
    assert time.monotonic() - started < 3.5 and pipeline.errors == 2
    assert "blocked its event loop" in caplog.text


def test_token_level_nan_rewards_are_failures_and_nan_metrics_are_written_as_null(tmp_path, caplog):
    from types import SimpleNamespace

    from rltune.metrics import MetricsLogger

    class NaNTokens:
        token_level = True

        def __call__(self, completion, row):
            return [float("nan")] * len(completion.token_ids)

    batch = make_batch([["ab", "cd"]])
    pipeline = RewardPipeline([RewardSpec(function=NaNTokens(), name="nan_tokens")])
    pipeline.score(batch)
    assert pipeline.errors == 2 and batch.reward_components["nan_tokens"].tolist() == [0.0, 0.0]
    accelerator = SimpleNamespace(is_main_process=True, num_processes=1, trackers=[])
    cfg = SimpleNamespace(train=SimpleNamespace(report_to=[], steps=3, log_completions_max=1))
    logger = MetricsLogger(tmp_path, accelerator, cfg)
    logger.log(1, {"loss": float("nan"), "kl": 0.5})
    logger.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "kl": 0.5, "loss": None}
    assert "non-finite metrics loss=nan" in caplog.text


def _trained_checkpoints(tmp_path, demo_assets, steps=2, **train):
    trainer = Trainer(recipe(tmp_path, *demo_assets, train={"steps": steps, "save_every": 1, **train}))
    trainer.train()
    trainer.close()
    return tmp_path / "run"


def _resume(tmp_path, demo_assets, **train):
    return Trainer(recipe(tmp_path, *demo_assets, train={"steps": 3, "resume_from": "latest", **train}))


def test_changed_bytes_in_a_checkpoint_are_found_at_resume(tmp_path, demo_assets):
    run = _trained_checkpoints(tmp_path, demo_assets)
    weights = run / "checkpoint-2" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:-60] = bytes([0x3C, 0x00, 0x00, 0x00])  # a finite float32 somewhere in the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(RLTuneError, match=r"model.safetensors changed .* resume from .*checkpoint-1"):
        _resume(tmp_path, demo_assets)


def _rewrite_state(checkpoint, change):
    from rltune.checkpoint import MANIFEST, file_digests

    state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
    change(state)
    torch.save(state, checkpoint / "trainer_state.pt")
    (checkpoint / MANIFEST).write_text(json.dumps(file_digests(checkpoint)))  # damage the manifest cannot see


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(4096, 4096)), "has shape \\(4096, 4096\\)"),
        (lambda s: s.pop("rng"), "it has no rng"),
        (lambda s: s.pop("optimizer"), "it has no optimizer"),
        (lambda s: s["rng"][0].update(torch=torch.zeros(3, dtype=torch.uint8)), "RNG state cannot be restored"),
    ],
)
def test_damaged_trainer_state_is_named_not_loaded(tmp_path, demo_assets, damage, message):
    run = _trained_checkpoints(tmp_path, demo_assets, steps=1)
    _rewrite_state(run / "checkpoint-1", damage)
    with pytest.raises(RLTuneError, match=message):
        _resume(tmp_path, demo_assets)


def test_resume_applies_or_refuses_recipe_changes(tmp_path, demo_assets, caplog):
    run = _trained_checkpoints(tmp_path, demo_assets)
    with pytest.raises(RLTuneError, match="train.seed: 0 -> 5"):
        _resume(tmp_path, demo_assets, seed=5)
    trainer = Trainer(
        recipe(
            tmp_path,
            *demo_assets,
            rollout={"group_size": 2},
            train={"steps": 3, "save_every": 1, "resume_from": "latest", "lr": 1e-2},
        )
    )
    assert all(group["lr"] == pytest.approx(1e-2) for group in trainer.optimizer.param_groups)
    assert "train.lr 0.001 -> 0.01" in caplog.text and "rollout.group_size 4 -> 2" in caplog.text
    trainer.train()
    trainer.close()
    saved = yaml.safe_load((run / "checkpoint-3" / "recipe.yaml").read_text())
    assert saved["train"]["lr"] == 1e-2 and saved["rollout"]["group_size"] == 2
    assert len(trainer.last_batch) == 4 * 2  # the new group size applied


def test_a_second_run_in_the_same_output_dir_is_refused(tmp_path, demo_assets):
    import socket

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        with pytest.raises(RLTuneError, match=f"in use by another run \\(pid {holder.pid} on host"):
            Trainer(recipe(tmp_path, *demo_assets, train={"steps": 1}))
    finally:
        holder.kill()
        holder.wait()
    trainer = Trainer(recipe(tmp_path, *demo_assets, train={"steps": 1}))  # its holder died: taken over
    assert json.loads((tmp_path / "run" / ".lock").read_text())["pid"] == os.getpid()
    trainer.train()
    trainer.close()
    assert not (tmp_path / "run" / ".lock").exists()


def test_demo_refuses_hub_ids_and_writes_nothing(tmp_path):
    from conftest import run_rltune

    proc = run_rltune("demo", REPO / "recipes" / "grpo_gsm8k_qwen0.5b.yaml", cwd=tmp_path, ok=False)
    assert proc.returncode == 2 and "looks like a hub id" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_null_questions_and_prompts_over_the_context_are_refused_or_skipped(tmp_path, demo_assets):
    from rltune.config import DataConfig
    from rltune.data import PromptSource

    tokenizer = __import__("rltune.models", fromlist=["load_tokenizer"]).load_tokenizer(str(demo_assets[0]))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"question": None, "answer": "2"}) + "\n" + json.dumps({"question": "1+1=", "answer": "2"}) + "\n"
    )
    cfg = DataConfig(path=str(rows), instruction="{question}", use_chat_template=False)
    with pytest.raises(RLTuneError, match=r"row 0 \(0-based\): its question \('question'\) is null"):
        PromptSource(cfg, tokenizer)
    cfg.missing_answers = "skip"
    assert len(PromptSource(cfg, tokenizer).rows) == 1
    long = tmp_path / "long.jsonl"
    long.write_text(
        json.dumps({"question": "1+" * 5000 + "1=", "answer": "5001"})
        + "\n"
        + json.dumps({"question": "1+1=", "answer": "2"})
        + "\n"
    )
    trainer = Trainer(recipe(tmp_path, demo_assets[0], long, train={"steps": 1}))  # hf engine, 256 positions
    assert len(trainer.data.rows) == 1  # skipped (data.long_prompts=skip), never fed to the model
    trainer.close()


def test_unclear_inputs_fail_fast_with_one_line(tmp_path, demo_assets):
    from rltune.config import check_before_loading
    from rltune.errors import ConfigError

    cfg = _load(tmp_path, demo_assets)
    cfg.model.path = str(tmp_path / "no-model")
    with pytest.raises(ConfigError, match="model.path .*no-model' does not exist"):
        check_before_loading(cfg)
    cfg = _load(tmp_path, demo_assets, "data.path=./missing.jsonl")
    with pytest.raises(ConfigError, match="data.path './missing.jsonl' does not exist"):
        check_before_loading(cfg)
    (tmp_path / "a-file").write_text("")
    cfg = _load(tmp_path, demo_assets, f"train.output_dir={tmp_path / 'a-file'}")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_before_loading(cfg)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(RLTuneError, match="data file .*empty.jsonl' is empty"):
        Trainer(recipe(tmp_path, demo_assets[0], empty))
    # a typo is reported before torch is imported
    path = write_recipe(tmp_path / "typo", {"train": {"lrr": 1}})
    code = "import sys; from rltune.cli import main; rc = main(sys.argv[1:]); print(rc, 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code, "train", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["2", "False"] and "unknown key 'train.lrr' (did you mean 'lr'?)" in proc.stderr


def test_a_full_disk_is_named_with_the_space_needed(tmp_path, demo_assets, monkeypatch):
    import errno

    trainer = Trainer(recipe(tmp_path, *demo_assets, train={"steps": 1}))

    def full(*args, **kwargs):  # a full disk cannot be made here without root: torch.save reports it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(
        RLTuneError, match=r"no space left on the device of .*run while writing checkpoint-1: .* GB free"
    ):
        trainer.train()
    trainer.close()
    assert not list((tmp_path / "run").glob(".checkpoint-*"))


def test_truncated_pairs_file_is_named(tmp_path):
    from datasets import Dataset

    from rltune.preference import load_pairs

    Dataset.from_list([{"prompt": "p", "chosen": "c", "rejected": "r"}] * 50).save_to_disk(tmp_path / "pairs")
    arrow = next((tmp_path / "pairs").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    with pytest.raises(RLTuneError, match="pairs dataset at .* is damaged"):
        load_pairs(str(tmp_path / "pairs"))


def test_env_references_resolve_at_load_and_are_saved_unresolved(tmp_path, demo_assets, monkeypatch):
    from rltune.config import recipe_yaml
    from rltune.errors import ConfigError

    monkeypatch.setenv("RLTUNE_TEST_SECRET", "s3cr3t-value")
    rewards = [{"name": "plugins.my_rewards:Contains", "kwargs": {"needle": "${env:RLTUNE_TEST_SECRET}"}}]
    path = write_recipe(
        tmp_path, {"model": {"path": str(demo_assets[0])}, "data": {"path": str(demo_assets[1])}, "rewards": rewards}
    )
    from rltune.config import load_recipe

    cfg = load_recipe(path)
    assert cfg.rewards[0].kwargs["needle"] == "s3cr3t-value"
    assert "s3cr3t-value" not in recipe_yaml(cfg) and "${env:RLTUNE_TEST_SECRET}" in recipe_yaml(cfg)
    monkeypatch.delenv("RLTUNE_TEST_SECRET")
    with pytest.raises(ConfigError, match="rewards.0.kwargs.needle names the environment variable RLTUNE_TEST_SECRET"):
        load_recipe(path)


def test_vllm_server_api_key_comes_from_the_environment_only(monkeypatch):
    from rltune.config import VLLMServerConfig
    from rltune.rollout.vllm_server import VLLMServerEngine

    monkeypatch.delenv("RLTUNE_TEST_KEY", raising=False)
    with pytest.raises(RLTuneError, match="api_key_env names RLTUNE_TEST_KEY, which is not set"):
        VLLMServerEngine(VLLMServerConfig(url="http://127.0.0.1:9", api_key_env="RLTUNE_TEST_KEY", connect_timeout_s=1))


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    "engine, signum",
    [
        pytest.param("hf", signal.SIGTERM, marks=pytest.mark.heavy),  # the same handler as SIGINT's
        ("hf", signal.SIGINT),
        # the handling is the engine's to survive
        pytest.param("vllm", signal.SIGINT, marks=[pytest.mark.slow, pytest.mark.heavy]),
    ],
)
def test_a_signal_checkpoints_the_step_in_progress_and_resume_is_exact(tmp_path, demo_assets, engine, signum):
    from safetensors.torch import load_file

    base = {
        "model": {"path": str(demo_assets[0])},
        "data": {"path": str(demo_assets[1])},
        "rollout": {"engine": engine, "group_size": 4, "vllm": {"max_model_len": 64}},
        "train": {"steps": 6, "prompts_per_step": 4, "micro_batch_size": 16, "progress_bar": False, "report_to": []},
    }

    def command(out, *extra):
        base["train"]["output_dir"] = str(out)
        return [sys.executable, "-m", "rltune", "train", str(write_recipe(tmp_path / out.name, base)), *extra]

    full = tmp_path / "full"
    subprocess.run(command(full), check=True, capture_output=True, timeout=600)
    run = tmp_path / "stopped"
    proc = subprocess.Popen(command(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (run / "metrics.jsonl").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) >= 2)
    children = _children(proc.pid)  # the grader's worker processes
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and err.count(f"stopped by {signal.Signals(signum).name} after step") == 1
    stopped_at = int(err.split("after step ")[1].split(",")[0])
    assert 2 <= stopped_at < 6 and resolve_checkpoint("latest", run).name == f"checkpoint-{stopped_at}"
    wait_for(lambda: not any(_alive(pid) for pid in children), timeout=10)  # no orphans
    subprocess.run(command(run, "train.resume_from=latest"), check=True, capture_output=True, timeout=600)
    expected = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(expected, got):
        for key in ("reward/total", "loss", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)
    want = load_file(full / "checkpoint-6" / "model.safetensors")
    have = load_file(run / "checkpoint-6" / "model.safetensors")
    assert all(torch.equal(want[k], have[k]) for k in want)


def test_a_step_that_cannot_finish_in_the_grace_period_exits_without_a_checkpoint(tmp_path, demo_assets):
    recipe_path = write_recipe(
        tmp_path,
        {
            "model": {"path": str(demo_assets[0])},
            "data": {"path": str(demo_assets[1])},
            "rollout": {"engine": "hf", "group_size": 2},
            "rewards": [{"name": "plugins.my_rewards:sleeps_10s"}],
            "reward_options": {"timeout_s": 120},
            "train": {"steps": 3, "prompts_per_step": 2, "save_on_signal_s": 1, "output_dir": str(tmp_path / "run")},
        },
    )
    mark = tmp_path / "reward-started"
    env = {
        **os.environ,
        "RLTUNE_TEST_MARK": str(mark),
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "rltune", "train", str(recipe_path)]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    wait_for(mark.exists, timeout=120)  # the first step is in its 10 s rewards
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and time.monotonic() - started < 6, err[-3000:]
    assert "did not end in 1s: exiting without a checkpoint" in err and "Traceback" not in err
    assert list_checkpoints(tmp_path / "run") == []


def test_settings_newer_than_the_checkpoint_are_not_changes():
    """A checkpoint written before a setting existed (its recipe.yaml lacks the key) resumes: the new
    setting's default keeps the old behaviour. Keys the saved recipe has are still compared."""
    from rltune.checkpoint import recipe_changes

    saved = {"train": {"seed": 0, "lr": 1e-3}}
    current = {"train": {"seed": 0, "lr": 1e-3, "async_steps": 0}}
    assert recipe_changes(saved, current) == []
    assert recipe_changes(saved, {"train": {"seed": 1, "lr": 1e-3, "async_steps": 0}}) == [("train.seed", 0, 1)]
