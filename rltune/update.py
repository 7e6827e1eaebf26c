"""The policy update of one RL step: a scored, advantaged rollout batch becomes optimizer steps.

`PolicyUpdate` owns what the update needs: the policy (prepared by accelerate), its optimizer and
scheduler, the objective, the loss terms and the reference model. `update` runs `epochs` passes over
the batch, each split into `mini_batches` optimizer steps; every mini-batch runs as micro-batches
(`micro_batches`: by count, and by token budget) laid out as model inputs by `collate` (packed rows or
padded rows), scored by `policy_forward` (the fused LM head, or the plain one), turned into per-token
losses by the objective (times the importance weights of algorithm.is_correction) plus the loss terms,
and aggregated once (`rltune.losses.aggregate`) under the mini-batch's normaliser.

Before the first optimizer step the sampler/trainer mismatch is measured (`rltune.mismatch`): from a
no-grad pass over the whole batch with algorithm.old_logprobs=recompute (whose logprobs then are the old
policy), else from the first mini-batch's own forwards; train.sync_check stops the run there when the
engine's logprobs are not the policy's.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import get_scheduler

from rltune.batch import InputLayout, MicroBatch, PolicyOutput, RolloutBatch, pack_rows
from rltune.config import LossTermSpec, RecipeConfig
from rltune.distributed import any_process, full_optimizer_state, load_optimizer_state, loading_whole
from rltune.errors import ConfigError, RLTuneError
from rltune.guards import CollapseGuard, check_optimizer_state, weight_norm
from rltune.lm_head import token_scores
from rltune.loss_terms import LOSS_TERMS
from rltune.losses import Normalizer, aggregate, masked_mean, token_entropy
from rltune.mismatch import SYNC_TOLERANCE, check_sync, importance_weights, mismatch_metrics
from rltune.models import (
    base_model,
    compile_decoder_layers,
    keeps_logits,
    load_policy,
    load_reference,
    reads_packed_rows,
)
from rltune.objectives import OBJECTIVES

log = logging.getLogger(__name__)


class PolicyUpdate:
    def __init__(
        self,
        cfg: RecipeConfig,
        accelerator: Accelerator,
        pad_token_id: int,
        checkpoint: Path | None = None,
        sharded: bool = False,
    ):
        """The objective and loss terms from the recipe (checked before any model loads), then the policy
        (from `checkpoint` when resuming), the reference, AdamW and the scheduler, prepared by `accelerator`."""
        self.cfg = cfg
        self.accelerator = accelerator
        self.pad_token_id = pad_token_id
        self.sharded = sharded
        self.world_size = accelerator.num_processes
        t = cfg.train
        if sharded and t.micro_batch_tokens is not None:
            raise RLTuneError(
                "train.micro_batch_tokens is not supported under FSDP/DeepSpeed: every process must run the same "
                "number of forwards. Remove it and set train.micro_batch_size."
            )
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
            with loading_whole():  # the reference is whole on every process, never sharded
                self.ref_model = load_reference(cfg.model).to(self.accelerator.device)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=t.lr,
            weight_decay=t.weight_decay,
            betas=tuple(t.betas),
            # Under FSDP/DeepSpeed the optimizer steps sharded parameters; torch picks its kernels there.
            fused=t.fused_optimizer and not sharded,
        )
        updates_per_step = cfg.algorithm.epochs * cfg.algorithm.mini_batches
        # transformers' "constant" ignores num_warmup_steps; "constant_with_warmup" is the one that honours it.
        schedule = "constant_with_warmup" if t.lr_scheduler == "constant" and t.warmup_steps else t.lr_scheduler
        scheduler = get_scheduler(
            schedule,
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
        self.bad_updates = 0
        self.collapse = CollapseGuard(model.config.vocab_size, t.max_bad_updates)
        self.initial_weight_norm = self.last_weight_norm = weight_norm(model.parameters())
        self.sync_tolerance = sync_tolerance(cfg) if t.sync_check else None

    @property
    def policy(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the update: optimizer, scheduler, the weight norm the run started with,
        the loss terms' states, and the reference when a loss term moves it (the policy's weights are saved
        as the model itself). Sharded, the optimizer state is gathered whole: every process must call this."""
        state: dict[str, Any] = {
            "optimizer": full_optimizer_state(self.optimizer) if self.sharded else self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "initial_weight_norm": self.initial_weight_norm,
            "loss_terms": [term.state_dict() if hasattr(term, "state_dict") else None for _, term in self.loss_terms],
        }
        if self.updates_reference:
            state["reference"] = self.ref_model.state_dict()
        return state

    def apply_recipe_hyperparameters(self) -> None:
        """After a resume: the recipe's lr, betas and weight decay, not those saved in the optimizer and
        scheduler state (a changed train.lr would otherwise be ignored while recipe.yaml records it). The
        schedule's progress is kept: the lr is rescaled by new / saved base lr."""
        t = self.cfg.train
        scheduler = getattr(self.scheduler, "scheduler", self.scheduler)  # accelerate wraps it
        ratio = t.lr / scheduler.base_lrs[0]
        scheduler.base_lrs = [base * ratio for base in scheduler.base_lrs]
        for group in self.optimizer.param_groups:
            group["lr"] *= ratio
            if "initial_lr" in group:
                group["initial_lr"] *= ratio
            group["betas"] = tuple(t.betas)
            group["weight_decay"] = t.weight_decay

    def check_weights(self, step: int) -> None:
        """Stop at once when an optimizer step left NaN/inf weights: nothing after it could be trusted."""
        norm = weight_norm(self.model.parameters())
        if self.sharded and any_process(not math.isfinite(norm)):  # each process holds a shard: all stop together
            norm = math.nan
        if not math.isfinite(norm):
            raise RLTuneError(
                f"the weights became non-finite (NaN/inf) in the update of step {step + 1}, from a finite gradient: "
                "the learning rate is far too large for this model (train.lr). Nothing of this step was saved; "
                "lower train.lr and resume from the last checkpoint (train.resume_from)"
            )
        growth = norm / max(self.initial_weight_norm, 1e-12)
        if growth > self.cfg.train.max_weight_growth:
            raise RLTuneError(
                f"the weights' norm grew from {self.initial_weight_norm:.4g} to {norm:.4g} (x{growth:.1f}, over "
                f"train.max_weight_growth={self.cfg.train.max_weight_growth:g}) by the update of step {step + 1}: the "
                "updates are far too large (train.lr) and have wrecked the model. Nothing of this step was saved; "
                "lower train.lr and resume from the last checkpoint (train.resume_from)"
            )
        self.last_weight_norm = norm

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        check_optimizer_state(self.optimizer, state["optimizer"], source)
        if self.sharded:
            load_optimizer_state(self.optimizer, state["optimizer"])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.apply_recipe_hyperparameters()
        # The growth guard measures from the norm the run started with, not the resumed one: a slow drift
        # split over several resumes is still caught (checkpoints of older rltune lack it).
        self.initial_weight_norm = state.get("initial_weight_norm", self.initial_weight_norm)
        for (_, term), term_state in zip(self.loss_terms, state.get("loss_terms", [])):
            if term_state is not None:
                term.load_state_dict(term_state)
        if "reference" in state:
            self.ref_model.load_state_dict(state["reference"])

    def update(self, batch: RolloutBatch, step: int) -> dict[str, float]:
        """Optimizer steps on `batch` (advantages set) at RL step `step` (0-based); the mean of each metric."""
        algo, t = self.cfg.algorithm, self.cfg.train
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        # The sampler/trainer mismatch, from the recompute pass or else from the first mini-batch's forwards
        # (the policy has not moved yet there): logged, and checked against the sync tolerance.
        measured: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        # Samples of older weights (train.async_steps) differ from the trainer's by the updates in between.
        current = batch.policy_versions is None or min(batch.policy_versions) == step
        if algo.old_logprobs == "recompute":
            prepared = self.score_old_policy(batch)
            if current:
                self.check_sync(prepared, step)
        else:
            measured, prepared = [], {}
        generator = torch.Generator().manual_seed(t.seed * 7919 + step)
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
                        loss, metrics = self.micro_step(batch, micro, norm, measure=measured)
                        self.accelerator.backward(loss)
                    mini_loss += metrics.pop("loss")  # shares of the mini-batch loss add up
                    for key, value in metrics.items():
                        sums[key] = sums.get(key, 0.0) + value
                        counts[key] = counts.get(key, 0) + 1
                sums["loss"] = sums.get("loss", 0.0) + mini_loss
                counts["loss"] = counts.get("loss", 0) + 1
                if measured is not None:
                    prepared = mismatch_metrics(measured)
                    if current:
                        self.check_sync(prepared, step)
                    measured = None
                # max_grad_norm 0: no clipping (an infinite bound only measures the norm)
                bound = t.max_grad_norm or math.inf
                grad_norm = float(self.accelerator.clip_grad_norm_(self.model.parameters(), bound))
                # The norm is computed on all-reduced gradients, so every process skips together.
                if math.isfinite(grad_norm):
                    self.optimizer.step()
                    self.check_weights(step)
                    if grad_norm > 0:  # an update without signal (all groups flat) proves nothing either way
                        self.bad_updates = 0
                    sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm
                    counts["grad_norm"] = counts.get("grad_norm", 0) + 1
                else:
                    self.bad_updates += 1
                    skipped += 1
                    log.warning(
                        "non-finite gradient norm at step %d: update skipped (%d in a row)",
                        step + 1,
                        self.bad_updates,
                    )
                    if self.bad_updates >= t.max_bad_updates:
                        raise RLTuneError(
                            f"{self.bad_updates} updates in a row had non-finite gradients (NaN/inf loss); stopping. "
                            "Lower train.lr, check the rewards for NaN, or use train.mixed_precision=no."
                        )
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        metrics = {key: sums[key] / counts[key] for key in sums}
        self.collapse.check(step + 1, metrics.get("entropy"))
        return {
            **metrics,
            **prepared,
            "weight_norm": self.last_weight_norm,
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
            [float(sum(batch.model_token_count(i) for i in indices)), float(len(indices))],
            device=self.accelerator.device,
        )
        counts = self.accelerator.reduce(counts, reduction="sum") if self.world_size > 1 else counts
        constant = self.cfg.algorithm.loss_constant or self.cfg.rollout.max_tokens
        return Normalizer(
            tokens=counts[0].item(), sequences=counts[1].item(), constant=float(constant), world_size=self.world_size
        )

    def micro_step(self, batch: RolloutBatch, indices: list[int], norm: Normalizer, measure: list | None = None):
        """This micro-batch's share of the mini-batch loss (not yet backpropagated) and its metrics; with
        `measure`, appends (trainer logprobs, sampler logprobs, mask) to it for the mismatch metrics."""
        mb = self.collate(batch, indices)
        out = self.policy_forward(self.model, mb, with_entropy_grad=self.needs_entropy_grad)
        if measure is not None:
            measure.append((out.logprobs.detach(), mb.sampling_logprobs, mb.completion_mask))
        per_token, metrics = self.objective(mb, out)
        if mb.is_weights is not None:  # the importance weight corrects the objective, not the loss terms
            per_token = per_token * mb.is_weights
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
        pad = self.pad_token_id
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
        # The position before completion token t (prompt length - 1 + t into the sample) predicts it. Only the
        # model's own tokens are scored: an environment's (a tool's output) are input, never a target.
        masks = [batch.model_mask(i) for i in indices]
        rows = [row for (row, _), m in zip(starts, masks) for t in range(len(m)) if m[t]]
        cols = [
            start + len(p) - 1 + t for (_, start), p, m in zip(starts, prompts, masks) for t in range(len(m)) if m[t]
        ]
        cmask, old = [], []
        for i, c, m in zip(indices, completions, masks):
            cmask.append(m + [0] * (c_width - len(c)))
            old.append(batch.sampling_logprobs[i] + [0.0] * (c_width - len(c)))
        completion_mask = torch.tensor(cmask, device=device, dtype=torch.float32)
        adv = batch.advantages[indices].to(device)
        advantages = adv[:, None].expand(-1, c_width) if adv.dim() == 1 else adv[:, :c_width]
        per_sample = {  # [N, W] tensors of the whole batch, from the passes before the update
            key: torch.stack([batch.extras[key][i][:c_width] for i in indices]).to(device)
            for key in ("ref_logprobs", "old_logprobs", "is_weights")
            if key in batch.extras
        }
        return MicroBatch(
            input_ids=torch.tensor(ids, device=device),
            attention_mask=attention_mask,
            completion_mask=completion_mask,
            sampling_logprobs=torch.tensor(old, device=device, dtype=torch.float32),
            advantages=advantages.float(),
            indices=list(indices),
            rollout=batch,
            ref_logprobs=per_sample.get("ref_logprobs"),
            old_logprobs=per_sample.get("old_logprobs"),
            is_weights=per_sample.get("is_weights"),
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
    def batch_logprobs(self, batch: RolloutBatch, reference: bool = False) -> torch.Tensor:
        """[N, W] logprobs of every sample under the policy (or the frozen reference), zero-padded to the
        batch's longest completion, from no-grad forwards."""
        width = max(len(c) for c in batch.completion_ids)
        out = torch.zeros(len(batch), width)
        for indices in self.micro_batches(batch, list(range(len(batch)))):
            mb = self.collate(batch, indices)
            if not reference:
                lp = self.policy_forward(self.model, mb).logprobs
            elif self.ref_model is not None:
                lp = self.policy_forward(self.ref_model, mb).logprobs
            else:
                with self.policy.disable_adapter():
                    lp = self.policy_forward(self.model, mb).logprobs
            out[indices, : lp.shape[1]] = lp.float().cpu()
        return out

    def reference_logprobs(self, batch: RolloutBatch) -> list[torch.Tensor]:
        """Per-sample logprobs under the frozen reference, padded to the batch's longest completion."""
        return list(self.batch_logprobs(batch, reference=True))

    def score_old_policy(self, batch: RolloutBatch) -> dict[str, float]:
        """algorithm.old_logprobs=recompute: the trainer's own logprobs before the update become the old
        policy, and with algorithm.is_correction the importance weights against the sampler's; returns the
        mismatch (and weight) metrics over the whole batch."""
        old = self.batch_logprobs(batch)
        sampler = torch.zeros_like(old)
        mask = torch.zeros_like(old)
        for i, lp in enumerate(batch.sampling_logprobs):
            sampler[i, : len(lp)] = torch.tensor(lp)
            mask[i, : len(lp)] = torch.tensor(batch.model_mask(i), dtype=mask.dtype)
        batch.extras["old_logprobs"] = list(old)
        metrics = mismatch_metrics([(old, sampler, mask)])
        algo = self.cfg.algorithm
        if algo.is_correction != "none":
            weights, weight_metrics = importance_weights(old, sampler, mask, algo.is_correction, algo.is_cap)
            batch.extras["is_weights"] = list(weights)
            metrics.update(weight_metrics)
        return metrics

    def check_sync(self, mismatch: dict[str, float], step: int) -> None:
        """train.sync_check: the engine's logprobs of its samples must be the trainer's, up to the kernels."""
        if self.sync_tolerance is None:
            return
        drift = torch.tensor(mismatch["mismatch/log_ratio_abs_mean"], device=self.accelerator.device)
        if self.world_size > 1:  # every process decides on the same number, so all stop together
            drift = self.accelerator.reduce(drift, reduction="mean")
        check_sync(float(drift), self.sync_tolerance, self.cfg.rollout.engine, step)


def sync_tolerance(cfg: RecipeConfig) -> float:
    """train.sync_check_tolerance, or its default by the precision the trainer and the engine compute in."""
    t, vllm_dtype = cfg.train, cfg.rollout.vllm.dtype
    half = (
        t.mixed_precision in ("bf16", "fp16")
        or cfg.model.dtype in ("bfloat16", "float16")
        or (
            cfg.rollout.engine.startswith("vllm")
            and (vllm_dtype in ("bfloat16", "float16") or (vllm_dtype == "auto" and torch.cuda.is_available()))
        )
    )
    return t.sync_check_tolerance or SYNC_TOLERANCE["half" if half else "float32"]


def _chunks(items: list[int], parts: int) -> list[list[int]]:
    """Split into `parts` nearly equal consecutive chunks."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        out.append(items[start:end])
        start = end
    return out
