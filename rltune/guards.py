"""Guards that stop a diverged run instead of letting it train on, or save, garbage.

- `weight_norm`: the global norm of the parameters; not finite means NaN/inf weights (the update stops
  the run at once: every later step and checkpoint would carry them).
- `CollapseGuard`: the policy's sampled-token entropy reached the uniform maximum (ln vocabulary) while
  it started well below: the model has collapsed to noise (e.g. a far too large learning rate).
- `check_optimizer_state`: every optimizer state tensor has its parameter's shape before it is loaded
  (a damaged `trainer_state.pt` would otherwise allocate without bound or crash in a fused kernel).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rltune.distributed import is_dtensor
from rltune.errors import RLTuneError

# Entropy at or above this share of ln(vocab size) is a uniform policy; a run must start below START_SHARE
# for the guard to apply (an untrained model is near uniform from the start).
COLLAPSE_SHARE = 0.9
START_SHARE = 0.7


def weight_norm(parameters) -> float:
    """The global L2 norm of `parameters` in float64 terms (inf or NaN if any weight is). FSDP2 shards: the
    norm over all processes' shards (a collective: every process must call it)."""
    params = [p.detach() for p in parameters]
    sharded = any(is_dtensor(p) for p in params)
    local = [p.to_local() if is_dtensor(p) else p for p in params]
    norms = [torch.linalg.vector_norm(p, dtype=torch.float32) for p in local if p.numel()]
    squares = torch.stack(norms).double().square().sum() if norms else torch.zeros((), dtype=torch.float64)
    if sharded:  # add up the other processes' shards
        torch.distributed.all_reduce(squares)
    return float(squares.sqrt())


class CollapseGuard:
    def __init__(self, vocab_size: int, steps_in_a_row: int):
        self.uniform = math.log(vocab_size)
        self.steps_in_a_row = steps_in_a_row
        self.started_below: bool | None = None
        self.collapsed_steps = 0

    def check(self, step: int, entropy: float | None) -> None:
        """Stop when the entropy sat at the uniform maximum for `steps_in_a_row` steps of a run that
        started well below it."""
        if entropy is None:
            return
        if self.started_below is None:
            self.started_below = entropy < START_SHARE * self.uniform
        collapsed = self.started_below and entropy >= COLLAPSE_SHARE * self.uniform
        self.collapsed_steps = self.collapsed_steps + 1 if collapsed else 0
        if self.collapsed_steps >= self.steps_in_a_row:
            raise RLTuneError(
                f"the policy collapsed at step {step}: its sampled-token entropy {entropy:.3f} is at the uniform "
                f"maximum ln(vocab) = {self.uniform:.3f} for {self.collapsed_steps} steps (it started below "
                f"{START_SHARE:.0%} of it). The updates are far too large: lower train.lr (or raise "
                "train.warmup_steps) and restart from the last good checkpoint (train.resume_from)"
            )


def check_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any], source: str) -> None:
    """Refuse an optimizer state whose groups or tensors do not fit the parameters it would be loaded into."""
    groups = state.get("param_groups")
    saved = state.get("state")
    if not isinstance(groups, list) or not isinstance(saved, dict):
        raise RLTuneError(
            f"{source}: the optimizer state is damaged (no param_groups/state); resume from another checkpoint"
        )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_ids = [i for group in groups for i in group.get("params", [])]
    if len(saved_ids) != len(params):
        raise RLTuneError(
            f"{source}: the optimizer state is for {len(saved_ids)} parameters, the model has {len(params)} "
            "(another model or LoRA setting?); resume from a checkpoint of this recipe"
        )
    for index, param in zip(saved_ids, params):
        for name, value in (saved.get(index) or {}).items():
            if not isinstance(value, torch.Tensor) or value.dim() == 0:
                continue  # step counters
            if value.shape != param.shape or not value.dtype.is_floating_point:
                raise RLTuneError(
                    f"{source}: optimizer state {name!r} of parameter {index} has shape {tuple(value.shape)} and "
                    f"dtype {value.dtype}, the parameter {tuple(param.shape)}: the file is damaged; resume from "
                    "the previous checkpoint"
                )
