"""What the console shows: library chatter kept out by default, and the preflight block of a run.

Quiet mode (the CLI's default; `--verbose` turns it off) keeps the libraries' INFO/WARNING chatter,
progress bars of file loading and deprecation warnings out of the console: vLLM's engine banner and
CPU-backend notes, torch's C++ NUMA note, the loading/saving bars of transformers, datasets, vLLM and
hub downloads. rltune's own warnings and progress, and every library's errors, still show.
"""

from __future__ import annotations

import logging
import os
import warnings

# Library loggers that speak at INFO/WARNING about their own setup.
NOISY_LOGGERS = ("vllm", "httpx", "urllib3", "datasets", "filelock", "transformers", "accelerate", "torch", "wandb")

# Environment variables the libraries read once, at import; a value the user set is kept.
QUIET_ENVIRONMENT = {
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TORCH_CPP_LOG_LEVEL": "ERROR",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "WANDB_SILENT": "true",
}


def quiet_libraries() -> None:
    """Call before the libraries are imported: some read their log level from the environment once."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(vllm|torch|transformers|accelerate|peft|trl)\b")
    warnings.filterwarnings("ignore", category=FutureWarning)  # from any module


def preflight(cfg, world_size: int, num_params: int, engine: str, parallel: str = "one process") -> str:
    """The run's derived shapes, printed once at the start so nobody has to work them out."""
    t, r, a = cfg.train, cfg.rollout, cfg.algorithm
    per_group = a.keep_per_group or r.group_size
    prompts = t.prompts_per_step * world_size
    sequences = t.prompts_per_step * per_group  # trained per process and step
    per_mini = -(-sequences // a.mini_batches)
    micro = (
        f"at most {t.micro_batch_size} sequences and {t.micro_batch_tokens} tokens (train.micro_batch_tokens)"
        if t.micro_batch_tokens
        else f"{t.micro_batch_size} sequences (train.micro_batch_size), {-(-per_mini // t.micro_batch_size)} per "
        "mini-batch"
    )
    precision = cfg.model.dtype + (f", {t.mixed_precision} autocast" if t.mixed_precision != "no" else "")
    lines = [
        f"model        {cfg.model.path} ({num_params / 1e6:.1f}M parameters, {precision})"
        + (f", LoRA r={cfg.model.lora.r}" if cfg.model.lora else ""),
        f"processes    {world_size} ({parallel}); rollout engine {engine}"
        + (
            f", asynchronous: batches sampled {t.async_steps} update(s) behind (train.async_steps)"
            if t.async_steps
            else ""
        ),
        f"prompts      {t.prompts_per_step} per process (train.prompts_per_step) x {world_size} = {prompts} per step",
        f"completions  {r.group_size} per prompt = {prompts * r.group_size} per step"
        + (f", {per_group} per prompt trained (algorithm.keep_per_group)" if a.keep_per_group else ""),
        f"updates      {a.epochs} epoch(s) x {a.mini_batches} mini-batch(es) of {per_mini} sequences per process "
        f"= {a.epochs * a.mini_batches} optimizer steps per RL step",
        f"micro-batch  {micro}",
        f"steps        {t.steps}, lr {t.lr:g} ({t.lr_scheduler}"
        + (f", warmup {t.warmup_steps} steps" if t.warmup_steps else "")
        + f"), output {t.output_dir}"
        + (f", trackers {', '.join(t.report_to)}" if t.report_to else ""),
    ]
    return "run:\n  " + "\n  ".join(lines)
