"""Metric sinks: one line per step on the console, metrics.jsonl, completions.jsonl, and the trackers."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import yaml

log = logging.getLogger("rltune")

# Shown on the console line after the rewards, in this order, when present.
CONSOLE_KEYS = (
    "loss",
    "kl",
    "entropy",
    "clip_fraction",
    "completion/length_mean",
    "throughput/gen_tokens_per_s",
    "async/staleness_max",
)


def step_line(step: int, total: int, metrics: dict[str, float], seconds_per_step: float | None) -> str:
    """One console line per step: progress, every reward component (custom ones too), the main signals."""
    rewards = [k for k in metrics if k.startswith("reward/") and not k.endswith("_std")]
    rewards.sort(key=lambda k: (k != "reward/total", k))
    shown = [k for k in rewards if not k.endswith("errors") or metrics[k] > 0]
    shown += [k for k in CONSOLE_KEYS if k in metrics]
    parts = [f"step {step}/{total}"]
    parts += [
        f"{k.removeprefix('reward/').replace('/', '.') if k.startswith('reward/') else k.split('/')[-1]}="
        f"{metrics[k]:.4g}"
        for k in shown
    ]
    if seconds_per_step:
        parts.append(f"{seconds_per_step:.1f}s/step eta {_duration(seconds_per_step * (total - step))}")
    return " ".join(parts)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def rollout_metrics(batch, reward_errors: int = 0, grader_errors: int = 0) -> dict[str, float]:
    """Rewards (total and each component), lengths and flat groups of a scored RolloutBatch; the step's
    failed reward calls and answers the grader could not check."""
    from rltune.advantages import is_flat

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
    for name, values in batch.reward_components.items():  # samples it returned None for left out
        metrics[f"reward/{name}"] = values.nanmean().item()
    metrics["reward/errors"] = float(reward_errors)
    metrics["reward/grader_errors"] = float(grader_errors)
    if batch.turns is not None:
        metrics.update(episode_metrics(batch))
    return metrics


def episode_metrics(batch) -> dict[str, float]:
    """Multi-turn samples: model turns, observation tokens and the model's tokens per turn, each a mean per
    sample, and the environment's counters (env/tool_calls, env/tool_errors, ...), means per sample."""
    n = len(batch)
    model_turns = [sum(m["role"] == "assistant" for m in turns) for turns in batch.turns]
    model_tokens = [batch.model_token_count(i) for i in range(n)]
    metrics = {
        "episode/turns_mean": sum(model_turns) / n,
        "episode/turns_max": float(max(model_turns)),
        "episode/observation_tokens_mean": sum(len(c) for c in batch.completion_ids) / n - sum(model_tokens) / n,
        "episode/turn_length_mean": sum(model_tokens) / max(sum(model_turns), 1),
    }
    for key in sorted({k for stats in batch.episode_stats or [] for k in stats}):
        metrics[f"env/{key}"] = sum(stats.get(key, 0.0) for stats in batch.episode_stats) / n
    return metrics


def source_metrics(batch, column: str | None, accelerator) -> dict[str, float]:
    """The mean reward of each data source (the rows' `column`, verl's `data_source`) over the global
    batch, as reward/source/<name>; nothing when the rows have no such column. Every process learns every
    source first, so that all of them reduce the same numbers."""
    if column is None or not batch.rows or column not in batch.rows[0]:
        return {}
    import torch
    import torch.distributed as dist

    sources = [str(batch.rows[g].get(column)) for g in batch.group_ids]
    names = sorted(set(sources))
    shared = accelerator.num_processes > 1
    if shared:
        everyone: list = [None] * accelerator.num_processes
        dist.all_gather_object(everyone, names)
        names = sorted(set().union(*everyone))
    totals = torch.zeros(2, len(names), dtype=torch.float64, device=accelerator.device)  # reward sums, counts
    for source, reward in zip(sources, batch.rewards.tolist()):
        totals[0, names.index(source)] += reward
        totals[1, names.index(source)] += 1
    if shared:
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    return {f"reward/source/{name}": float(totals[0, i] / totals[1, i]) for i, name in enumerate(names)}


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


def tracker_options(train) -> dict:
    """Accelerator arguments for the recipe's trackers; a tracker whose package is missing stops here,
    before any model is loaded."""
    if not train.report_to:
        return {}
    import accelerate.utils
    from accelerate.utils import ProjectConfiguration

    from rltune.errors import ConfigError

    missing = [name for name in train.report_to if not getattr(accelerate.utils, f"is_{name}_available")()]
    if missing:
        packages = " ".join("mlflow-skinny" if name == "mlflow" else name for name in missing)
        raise ConfigError(
            f"train.report_to names {', '.join(missing)}, which is not installed: pip install {packages} "
            "(or remove it from train.report_to)"
        )
    if "mlflow" in train.report_to:
        _check_mlflow_store()
    output_dir = Path(train.output_dir)
    config = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "tensorboard"))
    return {"log_with": list(train.report_to), "project_config": config}


def _check_mlflow_store() -> None:
    """Open MLflow's tracking store now, before any model loads: MLflow 3 refuses a folder of files unless
    MLFLOW_ALLOW_FILE_STORE=true, and its default store (sqlite) needs packages mlflow-skinny lacks; either
    would otherwise stop the run only once training starts."""
    import mlflow

    from rltune.errors import ConfigError

    try:
        mlflow.MlflowClient().search_experiments(max_results=1)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "MLFLOW_ALLOW_FILE_STORE" in str(exc):
            advice = (
                "set MLFLOW_ALLOW_FILE_STORE=true to keep a folder of files, or "
                "MLFLOW_TRACKING_URI=sqlite:///mlflow.db (needs alembic and sqlalchemy)"
            )
        elif isinstance(exc, ModuleNotFoundError):
            advice = f"pip install {exc.name}, or point MLFLOW_TRACKING_URI at a server or a folder"
        else:
            advice = "check MLFLOW_TRACKING_URI (or remove mlflow from train.report_to)"
        raise ConfigError(
            f"train.report_to names mlflow, and its tracking store {mlflow.get_tracking_uri()!r} cannot be opened: "
            f"{text[:300]}. {advice}"
        ) from exc


class MetricsLogger:
    """metrics.jsonl, completions.jsonl, the recipe's trackers (through accelerate) and the console line.

    Files and trackers are written by the main process only; `log_completions` is called on every
    process (it gathers the rows)."""

    def __init__(self, output_dir: Path, accelerator, cfg, resume_step: int | None = None):
        """`resume_step`: the checkpoint's step when resuming; later lines of the jsonl files are dropped."""
        self.accelerator = accelerator
        self.enabled = accelerator.is_main_process
        self.train = cfg.train
        self.started: tuple[int, float] | None = None  # (step, time) of the first step logged here
        if self.enabled:
            output_dir.mkdir(parents=True, exist_ok=True)
            for name in ("metrics.jsonl", "completions.jsonl"):
                if resume_step is not None and (output_dir / name).is_file():
                    trim_metrics(output_dir / name, resume_step)
            self.jsonl = (output_dir / "metrics.jsonl").open("a")
            self.completions_path = output_dir / "completions.jsonl"
        if cfg.train.report_to:
            from rltune.config import recipe_yaml
            from rltune.errors import RLTuneError

            run_name = cfg.train.run_name or output_dir.resolve().name
            init_kwargs = {
                "wandb": {"name": run_name, "dir": str(output_dir)},
                "mlflow": {"run_name": run_name},
                "trackio": {"name": run_name},
            }
            config = _flat(yaml.safe_load(recipe_yaml(cfg)))
            try:
                accelerator.init_trackers(cfg.train.project, config=config, init_kwargs=init_kwargs)
            except Exception as exc:  # a tracker's own setup (server, store, login): say which and why
                raise RLTuneError(
                    f"starting the trackers {cfg.train.report_to} (train.report_to) failed: {type(exc).__name__}: {exc}"
                ) from exc

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: None if v is None else float(v) for k, v in metrics.items()}
        clean = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
        broken = sorted(k for k, v in values.items() if v is not None and not math.isfinite(v))
        if broken:  # written as null (JSON has no NaN), never dropped unseen
            log.warning("step %d: non-finite metrics %s", step, ", ".join(f"{k}={values[k]}" for k in broken))
        self.jsonl.write(json.dumps({"step": step, **clean, **{k: None for k in broken}}) + "\n")
        self.jsonl.flush()
        if self.train.report_to:
            self.accelerator.log(clean, step=step)
        now = time.perf_counter()
        if self.started is None:
            self.started = (step, now)
        first_step, first_time = self.started
        per_step = (now - first_time) / (step - first_step) if step > first_step else metrics.get("time/step_s")
        log.info(step_line(step, self.train.steps, clean, per_step))

    def log_completions(self, step: int, batch) -> None:
        """The step's prompts, completions, reward components, advantages and lengths (all processes)."""
        rows = completion_rows(batch)
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            rows = gather_object(rows)
        if not self.enabled:
            return
        rows = rows[: self.train.log_completions_max]
        with self.completions_path.open("a") as f:
            f.writelines(json.dumps({"step": step, **row}) + "\n" for row in rows)
        if not rows or not self.train.report_to:
            return
        columns = list(rows[0])
        # trackers' tables take text: an episode is shown turn by turn, each under its role
        data = [[trajectory_text(row[c]) if c == "turns" else row[c] for c in columns] for row in rows]
        for tracker in self.accelerator.trackers:
            if tracker.name == "wandb":
                tracker.log_table("completions", columns=columns, data=data, step=step)
            elif tracker.name == "tensorboard":
                tracker.writer.add_text("completions", _markdown_table(columns, data), step)
                tracker.writer.flush()
            elif tracker.name == "mlflow":
                import mlflow

                table = {c: [row[c] for row in rows] for c in columns}
                mlflow.log_table(data=table, artifact_file=f"completions/step_{step:06d}.json")

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
        # each tracker's own finish: accelerate's end_training would also tear down the process group,
        # which vLLM's engine still holds until it is closed
        for tracker in self.accelerator.trackers if self.enabled else []:
            tracker.finish()


def completion_rows(batch) -> list[dict]:
    """One dict per completion: prompt, completion, total reward, each component, advantage, length."""
    advantages = batch.advantages
    if advantages is not None and advantages.dim() == 2:  # token-level: the mean over generated tokens
        lengths = batch.completion_lengths().clamp(min=1).to(advantages.dtype)
        advantages = advantages.sum(dim=1) / lengths
    rows = []
    for i in range(len(batch)):
        row = {
            "group": batch.group_ids[i],
            "prompt": batch.rows[batch.group_ids[i]].get("prompt", ""),
            "completion": batch.completion_texts[i],
            "reward": float(batch.rewards[i]),
        }
        row.update({f"reward/{name}": float(values[i]) for name, values in batch.reward_components.items()})
        row["advantage"] = None if advantages is None else float(advantages[i])
        row["length"] = len(batch.completion_ids[i])
        row["finish_reason"] = batch.finish_reasons[i]
        if batch.turns is not None:  # the trajectory by who wrote it: the model, or the environment
            row["turns"] = batch.turns[i]
        rows.append(row)
    return rows


def trajectory_text(turns: list[dict[str, str]]) -> str:
    """An episode as one text, each message under its role: `[assistant]`, then `[tool]`, ..."""
    return "\n".join(f"[{m['role']}]\n{m['content']}" for m in turns)


def _markdown_table(columns: list[str], data: list[list]) -> str:
    def cell(value) -> str:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in data]
    return "\n".join(lines)


def _flat(tree, prefix: str = "") -> dict:
    """A nested recipe as flat 'section.key' -> scalar (trackers take scalars; lists become strings)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return flat
