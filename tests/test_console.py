"""The console: the preflight block's derived shapes (the quiet run end to end: test_day_one.py)."""

from rltune.config import load_recipe
from rltune.console import preflight


def test_the_preflight_block_states_each_derived_shape():
    plain = preflight(load_recipe("demo_cpu"), 1, 2_500_000, "vllm")
    assert "(2.5M parameters, float32)" in plain and "processes    1 (one process); rollout engine vllm\n" in plain
    assert "completions  8 per prompt = 256 per step\n" in plain and "keep_per_group" not in plain
    assert "(constant), output runs/demo/grpo" in plain and "warmup " not in plain
    overrides = [
        "train.async_steps=1", "algorithm.keep_per_group=2", "train.micro_batch_size=4", "algorithm.mini_batches=2",
        "algorithm.epochs=2", "train.prompts_per_step=5", "rollout.group_size=6", "train.warmup_steps=4",
        "train.lr_scheduler=linear", "train.report_to=[tensorboard]",
    ]  # fmt: skip
    lines = preflight(load_recipe("demo_cpu", overrides), 2, 10**6, "hf", "FSDP2").splitlines()
    assert lines[2] == (
        "  processes    2 (FSDP2); rollout engine hf, asynchronous: batches sampled 1 update(s) behind "
        "(train.async_steps)"
    )
    assert lines[3] == "  prompts      5 per process (train.prompts_per_step) x 2 = 10 per step"
    assert lines[4] == "  completions  6 per prompt = 60 per step, 2 per prompt trained (algorithm.keep_per_group)"
    # 5 prompts x 2 kept = 10 sequences per process: mini-batches of 5, micro-batches of 4 -> 2 per mini-batch
    assert lines[5] == (
        "  updates      2 epoch(s) x 2 mini-batch(es) of 5 sequences per process = 4 optimizer steps per RL step"
    )
    assert lines[6] == "  micro-batch  4 sequences (train.micro_batch_size), 2 per mini-batch"
    assert lines[7].startswith("  steps        ") and "(linear, warmup 4 steps), output " in lines[7]
    assert lines[7].endswith(", trackers tensorboard")
