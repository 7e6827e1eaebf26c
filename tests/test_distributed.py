"""rltune.distributed without a training run: on two real FSDP2 processes, the accelerate launch's precision
reaches the CPU FSDP2 plugin and an optimizer state saved whole loads back into each process's shards; which
failures are blamed on a lost process (the training runs: test_scale.py)."""

import json
import subprocess

import pytest
import torch

from conftest import accelerate_launch
from rltune.distributed import lost_process_error

SCRIPT = """
import json, sys
import torch
from accelerate.state import AcceleratorState
from torch.distributed.fsdp import fully_shard
from rltune.distributed import full_optimizer_state, is_dtensor, is_sharded, load_optimizer_state, make_accelerator

accelerator = make_accelerator(sys.argv[1])
policy = AcceleratorState().fsdp_plugin.mixed_precision_policy


def model_and_optimizer(sharded):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 2))
    if sharded:
        for layer in model:
            fully_shard(layer)
        fully_shard(model)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1)


def step(model, optimizer):
    model(torch.arange(8.0).view(2, 4)).square().sum().backward()
    optimizer.step()
    optimizer.zero_grad()


reference, reference_opt = model_and_optimizer(sharded=False)
sharded, sharded_opt = model_and_optimizer(sharded=True)
step(reference, reference_opt)
step(sharded, sharded_opt)
saved = full_optimizer_state(sharded_opt)
whole = [s["exp_avg_sq"] for s in saved["state"].values()]
expected = [reference_opt.state[p]["exp_avg_sq"].clone() for p in reference.parameters()]
resumed_opt = torch.optim.AdamW(sharded.parameters(), lr=0.1)
load_optimizer_state(resumed_opt, saved)
step(reference, reference_opt)
step(sharded, resumed_opt)
after = [p.full_tensor() for p in sharded.parameters()]
print(json.dumps({
    "rank": accelerator.process_index,
    "param_dtype": str(getattr(policy, "param_dtype", None)),
    "sharded": is_sharded(sharded),
    "saved_whole": all(not is_dtensor(t) and torch.equal(t, e) for t, e in zip(whole, expected)),
    "loaded_sharded": all(is_dtensor(s["exp_avg"]) for s in resumed_opt.state.values()),
    "resumed_as_reference": all(torch.allclose(a, p, atol=1e-6) for a, p in zip(after, reference.parameters())),
}))
"""


def test_sharded_optimizer_state_saves_whole_and_loads_into_shards_and_precision_reaches_fsdp2(tmp_path):
    precision = "bf16"
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    cmd = accelerate_launch("fsdp2_cpu_2proc", "--mixed_precision", precision, str(script), precision)
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    for report in reports:
        assert report["param_dtype"] == "torch.bfloat16"
        assert report["sharded"] and report["saved_whole"] and report["loaded_sharded"]
        assert report["resumed_as_reference"]


@pytest.mark.parametrize(
    "exc",
    [
        torch.distributed.DistBackendError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer"),
        RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:589] Read error: Connection reset by peer"),
        RuntimeError("Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7) ran for 600000 ms"),
    ],
)
def test_a_collective_failed_by_a_lost_process_says_which_and_how_to_resume(exc):
    error = lost_process_error(exc, rank=1, world_size=2, timeout_s=600)
    assert "process rank 1 of 2: an exchange with the other process (rank 0) failed" in str(error)
    assert "train.distributed_timeout_s=600s" in str(error) and "train.resume_from=latest" in str(error)
    assert "another process" in str(lost_process_error(exc, rank=0, world_size=4, timeout_s=60))
    assert lost_process_error(exc, rank=0, world_size=1, timeout_s=60) is None  # nobody else to lose


def test_other_errors_are_not_blamed_on_another_process():
    for exc in (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), ValueError("Connection"), KeyError("x")):
        assert lost_process_error(exc, rank=0, world_size=2, timeout_s=60) is None
