"""The GRPO-style online RL trainer.

One step, top to bottom (`Trainer.train_step`):
  prompts -> rollout engine -> rewards -> (dynamic sampling) -> advantages
  -> [reference logprobs] -> policy updates over mini-batches (rltune.update) -> sync weights into the engine
  -> log.
Every stage is a plug-in resolved from the recipe; the trainer only moves the batch between them. With
train.async_steps = k the first two stages run ahead on a producer thread, from weights k updates old, and
the sync becomes a hand-over of the new weights to it (rltune.async_rollouts).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Callable

import torch
from accelerate.utils import DistributedType, set_seed

from rltune.advantages import ADVANTAGES, select_per_group
from rltune.async_rollouts import AsyncRollouts, Produced, policy_copy, produced_from_state, produced_state
from rltune.batch import RolloutBatch
from rltune.checkpoint import (
    OutputLock,
    check_resume_recipe,
    claim_output_dir,
    load_state,
    resolve_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from rltune.config import RecipeConfig, check_before_loading, recipe_yaml
from rltune.console import preflight
from rltune.data import PromptSource
from rltune.distributed import any_process, make_accelerator, memory_metrics, parallel_mode, without_tied_copies
from rltune.environments import build_environment
from rltune.errors import ConfigError, RLTuneError, Stopped
from rltune.export import check_hub_access, model_card, push_checkpoint
from rltune.metrics import (
    MetricsLogger,
    reduce_over_processes,
    source_metrics,
    tracker_options,
    training_flops,
)
from rltune.models import context_length, load_tokenizer
from rltune.reward_pipeline import RewardPipeline
from rltune.rollout import engine_from_recipe
from rltune.rollout.stage import RolloutStage
from rltune.signals import GracefulStop
from rltune.update import PolicyUpdate

log = logging.getLogger(__name__)

# A callback is called after every step with the trainer, the step number and that step's metrics;
# it may add metrics to the dict (the periodic eval does).
Callback = Callable[["Trainer", int, dict[str, float]], None]


class Trainer:
    def __init__(self, cfg: RecipeConfig, callbacks: list[Callback] | None = None, dataset=None):
        check_before_loading(cfg, data_given=dataset is not None)  # recipes built in Python get them too
        self.cfg = cfg
        self.callbacks = list(callbacks or [])
        t = cfg.train
        self.accelerator = make_accelerator(t.mixed_precision, t.distributed_timeout_s, **tracker_options(t))
        if t.push_to_hub:  # before anything is loaded
            check_hub_access(t.hub_model_id)
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        set_seed(t.seed + self.rank)
        self.output_dir = Path(t.output_dir)
        # FSDP and DeepSpeed shard the weights: only the model's own forward gathers them, and every
        # process must run the same forwards.
        self.sharded = self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        if t.async_steps and (self.world_size > 1 or self.sharded):
            raise ConfigError(
                f"train.async_steps={t.async_steps} runs on one process for now ({self.world_size} launched"
                f"{', sharded' if self.sharded else ''}): launch one process, or set train.async_steps=0"
            )

        self.lock = OutputLock(self.output_dir)
        if self.accelerator.is_main_process:
            self.lock.acquire()
        checkpoint = resolve_checkpoint(t.resume_from, self.output_dir) if t.resume_from else None
        if checkpoint is None:
            claim_output_dir(self.output_dir, t.overwrite_output_dir, self.accelerator)
        self.tokenizer = load_tokenizer(str(checkpoint or cfg.model.path), cfg.model.trust_remote_code)
        context = cfg.rollout.vllm.max_model_len if cfg.rollout.engine == "vllm" else None
        # a LoRA checkpoint holds adapters and no config.json: the context is its base model's
        config_path = str(checkpoint) if checkpoint and not cfg.model.lora else cfg.model.path
        context = context or context_length(config_path, cfg.model.trust_remote_code)
        r = cfg.rollout
        self.environment = (
            None if r.environment is None else build_environment(r.environment, self.tokenizer, **r.environment_kwargs)
        )
        self.data = PromptSource(
            cfg.data,
            self.tokenizer,
            seed=t.seed,
            dataset=dataset,
            context_limit=None if context is None else context - cfg.rollout.max_tokens,
            tools=getattr(self.environment, "tools", None),  # the chat template writes them into every prompt
        )
        options = cfg.reward_options
        self.rewards = RewardPipeline(cfg.rewards, options.on_error, options.timeout_s, options.max_error_fraction)
        self.rewards.check_dataset(self.data.columns, has_gold=cfg.data.answer_column is not None)
        component_names = [c.name for c in self.rewards.components]
        if cfg.algorithm.dynamic_sampling_reward not in (None, *component_names):
            raise ConfigError(
                f"algorithm.dynamic_sampling_reward={cfg.algorithm.dynamic_sampling_reward!r} is not one of the "
                f"recipe's rewards: {', '.join(component_names)}"
            )
        self.advantage_fn = ADVANTAGES.get(cfg.algorithm.advantage)
        self.updater = PolicyUpdate(cfg, self.accelerator, self.tokenizer.pad_token_id, checkpoint, self.sharded)
        u = self.updater
        self.model, self.optimizer, self.scheduler, self.ref_model = u.model, u.optimizer, u.scheduler, u.ref_model
        self.step = 0
        self.rollouts: AsyncRollouts | None = None  # train.async_steps >= 1: the producer thread, from train()
        self.in_flight: list[Produced] = []  # batches sampled before a checkpoint and trained after its resume

        self.engine = engine_from_recipe(
            cfg.rollout,
            cfg.model,
            seed=t.seed + self.rank,
            max_model_len=self.data.max_prompt_length + cfg.rollout.max_tokens,
            policy=self.policy,
            tokenizer=self.tokenizer,
            sync_dir=str(self.output_dir / "weight-sync"),
        )
        self.rollout_stage = RolloutStage(
            cfg, self.engine, self.data, self.rewards, self.tokenizer, self.environment, self.rank, self.world_size
        )
        if checkpoint:
            self._restore(checkpoint)
        self.metrics = MetricsLogger(self.output_dir, self.accelerator, cfg, self.step if checkpoint else None)
        if self.accelerator.is_main_process:
            parallel = parallel_mode(self.accelerator)
            log.info(preflight(cfg, self.world_size, self.updater.num_params, cfg.rollout.engine, parallel))
        self.periodic_eval = None
        if cfg.eval.every > 0 or cfg.eval.at_start:
            from rltune.eval.hook import PeriodicEval

            self.periodic_eval = PeriodicEval(cfg)
            self.callbacks.append(self.periodic_eval)

    @property
    def policy(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def _restore(self, checkpoint: Path) -> None:
        state = load_state(checkpoint)
        changes = check_resume_recipe(checkpoint, recipe_yaml(self.cfg))
        self.updater.load_state_dict(state, str(checkpoint))
        self.data.load_state_dict(state["data"])
        self.step = state["step"]
        self.in_flight = [produced_from_state(p) for p in state.get("in_flight", [])]
        restore_rng(state["rng"][self.rank] if self.rank < len(state["rng"]) else state["rng"][0], checkpoint)
        self.engine.sync_weights(self.policy)
        log.info("resumed from %s at step %d", checkpoint, self.step)
        for key, old, new in changes:
            log.warning(
                "resumed with a changed recipe: %s %r -> %r (applies from step %d)", key, old, new, self.step + 1
            )

    # ----------------------------------------------------------------------------------------------
    # the loop

    def train(self) -> dict[str, float]:
        t = self.cfg.train
        last: dict[str, float] = {}
        if self.periodic_eval is not None and self.periodic_eval.at_start and self.step == 0:
            self.metrics.log(0, self.periodic_eval.run(self, 0))
        if t.async_steps and self.step < t.steps:
            first = policy_copy(self.policy)
            self.rollouts = AsyncRollouts(self.rollout_stage, first, t.steps, t.async_steps, self.step, self.in_flight)
        # SIGINT/SIGTERM: the step in progress ends, is checkpointed, and the run stops (rltune.signals)
        with GracefulStop(t.save_on_signal_s) as stop:
            stopping = False
            while self.step < t.steps and not stopping:
                metrics = self.train_step()
                self.step += 1
                for _, term in self.updater.loss_terms:
                    if hasattr(term, "on_step_end"):
                        term.on_step_end(self, metrics)
                for callback in self.callbacks:
                    callback(self, self.step, metrics)
                if self.step % t.log_every == 0 or self.step == t.steps:
                    self.metrics.log(self.step, metrics)
                if t.log_completions_every and self.step % t.log_completions_every == 0:
                    self.metrics.log_completions(self.step, self.last_batch)
                stopping = self._stop_requested(stop)
                if (t.save_every and self.step % t.save_every == 0) or self.step == t.steps or stopping:
                    self.save()
                last = metrics
        if self.rollouts is not None:  # the engine ends holding the final weights, as in on-policy runs
            self.rollouts.close()
            self.rollouts = None
            self.engine.sync_weights(self.policy)
        self.metrics.close()
        if stopping:
            raise Stopped(
                f"stopped by {signal.Signals(stop.signum or signal.SIGTERM).name} after step {self.step}, its "
                "checkpoint saved; continue with train.resume_from=latest",
                stop.exit_code,
            )
        return last

    def _stop_requested(self, stop: GracefulStop) -> bool:
        """A signal reached some process: all of them stop after the same step."""
        return any_process(stop.requested)

    def train_step(self) -> dict[str, float]:
        started = time.perf_counter()
        if self.rollouts is None:
            batch, rollout_metrics = self.collect_rollouts(self.step)
            batch.policy_versions = [self.step] * len(batch)
            rollout_s = time.perf_counter() - started
        else:  # sampled ahead, from older weights, while earlier steps updated
            produced, waited = self.rollouts.take(self.step)
            batch, rollout_metrics = produced.batch, {**produced.metrics, "async/update_wait_s": waited}
            rollout_s = rollout_metrics["time/rollout_s"]
            rollout_metrics.update(self.staleness_metrics(batch))
        if self.cfg.rollout.vllm.sleep:  # vLLM's memory is the update's until sync_weights wakes it
            self.engine.sleep()
        generated = sum(len(c) for c in batch.completion_ids)
        prompt_tokens = sum(len(p) for p in batch.prompt_ids)
        adv = self.advantage_fn(batch.rewards, batch.groups())
        if batch.token_returns is not None:  # token-level reward streams refine the advantage per token
            adv = (adv[:, None] if adv.dim() == 1 else adv) + batch.token_returns
        batch.advantages = adv
        if self.cfg.algorithm.keep_per_group is not None:
            generator = torch.Generator().manual_seed(self.cfg.train.seed * 104_729 + self.step)
            keep = select_per_group(
                adv, batch.groups(), self.cfg.algorithm.keep_per_group, self.cfg.algorithm.keep_rule, generator
            )
            batch = batch.select_samples(keep)
            adv = batch.advantages
        self.last_batch = batch  # the batch as trained, for the completions log
        if self.updater.needs_reference:
            batch.extras["ref_logprobs"] = self.updater.reference_logprobs(batch)
        update_started = time.perf_counter()
        update_metrics = self.updater.update(batch, self.step)
        update_s = time.perf_counter() - update_started
        if self.rollouts is None:
            self.engine.sync_weights(self.policy)
        else:
            self.rollouts.publish(self.step + 1, self.policy)
        step_s = time.perf_counter() - started
        return reduce_over_processes(
            {
                **rollout_metrics,
                **update_metrics,
                **memory_metrics(self.model, self.optimizer),
                "advantage/abs_mean": adv.abs().mean().item(),
                "lr": self.scheduler.get_last_lr()[0],
                "time/rollout_s": rollout_s,
                "time/update_s": update_s,
                "time/step_s": step_s,
                "throughput/gen_tokens_per_s": generated / max(rollout_s, 1e-9),
                "throughput/tokens_per_s": (generated + prompt_tokens) / step_s,
                # Achieved model TFLOP/s of the update (6 x parameters x trained tokens); over the peak, its MFU.
                "throughput/update_tflops": training_flops(self.updater.num_params, update_metrics["trained_tokens"])
                / max(update_s, 1e-9)
                / 1e12,
            },
            self.accelerator,
        ) | source_metrics(batch, self.cfg.data.source_column, self.accelerator)

    def staleness_metrics(self, batch: RolloutBatch) -> dict[str, float]:
        """Updates between each sample's weights and the current ones; more than train.async_steps is a bug."""
        staleness = [self.step - v for v in batch.policy_versions]
        if max(staleness) > self.cfg.train.async_steps or min(staleness) < 0:
            raise RLTuneError(
                f"step {self.step + 1} was handed samples of policy versions {sorted(set(batch.policy_versions))}, "
                f"outside the staleness bound train.async_steps={self.cfg.train.async_steps}"
            )
        return {"async/staleness_mean": sum(staleness) / len(staleness), "async/staleness_max": float(max(staleness))}

    @contextlib.contextmanager
    def current_policy_engine(self):
        """The rollout engine holding the current weights, for sampling outside the training batches (the
        periodic eval); with asynchronous rollouts the producer waits meanwhile."""
        if self.rollouts is None:
            yield self.engine
            return
        with self.rollouts.engine_paused():
            self.engine.sync_weights(self.policy)
            yield self.engine

    # ----------------------------------------------------------------------------------------------
    # rollouts

    def collect_rollouts(self, step: int | None = None) -> tuple[RolloutBatch, dict[str, float]]:
        """The rollout stage's batch of `step` (default: the current one), sampled and scored, and its metrics."""
        return self.rollout_stage.collect(self.step if step is None else step)

    # ----------------------------------------------------------------------------------------------
    # checkpoints

    def save(self) -> Path | None:
        self.accelerator.wait_for_everyone()
        rngs = [rng_state()]
        if self.world_size > 1:
            from accelerate.utils import gather_object

            rngs = gather_object(rngs)
        # Sharded weights and optimizer state: every process takes part in gathering them whole.
        weights = None
        if self.sharded:
            weights = without_tied_copies(self.policy, self.accelerator.get_state_dict(self.model))
        update_state = self.updater.state_dict()
        if not self.accelerator.is_main_process:
            return None
        state = {"step": self.step, **update_state, "data": self.data.state_dict(), "rng": rngs}
        if self.rollouts is not None:  # the batches already sampled for the next steps, and the data after them
            in_flight, state["data"] = self.rollouts.in_flight(self.step)
            state["in_flight"] = [produced_state(p) for p in in_flight]
        recipe, lora_base = recipe_yaml(self.cfg), self.cfg.model.path if self.cfg.model.lora else None
        card = model_card(self.output_dir, self.step, recipe, lora_base, merged=False)
        t = self.cfg.train
        folder = save_checkpoint(
            self.output_dir, self.step, self.policy, self.tokenizer, state, recipe, t.keep_checkpoints, weights, card
        )
        if t.push_to_hub:
            push_checkpoint(folder, t.hub_model_id, t.hub_private)
        return folder

    def close(self) -> None:
        if self.rollouts is not None:
            self.rollouts.close()
        self.engine.close()
        self.lock.release()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
