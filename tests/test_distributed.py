"""rltune.distributed without a training run: on two real FSDP2 processes, the accelerate launch's precision
reaches the CPU FSDP2 plugin, an optimizer state saved whole loads back into each process's shards and the
logged metrics reduce over both; which failures are blamed on a lost process (the training runs:
test_scale.py)."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import accelerate_launch, free_port
from rltune.distributed import lost_process_error

SCRIPT = """
import atexit, json, sys
import torch
from accelerate.state import AcceleratorState
from torch.distributed.fsdp import fully_shard
from rltune.batch import RolloutBatch
from rltune.distributed import (
    exit_processes, full_optimizer_state, is_dtensor, is_sharded, load_optimizer_state, make_accelerator,
)
from rltune.metrics import reduce_over_processes, source_metrics

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

rank = accelerator.process_index
logged = {"kl": rank + 1.0, "clip_max": 3.0 * (rank + 1), "time/step_s": 10.0 + rank, "reward/errors": 1.0}
reduced = reduce_over_processes({**logged, "throughput/tokens_per_s": 100.0, "loss": 0.25}, accelerator)
# each process knows its own data source only; both must report both
source = ["gsm8k", "math"][rank]
row = {"data_source": source}
batch = RolloutBatch([[1], [1]], [[2], [2]], ["a", "b"], [[0.0], [0.0]], ["stop"] * 2, [0, 0], [row])
batch.rewards = torch.tensor([1.0, 0.0] if rank == 0 else [1.0, 1.0])
by_source = source_metrics(batch, "data_source", accelerator)
report = {
    "rank": accelerator.process_index,
    "param_dtype": str(getattr(policy, "param_dtype", None)),
    "sharded": is_sharded(sharded),
    "saved_whole": all(not is_dtensor(t) and torch.equal(t, e) for t, e in zip(whole, expected)),
    "loaded_sharded": all(is_dtensor(s["exp_avg"]) for s in resumed_opt.state.values()),
    "resumed_as_reference": all(torch.allclose(a, p, atol=1e-6) for a, p in zip(after, reference.parameters())),
    "reduced": reduced,
    "by_source": by_source,
}
# a file each: the two processes' prints share one stdout and can interleave within a line
with open(f"report{rank}.json", "w") as out:
    json.dump(report, out)
atexit.register(lambda: open(f"exited{rank}", "w").close())
exit_processes(0)
"""


def test_sharded_optimizer_state_saves_whole_and_loads_into_shards_and_precision_reaches_fsdp2(tmp_path):
    precision = "bf16"
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    cmd = accelerate_launch("fsdp2_cpu_2proc", "--mixed_precision", precision, str(script), precision)
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # exit_processes skipped the interpreter's teardown, not the exit handlers
    assert all((tmp_path / f"exited{rank}").exists() for rank in (0, 1))
    reports = [json.loads((tmp_path / f"report{rank}.json").read_text()) for rank in (0, 1)]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    for report in reports:
        assert report["param_dtype"] == "torch.bfloat16"
        assert report["sharded"] and report["saved_whole"] and report["loaded_sharded"]
        assert report["resumed_as_reference"]
        # the logged numbers over both processes: means, maxima and wall times, sums of counts and loss shares
        assert report["reduced"] == {
            "kl": 1.5, "clip_max": 6.0, "time/step_s": 11.0, "reward/errors": 2.0, "throughput/tokens_per_s": 200.0,
            "loss": 0.5,
        }  # fmt: skip
        assert report["by_source"] == {"reward/source/gsm8k": 0.5, "reward/source/math": 1.0}


def test_a_process_exits_with_its_code_after_its_exit_handlers_with_or_without_a_group(tmp_path):
    """With a process group exit_processes leaves by os._exit, skipping the interpreter's teardown (where
    gloo's threads can abort or hang the process), without one by sys.exit: either way the exit code, the
    exit handlers and what was printed survive."""
    script = tmp_path / "exit.py"
    script.write_text(
        "import atexit, sys, torch\n"
        "from rltune.distributed import exit_processes\n"
        "if sys.argv[1] == 'group':\n"
        "    torch.distributed.init_process_group('gloo', init_method=sys.argv[2], rank=0, world_size=1)\n"
        "atexit.register(lambda: print('handler ran'))\n"
        "class Global:\n"
        "    def __del__(self):\n"
        "        print('torn down')\n"
        "kept = Global()\n"
        "print('unflushed', end='')\n"
        "exit_processes(3)\n"
    )
    for group, teardown in (("group", ""), ("none", "torn down\n")):  # the interpreter's teardown: only without
        cmd = [sys.executable, str(script), group, f"tcp://127.0.0.1:{free_port()}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 3, proc.stderr[-2000:]
        assert proc.stdout == "unflushedhandler ran\n" + teardown


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


def test_a_cpu_launch_asked_for_two_processes_that_starts_one_is_refused(tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts one process without MPI: refused, with the launch
    that works; asked for one, it runs."""
    script = tmp_path / "one.py"
    script.write_text("from rltune.distributed import make_accelerator\nprint(make_accelerator('no').num_processes)\n")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_machines", "1", "--mixed_precision"]
    for processes, refused in (("2", True), ("1", False)):
        cmd = [*launch, "no", "--dynamo_backend", "no", "--num_processes", processes, str(script)]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        if refused:
            assert proc.returncode != 0 and "was asked for 2 processes and started one" in proc.stderr
            assert "recipes/accelerate/cpu_2proc.yaml" in proc.stderr
        else:
            assert proc.returncode == 0 and proc.stdout.strip() == "1", proc.stderr[-2000:]
