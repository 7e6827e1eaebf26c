"""Processes and sharded weights: the accelerator rltune trains with, and the few steps that differ when
FSDP2 shards the policy over the processes.

On a machine without CUDA accelerate sets up several processes only as plain data parallelism (gloo),
even when `accelerate launch` was given an FSDP config: its FSDP type is reserved for GPUs. PyTorch's
FSDP2 (`fully_shard`) itself runs on CPU tensors over gloo, so for an FSDP2 launch on the CPU
`make_accelerator` switches accelerate's state to its FSDP type with accelerate's own FSDP2 plugin (built
from the launch's settings, as on a GPU): `prepare`, `get_state_dict` and the rest then run the same code
as on a GPU node, which is what lets that path be tested here."""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, InitProcessGroupKwargs

from rltune.errors import ConfigError, RLTuneError


def make_accelerator(mixed_precision: str, timeout_s: float | None = None, **options: Any) -> Accelerator:
    """The run's Accelerator. `timeout_s`: how long a collective waits for the other processes (a dead one
    makes the rest fail after it instead of hanging); `options`: further Accelerator arguments."""
    cpu = not torch.cuda.is_available()
    handlers = [InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=timeout_s))] if timeout_s else []
    # cpu=True on a machine without CUDA: accelerate only sets up multi-process CPU training (gloo) when
    # told so; otherwise each launched process would silently train alone.
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=cpu, kwargs_handlers=handlers, **options)
    if cpu and accelerator.distributed_type == DistributedType.MULTI_CPU and _launched_with_fsdp():
        _shard_on_cpu(accelerator)
    asked = _processes_asked_of_the_launcher()
    if accelerator.num_processes == 1 and asked > 1:
        raise ConfigError(
            f"`accelerate launch --cpu` was asked for {asked} processes and started one: its CPU launcher starts "
            "several only through MPI. Launch with --config_file recipes/accelerate/cpu_2proc.yaml (gloo, no MPI), "
            f"or torchrun --nproc_per_node {asked} -m rltune train RECIPE"
        )
    return accelerator


def _processes_asked_of_the_launcher() -> int:
    """--num_processes of the `accelerate launch --cpu` that started this process (it passes the number on
    to nobody when it starts one process), else 1."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() != "true" or "WORLD_SIZE" in os.environ:
        return 1
    try:
        args = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return 1
    for flag in ("--num_processes", "--num-processes"):
        if flag in args[:-1] and args[args.index(flag) + 1].isdigit():
            return int(args[args.index(flag) + 1])
    return 1


def _launched_with_fsdp() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def _shard_on_cpu(accelerator: Accelerator) -> None:
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()  # the launch's fsdp_config, from the environment
    if plugin.fsdp_version != 2:
        raise ConfigError(
            f"FSDP on the CPU runs with FSDP2 only (fsdp_version: 2 in the accelerate config; it has "
            f"{plugin.fsdp_version}): see recipes/accelerate/fsdp2_cpu_2proc.yaml"
        )
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    state = AcceleratorState()
    state.fsdp_plugin = plugin
    state.distributed_type = PartialState().distributed_type = DistributedType.FSDP


def is_sharded(module: torch.nn.Module) -> bool:
    """Whether FSDP2 holds `module`'s parameters as shards (DTensors) over several processes."""
    return any(is_dtensor(p) for p in module.parameters())


def is_dtensor(tensor: torch.Tensor) -> bool:
    return hasattr(tensor, "full_tensor")


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP2 shard (a collective: every process must call it), else the tensor."""
    return tensor.full_tensor() if is_dtensor(tensor) else tensor


def any_process(flag: bool) -> bool:
    """`flag` of this process or-ed over all processes (a collective); the flag itself with one process."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return flag
    device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def exit_processes(code: int = 0) -> NoReturn:
    """Exit with `code`: the way to end a script launched on several processes, once its last collective has
    returned.

    A gloo process group cannot be taken down safely at the end of a run. Its destructor joins its worker
    threads while holding the GIL, and a worker still freeing a finished collective's tensors waits for the
    GIL: a deadlock, seen when DDP's reducer drops the group. FSDP2's DTensor caches keep the group alive
    past `destroy_process_group`, and its threads torn down with the interpreter can abort a run that
    succeeded (SIGABRT, "terminate called without an active exception"). So with a process group this
    waits for the program's own threads, runs the exit handlers (log files, coverage) and leaves with
    `os._exit`, the group still up. Without one it is `sys.exit(code)`."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        sys.exit(code)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # no public call runs them; os._exit alone would skip them
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """`optimizer.state_dict()` with each sharded tensor gathered whole (a collective): the same file as a
    one-process run writes, so a checkpoint resumes on any number of processes."""
    state = optimizer.state_dict()
    state["state"] = {index: {k: full_tensor(v) for k, v in s.items()} for index, s in state["state"].items()}
    return state


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a whole (`full_optimizer_state`) optimizer state; each sharded parameter takes its own shard of
    its tensors (a collective)."""
    from torch.distributed.tensor import distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_ids = [i for group in state["param_groups"] for i in group["params"]]
    for index, param in zip(saved_ids, params, strict=True):
        if not is_dtensor(param):
            continue
        for key, value in state["state"].get(index, {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                state["state"][index][key] = distribute_tensor(
                    value.to(param.dtype), param.device_mesh, param.placements
                )
    optimizer.load_state_dict(state)


def parallel_mode(accelerator: Accelerator) -> str:
    """How the processes share the training, in words, for the run's preflight block."""
    kind = accelerator.distributed_type
    if accelerator.is_fsdp2:
        return "FSDP2: weights, gradients and optimizer state sharded over the processes"
    if kind == DistributedType.FSDP:
        return "FSDP1: weights, gradients and optimizer state sharded over the processes"
    if kind == DistributedType.DEEPSPEED:
        return f"DeepSpeed ZeRO-{accelerator.state.deepspeed_plugin.zero_stage}"
    return "data parallel: each process holds the whole model" if accelerator.num_processes > 1 else "one process"


def held_share(tensors) -> float:
    """The share of the elements of `tensors` held by this process: 1 unless sharded, about 1/N under
    FSDP2 over N processes."""
    tensors = list(tensors)
    total = sum(t.numel() for t in tensors)
    local = sum((t.to_local() if is_dtensor(t) else t).numel() for t in tensors)
    return local / total if total else 1.0


def memory_metrics(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """What this process holds of the weights and the optimizer state, and its peak resident memory."""
    import resource

    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.dim()]
    return {
        "memory/params_held": held_share(model.parameters()),
        "memory/optimizer_state_held": held_share(state),
        "memory/peak_rss_gib_max": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB on Linux
    }


def without_tied_copies(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A gathered state dict less the second names of tied parameters (an LM head sharing the embedding's
    weights): gathering makes them separate tensors, which `save_pretrained` would then write twice."""
    seen: set[int] = set()
    tied: set[str] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            tied.add(name)
        seen.add(id(param))
    return {name: tensor for name, tensor in state.items() if name not in tied}


@contextlib.contextmanager
def loading_whole():
    """Load a model whole on every process. Under `fsdp_cpu_ram_efficient_loading` transformers fills in
    the weights on the first process only, leaving the others' for FSDP to broadcast at `prepare`; a model
    FSDP never prepares (the frozen reference) would keep random weights there."""
    saved = os.environ.pop("FSDP_CPU_RAM_EFFICIENT_LOADING", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = saved


def lost_process_error(exc: BaseException, rank: int, world_size: int, timeout_s: float) -> RLTuneError | None:
    """The error to stop with when a collective failed because another process is gone (gloo: "Connection
    reset by peer", NCCL: a watchdog timeout); None for any other exception."""
    text = str(exc)
    lost = isinstance(exc, torch.distributed.DistError) or (
        isinstance(exc, RuntimeError) and any(s in text for s in ("gloo", "NCCL", "Connection", "timed out"))
    )
    if not lost or world_size < 2:
        return None
    others = f"the other process (rank {1 - rank})" if world_size == 2 else "another process"
    detail = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return RLTuneError(
        f"process rank {rank} of {world_size}: an exchange with {others} failed ({detail}): it died, was killed or "
        f"stalled past train.distributed_timeout_s={timeout_s:g}s; its own log names the cause. Once every "
        "process can run again, resume with train.resume_from=latest"
    )
