"""The GRPO-style online RL trainer.

One step, top to bottom (`Trainer.step`):
  prompts -> rollout engine -> rewards -> (dynamic sampling) -> advantages
  -> [reference logprobs] -> policy updates over mini-batches -> sync weights into the engine -> log.
Every stage is a plug-in resolved from the recipe; the trainer only moves the batch between them.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from rltune.advantages import ADVANTAGES, is_flat, select_per_group
from rltune.batch import InputLayout, MicroBatch, PolicyOutput, RolloutBatch, pack_rows
from rltune.checkpoint import (
    list_checkpoints,
    load_state,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from rltune.config import LossTermSpec, RecipeConfig
from rltune.data import PromptSource
from rltune.errors import ConfigError, RLTuneError
from rltune.lm_head import token_scores
from rltune.loss_terms import LOSS_TERMS
from rltune.losses import Normalizer, aggregate, masked_mean, token_entropy
from rltune.metrics import MetricsLogger, training_flops
from rltune.models import (
    base_model,
    compile_decoder_layers,
    keeps_logits,
    load_policy,
    load_reference,
    load_tokenizer,
    reads_packed_rows,
)
from rltune.objectives import OBJECTIVES
from rltune.reward_pipeline import RewardPipeline
from rltune.rollout import SamplingSettings, engine_from_recipe, run_with_timeout

log = logging.getLogger(__name__)

# A callback is called after every step with the trainer, the step number and that step's metrics;
# it may add metrics to the dict (the periodic eval does).
Callback = Callable[["Trainer", int, dict[str, float]], None]


class Trainer:
    def __init__(self, cfg: RecipeConfig, callbacks: list[Callback] | None = None, dataset=None):
        self.cfg = cfg
        self.callbacks = list(callbacks or [])
        t = cfg.train
        # cpu=True on a machine without CUDA: accelerate only sets up multi-process CPU training
        # (gloo) when told so; otherwise each launched process would silently train alone.
        self.accelerator = Accelerator(mixed_precision=t.mixed_precision, cpu=not torch.cuda.is_available())
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        set_seed(t.seed + self.rank)
        self.output_dir = Path(t.output_dir)
        # FSDP and DeepSpeed shard the weights: only the model's own forward gathers them, and every
        # process must run the same forwards.
        self.sharded = self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        if self.sharded and t.micro_batch_tokens is not None:
            raise RLTuneError(
                "train.micro_batch_tokens is not supported under FSDP/DeepSpeed: every process must run the same "
                "number of forwards. Remove it and set train.micro_batch_size."
            )

        checkpoint = resolve_checkpoint(t.resume_from, self.output_dir) if t.resume_from else None
        if checkpoint is None:
            self._claim_output_dir()
        self.tokenizer = load_tokenizer(str(checkpoint or cfg.model.path), cfg.model.trust_remote_code)
        context = cfg.rollout.vllm.max_model_len if cfg.rollout.engine == "vllm" else None
        self.data = PromptSource(
            cfg.data,
            self.tokenizer,
            seed=t.seed,
            dataset=dataset,
            context_limit=None if context is None else context - cfg.rollout.max_tokens,
        )
        self.rewards = RewardPipeline(cfg.rewards, cfg.reward_options.on_error, cfg.reward_options.timeout_s)
        component_names = [c.name for c in self.rewards.components]
        if cfg.algorithm.dynamic_sampling_reward not in (None, *component_names):
            raise ConfigError(
                f"algorithm.dynamic_sampling_reward={cfg.algorithm.dynamic_sampling_reward!r} is not one of the "
                f"recipe's rewards: {', '.join(component_names)}"
            )
        self.advantage_fn = ADVANTAGES.get(cfg.algorithm.advantage)
        try:
            self.objective = OBJECTIVES.get(cfg.algorithm.objective)(cfg.algorithm, **cfg.algorithm.objective_kwargs)
        except TypeError as exc:
            raise ConfigError(f"algorithm.objective_kwargs {cfg.algorithm.objective_kwargs}: {exc}") from exc
        term_specs = list(cfg.algorithm.loss_terms)
        if cfg.algorithm.kl_coef > 0:
            anchor = {
                "anchor": cfg.algorithm.kl_anchor,
                "decay": cfg.algorithm.kl_anchor_decay,
                "update_every": cfg.algorithm.kl_anchor_update_every,
            }
            term_specs.append(LossTermSpec(name="kl", coef=cfg.algorithm.kl_coef, kwargs=anchor))
        self.loss_terms = [(spec.coef, LOSS_TERMS.get(spec.name)(**spec.kwargs)) for spec in term_specs]
        self.needs_reference = any(getattr(term, "needs_reference", False) for _, term in self.loss_terms)
        self.needs_entropy_grad = any(getattr(term, "needs_entropy_grad", False) for _, term in self.loss_terms)
        self.updates_reference = any(getattr(term, "updates_reference", False) for _, term in self.loss_terms)
        if self.updates_reference and cfg.model.lora:
            raise ConfigError(
                "a moving reference (kl_anchor: ema) needs full fine-tuning; with LoRA the "
                "reference is the frozen base model"
            )

        model = load_policy(cfg.model, str(checkpoint) if checkpoint else None)
        if t.compile is True:  # not "lm_head", which compiles the head's arithmetic only
            compile_decoder_layers(model)
        # LoRA: the frozen base (adapters disabled) is the reference; no second copy of the weights.
        self.ref_model = None
        if self.needs_reference and not cfg.model.lora:
            self.ref_model = load_reference(cfg.model).to(self.accelerator.device)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=t.lr,
            weight_decay=t.weight_decay,
            betas=tuple(t.betas),
            # Under FSDP/DeepSpeed the optimizer steps sharded parameters; torch picks its kernels there.
            fused=t.fused_optimizer and not self.sharded,
        )
        updates_per_step = cfg.algorithm.epochs * cfg.algorithm.mini_batches
        scheduler = get_scheduler(
            t.lr_scheduler,
            optimizer,
            num_warmup_steps=t.warmup_steps * updates_per_step,
            num_training_steps=t.steps * updates_per_step,
        )
        self.num_params = sum(p.numel() for p in model.parameters())  # counted before any sharding
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.model_keeps_logits = keeps_logits(model)
        self.packing = t.packing and reads_packed_rows(model)
        if t.packing and not self.packing:
            log.info("train.packing: %s does not read packed rows; samples are padded", type(model).__name__)
        self.step = 0
        self.bad_updates = 0

        self.max_model_len = self.data.max_prompt_length + cfg.rollout.max_tokens
        self.engine = self._build_engine()
        if checkpoint:
            self._restore(checkpoint)
        self.metrics = MetricsLogger(
            self.output_dir,
            t.tensorboard,
            enabled=self.accelerator.is_main_process,
            resume_step=self.step if checkpoint else None,
        )
        self.periodic_eval = None
        if cfg.eval.every > 0 or cfg.eval.at_start:
            from rltune.eval.hook import PeriodicEval

            self.periodic_eval = PeriodicEval(cfg)
            self.callbacks.append(self.periodic_eval)

    # ----------------------------------------------------------------------------------------------
    # construction helpers

    def _build_engine(self):
        return engine_from_recipe(
            self.cfg.rollout,
            self.cfg.model,
            seed=self.cfg.train.seed + self.rank,
            max_model_len=self.max_model_len,
            policy=self.policy,
            tokenizer=self.tokenizer,
            sync_dir=str(self.output_dir / "weight-sync"),
        )

    def _claim_output_dir(self) -> None:
        """Refuse to start a new run on top of another one, unless told to replace it."""
        previous = list_checkpoints(self.output_dir)
        metrics = self.output_dir / "metrics.jsonl"
        if not previous and not (metrics.is_file() and metrics.stat().st_size > 0):
            return
        if not self.cfg.train.overwrite_output_dir:
            raise RLTuneError(
                f"train.output_dir {str(self.output_dir)!r} holds another run ({len(previous)} checkpoints, "
                "metrics.jsonl): continue it with train.resume_from=latest, choose another output_dir, or set "
                "train.overwrite_output_dir=true to replace it"
            )
        if self.accelerator.is_main_process:
            for path in [
                *previous,
                *self.output_dir.glob(".checkpoint-*.tmp"),
                self.output_dir / "tensorboard",
                self.output_dir / "eval",
            ]:
                shutil.rmtree(path, ignore_errors=True)
            metrics.unlink(missing_ok=True)
        self.accelerator.wait_for_everyone()

    @property
    def policy(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def _restore(self, checkpoint: Path) -> None:
        state = load_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.data.load_state_dict(state["data"])
        self.step = state["step"]
        for (_, term), term_state in zip(self.loss_terms, state.get("loss_terms", [])):
            if term_state is not None:
                term.load_state_dict(term_state)
        if "reference" in state:
            self.ref_model.load_state_dict(state["reference"])
        set_rng_state(state["rng"][self.rank] if self.rank < len(state["rng"]) else state["rng"][0])
        self.engine.sync_weights(self.policy)
        log.info("resumed from %s at step %d", checkpoint, self.step)

    # ----------------------------------------------------------------------------------------------
    # the loop

    def train(self) -> dict[str, float]:
        t = self.cfg.train
        last: dict[str, float] = {}
        bar = tqdm(
            total=t.steps,
            initial=self.step,
            desc="rl steps",
            disable=not (t.progress_bar and self.accelerator.is_main_process),
        )
        if self.periodic_eval is not None and self.periodic_eval.at_start and self.step == 0:
            self.metrics.log(0, self.periodic_eval.run(self, 0))
        while self.step < t.steps:
            metrics = self.train_step()
            self.step += 1
            for _, term in self.loss_terms:
                if hasattr(term, "on_step_end"):
                    term.on_step_end(self, metrics)
            for callback in self.callbacks:
                callback(self, self.step, metrics)
            if self.step % t.log_every == 0 or self.step == t.steps:
                self.metrics.log(self.step, metrics)
            if (t.save_every and self.step % t.save_every == 0) or self.step == t.steps:
                self.save()
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward/total']:.3f}")
            last = metrics
        bar.close()
        self.metrics.close()
        return last

    def train_step(self) -> dict[str, float]:
        started = time.perf_counter()
        batch, rollout_metrics = self.collect_rollouts()
        rollout_s = time.perf_counter() - started
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
        if self.needs_reference:
            batch.extras["ref_logprobs"] = self.reference_logprobs(batch)
        update_started = time.perf_counter()
        update_metrics = self.update(batch)
        update_s = time.perf_counter() - update_started
        self.engine.sync_weights(self.policy)
        step_s = time.perf_counter() - started
        return self.reduce_metrics(
            {
                **rollout_metrics,
                **update_metrics,
                "advantage/abs_mean": adv.abs().mean().item(),
                "lr": self.scheduler.get_last_lr()[0],
                "time/rollout_s": rollout_s,
                "time/update_s": update_s,
                "time/step_s": step_s,
                "throughput/gen_tokens_per_s": generated / max(rollout_s, 1e-9),
                "throughput/tokens_per_s": (generated + prompt_tokens) / step_s,
                # Achieved model TFLOP/s of the update (6 x parameters x trained tokens); over the peak, its MFU.
                "throughput/update_tflops": training_flops(self.num_params, update_metrics["trained_tokens"])
                / max(update_s, 1e-9)
                / 1e12,
            }
        )

    def reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The same numbers on every process, over the global batch: maxima and wall times are the
        largest, throughputs, error counts and loss shares add up, everything else is the mean over processes."""
        if self.world_size == 1:
            return metrics
        import torch.distributed as dist

        keys = sorted(metrics)
        largest = [k.endswith("_max") or k.startswith("time/") for k in keys]
        # each process's "loss" is its share of the global mini-batch loss
        summed = [k.startswith("throughput/") or k in ("reward/errors", "loss") for k in keys]
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.accelerator.device)
        maxima = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        dist.all_reduce(maxima, op=dist.ReduceOp.MAX)
        return {
            k: float(maxima[i] if largest[i] else values[i] if summed[i] else values[i] / self.world_size)
            for i, k in enumerate(keys)
        }

    # ----------------------------------------------------------------------------------------------
    # rollouts

    def collect_rollouts(self) -> tuple[RolloutBatch, dict[str, float]]:
        """Sample and score one batch; with dynamic sampling, keep only groups whose rewards differ."""
        cfg, algo = self.cfg, self.cfg.algorithm
        want = cfg.train.prompts_per_step
        kept: list[RolloutBatch] = []
        flat: list[RolloutBatch] = []
        scored: list[RolloutBatch] = []
        n_kept = 0
        rounds = 0
        for rounds in range(1, algo.max_sampling_rounds + 1):
            batch = self.generate(round_index=rounds - 1)
            self.rewards.score(batch)
            scored.append(batch)
            if not algo.dynamic_sampling:
                break
            spread = (
                batch.reward_components[algo.dynamic_sampling_reward] if algo.dynamic_sampling_reward else batch.rewards
            )
            varied = [g for g, idx in enumerate(batch.groups()) if not is_flat(spread[idx])]
            flat_groups = sorted(set(range(batch.num_groups)) - set(varied))
            kept.append(batch.select_groups(varied))
            flat.append(batch.select_groups(flat_groups))
            n_kept += len(varied)
            if n_kept >= want:
                break
        if algo.dynamic_sampling:
            pool = RolloutBatch.concat(kept + flat)
            # Top up with flat groups (zero advantage) when rounds ran out, so every process trains on
            # the same number of sequences.
            batch = pool.select_groups(list(range(min(want, pool.num_groups))))
        else:
            batch = scored[0]
        all_scored = RolloutBatch.concat(scored) if len(scored) > 1 else scored[0]
        metrics = self.rollout_metrics(all_scored)
        if algo.dynamic_sampling:
            metrics["dynamic_sampling/rounds"] = rounds
            metrics["dynamic_sampling/kept_groups"] = min(n_kept, want)
        return batch, metrics

    def generate(self, round_index: int = 0) -> RolloutBatch:
        """This process's share of the next prompts, `group_size` completions each."""
        r = self.cfg.rollout
        ids, rows = self.data.next_batch(self.cfg.train.prompts_per_step * self.world_size)
        ids, rows = ids[self.rank :: self.world_size], rows[self.rank :: self.world_size]
        # A seed per prompt from its place in the global batch: the same samples whatever the number of
        # processes sharing that batch.
        base = r.seed if r.seed is not None else self.cfg.train.seed
        seeds = [
            hash((base, self.step, round_index, self.rank + self.world_size * i)) % (2**31 - 1) for i in range(len(ids))
        ]
        sampling = SamplingSettings(
            n=r.group_size, temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens, prompt_seeds=seeds
        )
        if r.timeout_s is None:
            return self.engine.generate(ids, rows, sampling)
        return run_with_timeout(
            lambda: self.engine.generate(ids, rows, sampling),
            r.timeout_s,
            f"the {r.engine} rollout engine produced no batch in {r.timeout_s:.0f}s (rollout.timeout_s); "
            "it is stuck or far slower than expected",
            on_this_thread=True,
        )

    def rollout_metrics(self, batch: RolloutBatch) -> dict[str, float]:
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
        metrics["reward/errors"] = float(self.rewards.errors)
        return metrics

    # ----------------------------------------------------------------------------------------------
    # policy update

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        algo, t = self.cfg.algorithm, self.cfg.train
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        generator = torch.Generator().manual_seed(t.seed * 7919 + self.step)
        skipped = 0
        trained_tokens = 0  # sample tokens through forward and backward (pads not counted)
        for _ in range(algo.epochs):
            order = torch.randperm(len(batch), generator=generator).tolist()
            for mini in _chunks(order, algo.mini_batches):
                norm = self.normalizer(batch, mini)  # counts every sample, trained or not
                micro_batches = self.micro_batches(batch, self.trained_samples(batch, mini))
                trained_tokens += sum(
                    len(batch.prompt_ids[i]) + len(batch.completion_ids[i]) for micro in micro_batches for i in micro
                )
                mini_loss = 0.0
                for i, micro in enumerate(micro_batches):
                    last = i == len(micro_batches) - 1
                    with nullcontext() if last else self.accelerator.no_sync(self.model):
                        loss, metrics = self.micro_step(batch, micro, norm)
                        self.accelerator.backward(loss)
                    mini_loss += metrics.pop("loss")  # shares of the mini-batch loss add up
                    for key, value in metrics.items():
                        sums[key] = sums.get(key, 0.0) + value
                        counts[key] = counts.get(key, 0) + 1
                sums["loss"] = sums.get("loss", 0.0) + mini_loss
                counts["loss"] = counts.get("loss", 0) + 1
                grad_norm = float(self.accelerator.clip_grad_norm_(self.model.parameters(), t.max_grad_norm))
                # The norm is computed on all-reduced gradients, so every process skips together.
                if math.isfinite(grad_norm):
                    self.optimizer.step()
                    self.bad_updates = 0
                    sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm
                    counts["grad_norm"] = counts.get("grad_norm", 0) + 1
                else:
                    self.bad_updates += 1
                    skipped += 1
                    log.warning(
                        "non-finite gradient norm at step %d: update skipped (%d in a row)",
                        self.step + 1,
                        self.bad_updates,
                    )
                    if self.bad_updates >= t.max_bad_updates:
                        raise RLTuneError(
                            f"{self.bad_updates} updates in a row had non-finite gradients (NaN/inf loss); stopping. "
                            "Lower train.lr, check the rewards for NaN, or use train.mixed_precision=no."
                        )
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        return {
            **{key: sums[key] / counts[key] for key in sums},
            "skipped_updates": float(skipped),
            "trained_tokens": float(trained_tokens),
        }

    def trained_samples(self, batch: RolloutBatch, indices: list[int]) -> list[int]:
        """The samples of `indices` the update runs on: those with a non-zero advantage when the objective
        gives the others exactly zero loss (train.skip_zero_advantage), else all. One is kept when none
        is left, so that every process still runs a backward pass (data-parallel gradients are reduced
        there). Sharded backends gather weights in every forward, so there all samples run."""
        skip = (
            self.cfg.train.skip_zero_advantage
            and getattr(self.objective, "zero_advantage_is_zero_loss", False)
            and not self.loss_terms
            and not self.sharded
        )
        if not skip:
            return indices
        adv = batch.advantages[indices]
        nonzero = (adv != 0) if adv.dim() == 1 else (adv != 0).any(-1)
        kept = [i for i, keep in zip(indices, nonzero.tolist()) if keep]
        return kept or indices[:1]

    def micro_batches(self, batch: RolloutBatch, indices: list[int]) -> list[list[int]]:
        """`indices` in forward/backward groups: longest first, so that sequences of similar length share
        rows; at most train.micro_batch_size sequences each and, with train.micro_batch_tokens, at most that
        many tokens in the model's input as collate lays it out (packed rows, or one padded row a sample;
        a sample longer than the budget runs alone)."""
        t = self.cfg.train
        groups: list[list[int]] = []
        layout: InputLayout | None = None  # the last group's
        budget = t.micro_batch_tokens
        for i in sorted(indices, key=lambda i: -(len(batch.prompt_ids[i]) + len(batch.completion_ids[i]))):
            prompt, completion = len(batch.prompt_ids[i]), len(batch.completion_ids[i])
            if (
                layout is None
                or len(groups[-1]) == t.micro_batch_size
                or (budget is not None and layout.tokens_with(prompt, completion) > budget)
            ):
                groups.append([])
                layout = InputLayout(self.packing, width=prompt + completion)
            groups[-1].append(i)
            layout.add(prompt, completion)
        return groups

    def normalizer(self, batch: RolloutBatch, indices: list[int]) -> Normalizer:
        counts = torch.tensor(
            [float(sum(len(batch.completion_ids[i]) for i in indices)), float(len(indices))],
            device=self.accelerator.device,
        )
        counts = self.accelerator.reduce(counts, reduction="sum") if self.world_size > 1 else counts
        constant = self.cfg.algorithm.loss_constant or self.cfg.rollout.max_tokens
        return Normalizer(
            tokens=counts[0].item(), sequences=counts[1].item(), constant=float(constant), world_size=self.world_size
        )

    def micro_step(self, batch: RolloutBatch, indices: list[int], norm: Normalizer):
        mb = self.collate(batch, indices)
        out = self.policy_forward(self.model, mb, with_entropy_grad=self.needs_entropy_grad)
        per_token, metrics = self.objective(mb, out)
        for coef, term in self.loss_terms:
            term_loss, term_metrics = term(mb, out)
            per_token = per_token + coef * term_loss
            metrics.update(term_metrics)
        loss = aggregate(per_token, mb.completion_mask, self.cfg.algorithm.loss_aggregation, norm)
        metrics["loss"] = loss.detach() / norm.world_size
        metrics["entropy"] = masked_mean(out.entropy.detach(), mb.completion_mask)
        return loss, {k: float(v) for k, v in metrics.items()}

    def collate(self, batch: RolloutBatch, indices: list[int]) -> MicroBatch:
        """The given samples as tensors: the model's input rows (packed, or one sample a row with left-padded
        prompts and right-padded completions) and right-padded [B, T] completion tensors."""
        pad = self.tokenizer.pad_token_id
        prompts = [batch.prompt_ids[i] for i in indices]
        completions = [batch.completion_ids[i] for i in indices]
        c_width = max(max(len(c) for c in completions), 1)
        device = self.accelerator.device
        if self.packing:
            ids, positions, starts = pack_rows([p + c for p, c in zip(prompts, completions)], pad)
            attention_mask, position_ids = None, torch.tensor(positions, device=device)
        else:
            p_width = max(len(p) for p in prompts)
            ids, attn, starts = [], [], []
            for row, (p, c) in enumerate(zip(prompts, completions)):
                p_pad, c_pad = p_width - len(p), c_width - len(c)
                ids.append([pad] * p_pad + p + c + [pad] * c_pad)
                attn.append([0] * p_pad + [1] * (len(p) + len(c)) + [0] * c_pad)
                starts.append((row, p_pad))
            attention_mask = torch.tensor(attn, device=device)
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        # The position before completion token t (prompt length - 1 + t into the sample) predicts it.
        rows = [row for (row, _), c in zip(starts, completions) for _ in c]
        cols = [start + len(p) - 1 + t for (_, start), p, c in zip(starts, prompts, completions) for t in range(len(c))]
        cmask, old = [], []
        for i, c in zip(indices, completions):
            cmask.append([1] * len(c) + [0] * (c_width - len(c)))
            old.append(batch.sampling_logprobs[i] + [0.0] * (c_width - len(c)))
        completion_mask = torch.tensor(cmask, device=device, dtype=torch.float32)
        adv = batch.advantages[indices].to(device)
        advantages = adv[:, None].expand(-1, c_width) if adv.dim() == 1 else adv[:, :c_width]
        ref = None
        if "ref_logprobs" in batch.extras:
            ref = torch.stack([batch.extras["ref_logprobs"][i][:c_width] for i in indices]).to(device)
        return MicroBatch(
            input_ids=torch.tensor(ids, device=device),
            attention_mask=attention_mask,
            completion_mask=completion_mask,
            sampling_logprobs=torch.tensor(old, device=device, dtype=torch.float32),
            advantages=advantages.float(),
            indices=list(indices),
            rollout=batch,
            ref_logprobs=ref,
            position_ids=position_ids,
            scored_at=(torch.tensor(rows, device=device, dtype=torch.long), torch.tensor(cols, device=device)),
        )

    def policy_forward(self, model: torch.nn.Module, mb: MicroBatch, with_entropy_grad: bool = False) -> PolicyOutput:
        """Logprobs and entropies of the completion tokens under `model`, at the sampling temperature. Only
        the positions in `mb.scored_at` go through the LM head's softmax; pads are not scored at all."""
        temperature = self.cfg.rollout.temperature
        rows, cols = mb.scored_at
        targets = mb.input_ids[rows, cols + 1]
        # No KV cache: scoring needs none, and transformers only reads packed rows' positions without one.
        inputs = dict(
            input_ids=mb.input_ids, attention_mask=mb.attention_mask, position_ids=mb.position_ids, use_cache=False
        )
        fused = self._fused_head(model)
        # Under mixed precision everything here multiplies in bf16/fp16: the accelerator wrapped the policy's
        # forward in autocast, but not the reference model's, nor the fused head, which runs outside a forward.
        with self.accelerator.autocast():
            if fused is not None:
                decoder, head = fused
                captured: list[torch.Tensor] = []
                hook = decoder.register_forward_hook(lambda _m, _a, out: captured.append(out[0]))
                try:
                    model(**inputs, logits_to_keep=1)  # the LM head on one position only; the hook has the rest
                finally:
                    hook.remove()
                logprobs, entropy = token_scores(
                    captured[0][rows, cols], head, targets, temperature, compile=bool(self.cfg.train.compile)
                )
            else:
                # The LM head skips the columns before the first scored one when the model lets it.
                first = int(cols.min()) if len(cols) else mb.input_ids.shape[1] - 1
                keep = {"logits_to_keep": mb.input_ids.shape[1] - first} if self.model_keeps_logits else {}
                logits = model(**inputs, **keep).logits[rows, cols - (first if keep else 0)].float() / temperature
                logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
                entropy = token_entropy(logits[None], with_grad=with_entropy_grad)[0]
        if not with_entropy_grad:
            entropy = entropy.detach()
        scored = mb.completion_mask.bool()
        zeros = mb.completion_mask.new_zeros(mb.completion_mask.shape)
        return PolicyOutput(
            logprobs=zeros.masked_scatter(scored, logprobs), entropy=zeros.masked_scatter(scored, entropy)
        )

    def _fused_head(self, model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
        """(decoder, linear LM head) when `model` can be scored by rltune.lm_head, else None."""
        if not (self.cfg.train.fused_lm_head and self.model_keeps_logits):
            return None
        if model is self.model and self.sharded:
            return None
        base = base_model(self.accelerator.unwrap_model(model))
        head = base.get_output_embeddings()
        config = base.config.get_text_config()
        rescaled = any(
            getattr(config, name, None) not in (None, 1.0)
            for name in (
                "final_logit_softcapping",
                "logit_scale",
                "logits_scaling",
                "lm_head_multiplier",
                "output_multiplier",
            )
        )
        if type(head) is not torch.nn.Linear or rescaled or not hasattr(base, "get_decoder"):
            return None
        return base.get_decoder(), head

    @torch.no_grad()
    def reference_logprobs(self, batch: RolloutBatch) -> list[torch.Tensor]:
        """Per-sample logprobs under the frozen reference, padded to the batch's longest completion."""
        width = max(len(c) for c in batch.completion_ids)
        out = torch.zeros(len(batch), width)
        for indices in self.micro_batches(batch, list(range(len(batch)))):
            mb = self.collate(batch, indices)
            if self.ref_model is not None:
                lp = self.policy_forward(self.ref_model, mb).logprobs
            else:
                with self.policy.disable_adapter():
                    lp = self.policy_forward(self.model, mb).logprobs
            out[indices, : lp.shape[1]] = lp.float().cpu()
        return list(out)

    # ----------------------------------------------------------------------------------------------
    # checkpoints

    def save(self) -> Path | None:
        self.accelerator.wait_for_everyone()
        rngs = [rng_state()]
        if self.world_size > 1:
            from accelerate.utils import gather_object

            rngs = gather_object(rngs)
        weights = None
        if self.sharded:
            # Sharded weights: every process takes part in gathering the full state dict.
            weights = self.accelerator.get_state_dict(self.model)
        if not self.accelerator.is_main_process:
            return None
        state: dict[str, Any] = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "data": self.data.state_dict(),
            "rng": rngs,
            "loss_terms": [term.state_dict() if hasattr(term, "state_dict") else None for _, term in self.loss_terms],
        }
        if self.updates_reference:
            state["reference"] = self.ref_model.state_dict()
        recipe_text = yaml.safe_dump(asdict(self.cfg), sort_keys=False)
        return save_checkpoint(
            self.output_dir,
            self.step,
            self.policy,
            self.tokenizer,
            state,
            recipe_text,
            self.cfg.train.keep_checkpoints,
            weights=weights,
        )

    def close(self) -> None:
        self.engine.close()


def _chunks(items: list[int], parts: int) -> list[list[int]]:
    """Split into `parts` nearly equal consecutive chunks."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        out.append(items[start:end])
        start = end
    return out
