"""Metric sinks: one line per step on the console, metrics.jsonl, and TensorBoard."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

log = logging.getLogger("rltune")

# Shown on the console line, in this order, when present.
CONSOLE_KEYS = (
    "reward/total",
    "reward/math_accuracy",
    "kl",
    "entropy",
    "clip_fraction",
    "completion/length_mean",
    "time/step_s",
    "throughput/gen_tokens_per_s",
)


def rollout_metrics(batch, reward_errors: int) -> dict[str, float]:
    """Rewards (total and each component), lengths and flat groups of a scored RolloutBatch."""
    from rltune.advantages import is_flat
    from rltune.eval.grading import grading_failures

    lengths = batch.completion_lengths()
    groups = batch.groups()
    metrics = {
        "reward/total": batch.rewards.mean().item(),
        "reward/total_std": batch.rewards.std().item() if len(batch) > 1 else 0.0,
        "completion/length_mean": lengths.mean().item(),
        "completion/length_max": lengths.max().item(),
        "completion/truncated_fraction": sum(f == "length" for f in batch.finish_reasons) / len(batch),
        "groups/zero_std_fraction": sum(is_flat(batch.rewards[i]) for i in groups) / len(groups),
    }
    for name, values in batch.reward_components.items():
        metrics[f"reward/{name}"] = values.mean().item()
    metrics["reward/errors"] = float(reward_errors)
    metrics["reward/grader_errors"] = float(grading_failures())  # answers the grader could not check
    return metrics


def reduce_over_processes(metrics: dict[str, float], accelerator) -> dict[str, float]:
    """The same numbers on every process, over the global batch: maxima and wall times are the largest,
    throughputs, error counts and loss shares add up, everything else is the mean over processes."""
    if accelerator.num_processes == 1:
        return metrics
    import torch
    import torch.distributed as dist

    keys = sorted(metrics)
    largest = [k.endswith("_max") or k.startswith("time/") for k in keys]
    # each process's "loss" is its share of the global mini-batch loss
    summed = [k.startswith("throughput/") or k in ("reward/errors", "reward/grader_errors", "loss") for k in keys]
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    maxima = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    dist.all_reduce(maxima, op=dist.ReduceOp.MAX)
    return {
        k: float(maxima[i] if largest[i] else values[i] if summed[i] else values[i] / accelerator.num_processes)
        for i, k in enumerate(keys)
    }


def training_flops(num_params: int, tokens: int) -> float:
    """Model FLOPs of training on `tokens` tokens: 2 per parameter and token forward, 4 backward (attention
    left out). Divided by the update's seconds and the hardware's peak, the update's MFU."""
    return 6.0 * num_params * tokens


def trim_metrics(path: Path, last_step: int) -> None:
    """Keep only the complete lines of steps <= last_step: a resumed run redoes the steps after its
    checkpoint, and a kill may have cut the last line in half."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)


class MetricsLogger:
    def __init__(self, output_dir: Path, tensorboard: bool, enabled: bool = True, resume_step: int | None = None):
        """`resume_step`: the checkpoint's step when resuming; later lines of metrics.jsonl are dropped."""
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and (output_dir / "metrics.jsonl").is_file():
            trim_metrics(output_dir / "metrics.jsonl", resume_step)
        self.jsonl = (output_dir / "metrics.jsonl").open("a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / "tensorboard"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        self.jsonl.write(json.dumps({"step": step, **clean}) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for key, value in clean.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()
        shown = " ".join(f"{k.split('/')[-1]}={clean[k]:.4g}" for k in CONSOLE_KEYS if k in clean)
        log.info("step %d %s", step, shown)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            if self.writer is not None:
                self.writer.close()
