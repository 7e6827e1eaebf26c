"""Two processes (torchrun + accelerate, gloo) on the CPU: data-parallel training, and whole groups.

Each process samples all `group_size` completions of its own prompts, so a group never straddles
two processes and group rewards always see whole groups (no gather/scatter needed)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, accelerate_launch, write_recipe

pytestmark = pytest.mark.slow


def torchrun(*args: str) -> list[str]:
    # accelerate's launcher starts several CPU processes only through MPI; torchrun sets up the same
    # environment (RANK, WORLD_SIZE, ...) that `Accelerator` reads, with the gloo backend.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


@pytest.mark.heavy  # the loss-curve test and tests/test_scale.py run 2 processes in make test
def test_two_processes_train_with_whole_groups(tmp_path, demo_assets):
    model_dir, data_file = demo_assets
    log_file = tmp_path / "groups.jsonl"
    recipe = write_recipe(
        tmp_path,
        {
            "model": {"path": str(model_dir)},
            "data": {"path": str(data_file)},
            "rollout": {"engine": "hf", "group_size": 4},
            "rewards": [{"name": "math_accuracy"}, {"name": "plugins.my_rewards:GroupSizeRecorder", "weight": 0.0}],
            "train": {
                "steps": 2,
                "prompts_per_step": 3,
                "micro_batch_size": 4,
                "output_dir": str(tmp_path / "run"),
                "progress_bar": False,
                "save_every": 1,
            },
        },
    )
    env = {
        **os.environ,
        "RLTUNE_TEST_GROUP_LOG": str(log_file),
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = torchrun("-m", "rltune", "train", str(recipe))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    calls = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert {c["rank"] for c in calls} == {0, 1}
    assert all(c["size"] == 4 for c in calls)  # every group reward call saw a whole group
    assert len(calls) == 2 * 2 * 3  # steps x processes x prompts per process
    for step in range(2):  # the two processes train on different prompts of the same step
        per_rank = {r: [c["prompt"] for c in calls if c["rank"] == r][3 * step : 3 * step + 3] for r in (0, 1)}
        assert not set(per_rank[0]) & set(per_rank[1])
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert (tmp_path / "run" / "checkpoint-2" / "trainer_state.pt").is_file()


def test_two_processes_follow_the_single_process_loss_curve(tmp_path, demo_assets):
    """The same recipe, seed and global batch (8 prompts a step) on one process and on two (`accelerate
    launch` with recipes/accelerate/cpu_2proc.yaml): the same
    samples (per-prompt seeds), rewards and, up to float summation order, losses and gradients. The rows
    carry verl's data_source, one source rare enough that some processes' batches lack it: the per-source
    rewards are the same too."""
    model_dir, demo_file = demo_assets
    data_file = tmp_path / "sourced.jsonl"
    rows = [json.loads(line) for line in demo_file.read_text().splitlines()]
    data_file.write_text(
        "".join(json.dumps({**r, "data_source": "rare" if i % 7 == 0 else "common"}) + "\n" for i, r in enumerate(rows))
    )
    runs = {}
    for procs, per_process in ((1, 8), (2, 4)):
        out = tmp_path / f"run{procs}"
        recipe = write_recipe(
            tmp_path / f"recipe{procs}",
            {
                "model": {"path": str(model_dir)},
                "data": {"path": str(data_file)},
                "rollout": {"engine": "hf", "group_size": 4},
                "algorithm": {"mini_batches": 1},
                "train": {
                    "steps": 4,
                    "prompts_per_step": per_process,
                    "micro_batch_size": 8,
                    "output_dir": str(out),
                    "progress_bar": False,
                },
            },
        )
        args = ["-m", "rltune", "train", str(recipe)]
        cmd = [sys.executable, *args] if procs == 1 else accelerate_launch("cpu_2proc", *args)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        runs[procs] = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    one, two = runs[1], runs[2]
    assert [m["step"] for m in one] == [m["step"] for m in two] == [1, 2, 3, 4]
    for a, b in zip(one, two):
        assert a["reward/total"] == pytest.approx(b["reward/total"], abs=1e-6)
        assert a["completion/length_mean"] == pytest.approx(b["completion/length_mean"], abs=1e-6)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3, abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)
        sources = sorted(k for k in a if k.startswith("reward/source/"))
        assert sources == sorted(k for k in b if k.startswith("reward/source/"))
        for key in sources:
            assert a[key] == pytest.approx(b[key], abs=1e-6)
    assert {k for m in one for k in m if k.startswith("reward/source/")} == {
        "reward/source/common",
        "reward/source/rare",
    }
    assert len({round(m["loss"], 4) for m in one}) > 1  # a curve, not a constant


def test_accelerate_cpu_launch_of_two_processes_that_starts_one_is_refused(tmp_path, demo_assets):
    """`accelerate launch --num_processes 2 --cpu` starts one process (its CPU launcher needs MPI for more):
    rltune says so and how to launch two, instead of training alone."""
    model_dir, data_file = demo_assets
    recipe = write_recipe(
        tmp_path,
        {
            "model": {"path": str(model_dir)},
            "data": {"path": str(data_file)},
            "train": {"output_dir": str(tmp_path / "run")},
        },
    )
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu"]
    proc = subprocess.run([*cmd, "-m", "rltune", "train", str(recipe)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "was asked for 2 processes and started one" in proc.stderr
    assert "recipes/accelerate/cpu_2proc.yaml" in proc.stderr
    assert not any((tmp_path / "run").glob("*"))  # nothing written
