"""FSDP2 on two CPU processes (gloo), launched as a user launches it:
`accelerate launch --config_file recipes/accelerate/fsdp2_cpu_2proc.yaml -m rltune train RECIPE`.

Each run's global batch is 8 prompts (8 on one process, 4 on each of two), so the samples are the same
(per-prompt seeds) and, with one mini-batch per step, so is every update up to float summation order. Each
process holds half of the weights and of the optimizer state (read from its local shards)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import accelerate_launch, deep_merge, run_rltune, two_machines, write_recipe

pytestmark = pytest.mark.slow

FSDP2 = "fsdp2_cpu_2proc"
DDP = "cpu_2proc"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
BASE = {
    "rollout": {"engine": "hf"},
    "algorithm": {"mini_batches": 1},
    # a broken collective (a mutant) fails within 2 minutes instead of hanging
    "train": {
        "steps": 3,
        "save_every": 1,
        "keep_checkpoints": 3,
        "progress_bar": False,
        "report_to": [],
        "distributed_timeout_s": 120,
    },
}


def recipe_args(tmp_path: Path, name: str, assets, per_process: int, sections: dict | None = None) -> list[str]:
    """`-m rltune train RECIPE`: the demo recipe (BASE, then `sections`) writing into tmp_path/name."""
    model_dir, data_file = assets
    recipe = deep_merge(
        {
            "model": {"path": str(model_dir)},
            "data": {"path": str(data_file)},
            "train": {"output_dir": str(tmp_path / name), "prompts_per_step": per_process},
        },
        deep_merge(json.loads(json.dumps(BASE)), sections or {}),
    )
    return ["-m", "rltune", "train", str(write_recipe(tmp_path / f"{name}-recipe", recipe))]


def train(tmp_path: Path, name: str, launch: str | None, assets, sections: dict | None = None):
    """`rltune train` of the demo recipe into tmp_path/name: on one process when `launch` is None, else
    through `accelerate launch` with recipes/accelerate/LAUNCH.yaml (2 processes); 8 prompts a step."""
    args = recipe_args(tmp_path, name, assets, 8 if launch is None else 4, sections)
    cmd = [sys.executable, *args] if launch is None else accelerate_launch(launch, *args)
    proc = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp_path / name, proc


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(out: Path, step: int, file: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(out / f"checkpoint-{step}" / file)


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def assert_same_curve(one: list[dict], two: list[dict], keys=("loss", "grad_norm")) -> None:
    assert [m["step"] for m in one] == [m["step"] for m in two]
    for a, b in zip(one, two):
        assert a["reward/total"] == pytest.approx(b["reward/total"], abs=1e-6)  # the same samples
        assert a["completion/length_mean"] == pytest.approx(b["completion/length_mean"], abs=1e-6)
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    assert len({round(m["loss"], 4) for m in one}) > 1  # a curve, not a constant


def test_fsdp2_follows_one_process_with_a_moving_kl_anchor_and_recompute_then_resumes_bit_exactly(
    tmp_path, demo_assets
):
    """The hf engine (decoding in lockstep: every forward gathers sharded layers), kl_coef > 0 with the EMA
    anchor (the reference is whole on every process), recomputed old logprobs with a TIS correction."""
    sections = {
        "algorithm": {
            "kl_coef": 0.05,
            "kl_anchor": "ema",
            "old_logprobs": "recompute",
            "is_correction": "tis",
        }
    }
    one, _ = train(tmp_path, "one", None, demo_assets, sections)
    fsdp, proc = train(tmp_path, "fsdp", FSDP2, demo_assets, sections)
    other_seed, _ = train(tmp_path, "seed1", None, demo_assets, deep_merge({"train": {"seed": 1}}, sections))
    assert "FSDP2: weights, gradients and optimizer state sharded" in proc.stderr
    assert_same_curve(metrics(one), metrics(fsdp), keys=("loss", "grad_norm", "is/weight_mean"))
    # The logged kl is each process's token mean, averaged over processes: not the global token mean when the
    # processes' token counts differ, so it agrees only roughly (0.5% at step 2 on an AMD EPYC machine, 2026-12-02;
    # it had agreed to 1e-4 on the earlier machine). The loss, which holds the KL term, agrees to 1e-4 above.
    for a, b in zip(metrics(one), metrics(fsdp)):
        assert a["kl"] == pytest.approx(b["kl"], rel=0.02, abs=1e-6)
    assert metrics(one)[0]["kl"] == 0.0 < metrics(one)[-1]["kl"]  # the policy starts at its reference
    for m in metrics(fsdp):  # each process holds half, read from its own shards
        assert m["memory/params_held"] == pytest.approx(0.5, abs=0.01)
        assert m["memory/optimizer_state_held"] == pytest.approx(0.5, abs=0.01)
        assert m["memory/peak_rss_gib_max"] > 0.1
    assert metrics(one)[-1]["memory/params_held"] == metrics(one)[-1]["memory/optimizer_state_held"] == 1.0
    # final weights: as the one-process run's up to float32 rounding, far from another seed's
    final = {name: weights(out, 3) for name, out in (("one", one), ("fsdp", fsdp), ("seed1", other_seed))}
    assert max_diff(final["one"], final["fsdp"]) < 5e-5
    assert max_diff(final["one"], final["seed1"]) > 100 * max_diff(final["one"], final["fsdp"])

    # exact resume under FSDP2: from the first checkpoint, the same final weights bit for bit
    from_first = deep_merge({"train": {"resume_from": str(fsdp / "checkpoint-1")}}, sections)
    resumed, _ = train(tmp_path, "resumed", FSDP2, demo_assets, from_first)
    assert max_diff(final["fsdp"], weights(resumed, 3)) == 0.0
    assert metrics(resumed)[-1]["loss"] == metrics(fsdp)[-1]["loss"]


@pytest.mark.heavy
def test_fsdp2_with_vllm_syncs_gathered_weights_and_its_checkpoint_exports_and_evaluates(tmp_path, demo_assets):
    """The vLLM engine of each process receives the gathered full weights after every update: the sync
    check (train.sync_check, on) compares its logprobs with the trainer's every step. The checkpoint is a
    plain HF folder that `from_pretrained`, `rltune export` and `rltune eval` take."""
    from transformers import AutoModelForCausalLM

    vllm = {"rollout": {"engine": "vllm"}}
    one, _ = train(tmp_path, "one", None, demo_assets, vllm)
    fsdp, _ = train(tmp_path, "fsdp", FSDP2, demo_assets, vllm)
    assert_same_curve(metrics(one), metrics(fsdp))
    for m in metrics(fsdp):  # a stale or partial sync would fail the run; here it is measured within rounding
        assert abs(m["mismatch/log_ratio_abs_mean"]) < 1e-4
    assert max_diff(weights(one, 3), weights(fsdp, 3)) < 5e-5
    model = AutoModelForCausalLM.from_pretrained(fsdp / "checkpoint-3")
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)  # tied, written once
    run_rltune("export", fsdp / "checkpoint-3", tmp_path / "exported", cwd=tmp_path)
    assert max_diff(weights(fsdp, 3), load_file(tmp_path / "exported" / "model.safetensors")) == 0.0
    _, data_file = demo_assets
    run_rltune(
        "eval", "--model", fsdp / "checkpoint-3", "--benchmarks", f"{data_file}:question:answer", "--limit", "4",
        "--n", "2", "--max-tokens", "12", "--engine", "hf", "--no-chat-template", "--out", tmp_path / "eval",
        cwd=tmp_path,
    )  # fmt: skip
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results  # a pass@1 for the arithmetic file


@pytest.mark.heavy
def test_fsdp2_lora_shards_the_base_and_the_adapters_and_follows_one_process(tmp_path, demo_assets):
    lora = {"model": {"lora": {"r": 8}}}
    one, _ = train(tmp_path, "one", None, demo_assets, lora)
    fsdp, _ = train(tmp_path, "fsdp", FSDP2, demo_assets, lora)
    assert_same_curve(metrics(one), metrics(fsdp))
    m = metrics(fsdp)[-1]  # frozen base and adapters are both sharded; only the adapters have optimizer state
    assert m["memory/params_held"] == pytest.approx(0.5, abs=0.01)
    assert m["memory/optimizer_state_held"] == pytest.approx(0.5, abs=0.01)
    adapter = "adapter/adapter_model.safetensors"
    assert max_diff(weights(one, 3, adapter), weights(fsdp, 3, adapter)) < 5e-5


@pytest.mark.heavy
def test_fsdp2_equals_data_parallel_with_dynamic_sampling_and_several_mini_batches(tmp_path, demo_assets):
    """With dynamic sampling every process samples as many rounds as the one that needs most, and keeps
    its own groups; with several mini-batches each process shuffles its own samples. Both make a
    2-process run differ from a 1-process one, but FSDP2 must still equal plain data parallelism."""
    sections = {"algorithm": {"dynamic_sampling": True, "mini_batches": 4}}
    ddp, _ = train(tmp_path, "ddp", DDP, demo_assets, sections)
    fsdp, _ = train(tmp_path, "fsdp", FSDP2, demo_assets, sections)
    assert_same_curve(metrics(ddp), metrics(fsdp))
    assert [m["dynamic_sampling/rounds"] for m in metrics(ddp)] == [m["dynamic_sampling/rounds"] for m in metrics(fsdp)]
    assert max_diff(weights(ddp, 3), weights(fsdp, 3)) < 5e-5


@pytest.mark.heavy
def test_checkpoints_resume_across_one_and_two_processes(tmp_path, demo_assets):
    """The optimizer state is saved whole, so a 2-process FSDP2 checkpoint resumes on one process and the
    reverse, continuing as the run of the other kind would up to float summation order."""
    one, _ = train(tmp_path, "one", None, demo_assets)
    fsdp, _ = train(tmp_path, "fsdp", FSDP2, demo_assets)
    to_one, _ = train(tmp_path, "to-one", None, demo_assets, {"train": {"resume_from": str(fsdp / "checkpoint-1")}})
    to_two, _ = train(tmp_path, "to-two", FSDP2, demo_assets, {"train": {"resume_from": str(one / "checkpoint-1")}})
    assert max_diff(weights(fsdp, 3), weights(to_one, 3)) < 5e-5
    assert max_diff(weights(one, 3), weights(to_two, 3)) < 5e-5


@pytest.mark.heavy
def test_a_sigkilled_rank_stops_the_run_and_the_resume_is_bit_exact(tmp_path, demo_assets):
    """SIGKILL of the second process after the first checkpoint: the launch stops (the other process does
    not hang), and resuming from the latest checkpoint ends with the uninterrupted run's weights."""
    long = {"train": {"steps": 4}}
    whole, _ = train(tmp_path, "whole", FSDP2, demo_assets, long)
    out = tmp_path / "killed"
    args = recipe_args(tmp_path, "killed", demo_assets, 4, long)
    launcher = subprocess.Popen(
        accelerate_launch(FSDP2, *args), cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 600
    while not (out / "checkpoint-1" / "manifest.json").exists():
        assert launcher.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.kill(rank_pid(launcher.pid, rank=1), signal.SIGKILL)
    launcher.wait(timeout=120)  # within the timeout: no hang
    assert launcher.returncode != 0
    resumed, _ = train(tmp_path, "killed", FSDP2, demo_assets, deep_merge(long, {"train": {"resume_from": "latest"}}))
    assert max_diff(weights(whole, 4), weights(resumed, 4)) == 0.0


def rank_pid(root: int, rank: int) -> int:
    """The process of `rank` among the descendants of `root` (torchrun gives each its RANK variable)."""
    pending = [root]
    while pending:
        pid = pending.pop()
        children = Path(f"/proc/{pid}/task/{pid}/children")
        pending += [int(c) for c in children.read_text().split()] if children.exists() else []
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + str(rank).encode() in env:
            return pid
    raise AssertionError(f"no process of rank {rank} under {root}")


def test_two_machines_over_loopback_train_as_one_machine_with_two_processes(tmp_path, demo_assets):
    one_machine, _ = train(tmp_path, "one-machine", FSDP2, demo_assets)
    machines = two_machines(FSDP2, ENV, recipe_args(tmp_path, "two-machines", demo_assets, 4), tmp_path)
    for machine in machines:
        _, stderr = machine.communicate(timeout=900)
        assert machine.returncode == 0, stderr[-4000:]
    two = tmp_path / "two-machines"
    assert_same_curve(metrics(one_machine), metrics(two))
    assert max_diff(weights(one_machine, 3), weights(two, 3)) == 0.0


def descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [int(c) for c in children.read_text().split()] if children.exists() else []
    return found + [d for child in found for d in descendants(child)]


@pytest.mark.heavy
def test_a_dead_machine_stops_the_other_within_the_timeout(tmp_path, demo_assets):
    """Machine 1 dies (its launcher and process SIGKILLed) after the first checkpoint: machine 0 stops with
    an error that names the failed exchange with the other processes, well within train.distributed_timeout_s
    plus start-up, instead of hanging."""
    sections = {"train": {"steps": 200, "distributed_timeout_s": 30}}
    machines = two_machines(FSDP2, ENV, recipe_args(tmp_path, "run", demo_assets, 4, sections), tmp_path)
    deadline = time.time() + 600
    while not (tmp_path / "run" / "checkpoint-1" / "manifest.json").exists():
        assert all(m.poll() is None for m in machines) and time.time() < deadline
        time.sleep(0.05)
    for pid in [machines[1].pid, *descendants(machines[1].pid)]:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    _, stderr = machines[0].communicate(timeout=300)
    assert machines[0].returncode != 0
    assert time.time() - killed_at < 30 + 60
    assert "rltune: error: process rank 0 of 2: an exchange with the other process (rank 1) failed" in stderr
    assert "train.resume_from=latest" in stderr
