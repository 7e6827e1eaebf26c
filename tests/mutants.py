"""`make mutants`: switch features off or flip their signs, one at a time, and check that a test fails.

Each mutant replaces one exact piece of the project's code (it must occur exactly once, so the list
breaks loudly when the code moves) and names the tests that must catch it. The mutants run on a copy
of the working tree (tracked and untracked, not ignored files) put first on the import path, so the
checkout itself is never modified. A mutant survives when its tests all pass; any survivor, or a test
run that errors instead of failing, makes the script exit 1.

    python tests/mutants.py                 # every mutant
    python tests/mutants.py --only NAME...  # some of them
    python tests/mutants.py --list
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORMULAS = "tests/test_update_formulas.py"
ENTRY_POINTS = "tests/test_day_one.py::test_plugins_resolve_from_the_working_folder_under_every_entry_point"


@dataclass
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: list[str]


def formula_rows(*settings: str) -> list[str]:
    return [f"{FORMULAS}::test_update_gradient_follows_the_formulas[{s}]" for s in settings]


ASYNC = "tests/test_async.py"

MUTANTS = [
    # --- reliability round 3 -------------------------------------------------------------------------
    Mutant(
        "a reward failing on every call is scored 0 and trained on (no max_error_fraction stop)",
        "rltune/reward_pipeline.py",
        "        if not failed or len(failed) / len(results) <= self.max_error_fraction:\n",
        "        if True:\n",
        ["tests/test_trl_rewards.py::test_a_reward_whose_calls_all_fail_stops_with_its_traceback"],
    ),
    Mutant(
        "a conversational prompt written as the text of its message list, not through the chat template",
        "rltune/data.py",
        '        if "messages" in row:  # conversational: the chat template applies to the messages as they are\n',
        "        if False:\n",
        ["tests/test_trl_rewards.py::test_a_conversational_prompt_only_dataset_trains_with_trl_rewards"],
    ),
    Mutant(
        "trl rewards given completions as plain strings for a conversational dataset",
        "rltune/reward_pipeline.py",
        "    if conversational:\n        completions = ",
        "    if False:\n        completions = ",
        ["tests/test_trl_rewards.py::test_trl_reward_functions_score_as_trl_scores_them[accuracy]"],
    ),
    Mutant(
        "a reward's None counted as 0 in its logged mean",
        "rltune/metrics.py",
        '        metrics[f"reward/{name}"] = values.nanmean().item()\n',
        '        metrics[f"reward/{name}"] = values.nan_to_num(0.0).mean().item()\n',
        ["tests/test_trl_rewards.py::test_trl_accuracy_gives_known_scores_and_none_is_left_out_of_the_mean"],
    ),
    Mutant(
        "the reward model reads the completion without its prompt",
        "rewards/reward_model.py",
        "        return [p + c for p, c in zip(prompts, completions)]\n",
        "        return [c for p, c in zip(prompts, completions)]\n",
        ["tests/test_trl_rewards.py::test_a_sequence_classification_reward_model_scores_as_its_plain_forward"],
    ),
    Mutant(
        "train.warmup_steps ignored with the constant scheduler (transformers' 'constant' has no warmup)",
        "rltune/update.py",
        '        schedule = "constant_with_warmup" if t.lr_scheduler == "constant" and t.warmup_steps '
        "else t.lr_scheduler\n",
        "        schedule = t.lr_scheduler\n",
        ["tests/test_lr_schedule.py::test_warmup_is_counted_in_rl_steps_with_every_scheduler"],
    ),
    Mutant(
        "a reward class whose instances cannot be called is accepted at load",
        "rltune/reward_pipeline.py",
        "                if not callable(fn):\n",
        "                if False:\n",
        ["tests/test_reward_pipeline.py::test_a_reward_class_whose_instances_cannot_be_called_is_refused_at_load"],
    ),
    Mutant(
        "a reward model with several labels is scored by its first logit, silently",
        "rewards/reward_model.py",
        "        if self.model.config.num_labels != 1:  # which logit would be the reward is anybody's guess\n",
        "        if False:\n",
        ["tests/test_trl_rewards.py::test_a_sequence_classification_reward_model_scores_as_its_plain_forward"],
    ),
    Mutant(
        "the LLM judge's cache is never read (every score asks the endpoint again)",
        "rewards/llm_judge.py",
        "            if prompt in self.cache:\n",
        "            if False:\n",
        ["tests/test_vllm_server.py::test_an_llm_judge_asks_a_served_model_and_reads_its_verdicts"],
    ),
    Mutant(
        "rltune eval starts its engine even when every answer is cached",
        "rltune/cli.py",
        "    engine = OnFirstUse(start_engine, context_length(model_path))",
        "    engine = start_engine()",
        ["tests/test_cli.py::test_an_eval_answered_from_its_cache_starts_no_engine"],
    ),
    Mutant(
        "FSDP2: the engine is sent each process's local shard instead of the gathered weights",
        "rltune/rollout/vllm_engine.py",
        "{name: full_tensor(tensor.detach()) for name, tensor in model.state_dict()",
        "{name: getattr(tensor, 'to_local', tensor.detach)() for name, tensor in model.state_dict()",
        ["tests/test_scale.py::test_fsdp2_with_vllm_syncs_gathered_weights_and_its_checkpoint_exports_and_evaluates"],
    ),
    Mutant(
        "FSDP2: the checkpoint keeps rank 0's shard of the optimizer state only",
        "rltune/update.py",
        "full_optimizer_state(self.optimizer) if self.sharded else self.optimizer.state_dict()",
        "self.optimizer.state_dict()",
        [
            "tests/test_scale.py::test_fsdp2_follows_one_process_with_a_moving_kl_anchor_and_recompute_then_resumes_bit_exactly"
        ],
    ),
    Mutant(
        "several processes: every process trains on the first process's share of the prompts",
        "rltune/rollout/stage.py",
        "        ids, rows = ids[self.rank :: self.world_size], rows[self.rank :: self.world_size]\n",
        "        ids, rows = ids[0 :: self.world_size], rows[0 :: self.world_size]\n",
        [
            "tests/test_scale.py::test_fsdp2_follows_one_process_with_a_moving_kl_anchor_and_recompute_then_resumes_bit_exactly"
        ],
    ),
    Mutant(
        "FSDP2: the reference model loaded under fsdp_cpu_ram_efficient_loading (random weights off rank 0)",
        "rltune/update.py",
        "            with loading_whole():  # the reference is whole on every process, never sharded\n",
        "            with nullcontext():\n",
        [
            "tests/test_scale.py::test_fsdp2_follows_one_process_with_a_moving_kl_anchor_and_recompute_then_resumes_bit_exactly"
        ],
    ),
    Mutant(
        "FSDP2: the hf engine stops decoding when this process's rows end (the others wait forever)",
        "rltune/rollout/hf_engine.py",
        "                if not (any_process(decoding) if self.lockstep else decoding):\n",
        "                if not decoding:\n",
        [
            "tests/test_scale.py::test_fsdp2_follows_one_process_with_a_moving_kl_anchor_and_recompute_then_resumes_bit_exactly"
        ],
    ),
    Mutant(
        "output lock taken without its flock (two runs starting at once both get it)",
        "rltune/checkpoint.py",
        "                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n",
        "                pass\n",
        ["tests/test_checkpoint.py::test_of_many_processes_taking_the_lock_at_once_exactly_one_gets_it"],
    ),
    Mutant(
        "LoRA resume reads the model config from the checkpoint (which holds adapters only)",
        "rltune/trainer.py",
        "        config_path = str(checkpoint) if checkpoint and not cfg.model.lora else cfg.model.path\n",
        "        config_path = str(checkpoint or cfg.model.path)\n",
        ["tests/test_trainer.py::test_resume_continues_exactly[hf-lora]"],
    ),
    Mutant(
        "LoRA adapters merged into whatever model sits at their base path",
        "rltune/export.py",
        "    if trained_on and now != trained_on:\n",
        "    if False:\n",
        ["tests/test_export.py::test_lora_adapters_refuse_a_base_model_replaced_at_their_path"],
    ),
    Mutant(
        "a full disk while saving shows torch's 'unexpected pos' instead of the free space",
        "rltune/checkpoint.py",
        "        if not disk_full(exc, output_dir, need):\n",
        "        if not isinstance(exc, OSError):\n",
        ["tests/test_checkpoint.py::test_a_full_disk_while_saving_says_so_and_leaves_no_partial_checkpoint"],
    ),
    Mutant(
        "a huge question tokenized before the length filter drops it",
        "rltune/data.py",
        "            if max_chars is not None and isinstance(question, str) and len(question) > max_chars:\n",
        "            if False:\n",
        ["tests/test_data.py::test_a_50_mb_question_is_dropped_before_it_is_tokenized"],
    ),
    Mutant(
        "secrets from ${env:NAME} not redacted from messages",
        "rltune/config.py",
        "        secrets.register(name, os.environ[name])\n",
        "        pass\n",
        ["tests/test_secrets.py::test_a_failing_run_never_shows_the_secret"],
    ),
    Mutant(
        "export copies a checkpoint without verifying its manifest",
        "rltune/export.py",
        "    verify_checkpoint(checkpoint)\n",
        "    pass\n",
        ["tests/test_export.py::test_export_refuses_a_damaged_checkpoint_and_writes_a_manifest_of_its_own"],
    ),
    # --- defaults, limits, wiring, variants, registries (issue: tests that bite, round 2) ----------------
    Mutant(
        "weight-growth reference reset by every resume",
        "rltune/update.py",
        '        self.initial_weight_norm = state.get("initial_weight_norm", self.initial_weight_norm)\n',
        "        pass\n",
        ["tests/test_limits.py::test_the_growth_reference_survives_a_resume"],
    ),
    Mutant(
        "sequence mask's default cap 2 instead of 3",
        "rltune/mismatch.py",
        '"seq_mask": 3.0}',
        '"seq_mask": 2.0}',
        ["tests/test_limits.py::test_sequence_mask_keeps_one_third_to_three_by_default"],
    ),
    Mutant(
        "hedge gap 20 characters instead of 16",
        "eval/grading.py",
        "_HEDGE_GAP = 16",
        "_HEDGE_GAP = 20",
        ["tests/test_variants.py::test_the_hedge_gap_is_sixteen_characters"],
    ),
    Mutant(
        "collapse alarm compared with the previous eval",
        "eval/hook.py",
        "            if self.first is None:\n                self.first = results\n",
        "            self.first = results\n",
        ["tests/test_metrics.py::test_periodic_eval_alarms_against_the_first_eval_not_the_previous"],
    ),
    Mutant(
        "resume refuses keys that only start like a fixed one",
        "rltune/checkpoint.py",
        'return any(key == fixed or key.startswith(fixed + ".") for fixed in FIXED_ON_RESUME)',
        "return any(key.startswith(fixed) for fixed in FIXED_ON_RESUME)",
        ["tests/test_wiring.py::test_resume_refusal_is_by_whole_key_not_by_prefix"],
    ),
    Mutant(
        "reward_options.on_error not passed to the reward pipeline",
        "rltune/trainer.py",
        "RewardPipeline(cfg.rewards, options.on_error, options.timeout_s, options.max_error_fraction)",
        'RewardPipeline(cfg.rewards, "zero", options.timeout_s, options.max_error_fraction)',
        ["tests/test_wiring.py::test_reward_options_from_the_recipe_reach_the_reward_pipeline"],
    ),
    Mutant(
        "a plug-in may take a registered name",
        "rltune/registry.py",
        "if held is not None and _qualified_name(held) != _qualified_name(obj):",
        "if False:",
        ["tests/test_registries.py"],
    ),
    Mutant(
        "a timed-out grader worker is replaced but left running",
        "eval/grading.py",
        "    def _replace(self, worker: _Worker) -> None:\n        worker.kill()\n",
        "    def _replace(self, worker: _Worker) -> None:\n",
        ["tests/test_grading.py::test_hard_timeout_kills_and_replaces_the_worker"],
    ),
    Mutant(
        "a grader worker that died mid-check is not counted as an error",
        "eval/grading.py",
        '            self.errors += 1\n            log.warning("grading worker died',
        '            log.warning("grading worker died',
        ["tests/test_grading.py::test_a_worker_that_dies_mid_check_counts_wrong_and_is_replaced"],
    ),
    # --- asynchronous rollouts -----------------------------------------------------------------------
    Mutant(
        "async batches sampled from the newest weights instead of k updates back",
        "rltune/async_rollouts.py",
        "return max(self.first, step - self.k)",
        "return max(self.first, step - 1)",
        [f"{ASYNC}::test_each_batch_is_sampled_by_the_weights_k_updates_old"],
    ),
    Mutant(
        "in-flight batches not checkpointed",
        "rltune/trainer.py",
        'state["in_flight"] = [produced_state(p) for p in in_flight]',
        'state["in_flight"] = []',
        [f"{ASYNC}::test_async_runs_reproduce_and_resume_exactly"],
    ),
    Mutant(
        "engine not reloaded with the batch's weights after an eval",
        "rltune/async_rollouts.py",
        "                    self.engine_version = None\n",
        "                    pass\n",
        [f"{ASYNC}::test_each_batch_is_sampled_by_the_weights_k_updates_old"],
    ),
    Mutant(
        "sync check applied to batches of older weights",
        "rltune/update.py",
        "current = batch.policy_versions is None or min(batch.policy_versions) == step",
        "current = True",
        [f"{ASYNC}::test_async_recompute_measures_the_policy_lag_and_weights_it"],
    ),
    # --- reliability round 2 -------------------------------------------------------------------------
    Mutant(
        "checkpoint manifest not verified",
        "rltune/checkpoint.py",
        "    verify_checkpoint(path)\n    try:",
        "    try:",
        ["tests/test_reliability.py::test_changed_bytes_in_a_checkpoint_are_found_at_resume"],
    ),
    Mutant(
        "weight growth unguarded",
        "rltune/update.py",
        "if growth > self.cfg.train.max_weight_growth:",
        "if False:",
        ["tests/test_reliability.py::test_a_diverging_run_stops_before_saving_wrecked_weights"],
    ),
    Mutant(
        "resume keeps the saved learning rate",
        "rltune/update.py",
        "        self.apply_recipe_hyperparameters()",
        "        pass",
        ["tests/test_reliability.py::test_resume_applies_or_refuses_recipe_changes"],
    ),
    Mutant(
        "output_dir never locked",
        "rltune/trainer.py",
        "            self.lock.acquire()",
        "            pass",
        ["tests/test_reliability.py::test_a_second_run_in_the_same_output_dir_is_refused"],
    ),
    Mutant(
        "stop signals not handled",
        "rltune/signals.py",
        "                self._previous[signum] = signal.signal(signum, self._handle)",
        "                pass",
        ["tests/test_reliability.py::test_a_signal_checkpoints_the_step_in_progress_and_resume_is_exact[hf-15]"],
    ),
    Mutant(
        "sync rewards awaited one at a time",
        "rltune/reward_pipeline.py",
        "            event.wait(max(0.0, deadline - time.monotonic()))",
        "            event.wait(self.timeout_s)",
        ["tests/test_reliability.py::test_hung_sync_rewards_time_out_together_and_never_keep_the_process_alive"],
    ),
    # --- day-one conveniences -----------------------------------------------------------------------
    Mutant(
        "plug-ins not looked up in the working folder",
        "rltune/registry.py",
        "            sys.path.append(cwd)",
        "            pass",
        [f"{ENTRY_POINTS}[console script]"],
    ),
    Mutant(
        "completions of other processes not gathered",
        "rltune/metrics.py",
        "            rows = gather_object(rows)",
        "            rows = list(rows)",
        [f"{ENTRY_POINTS}[accelerate launch]"],
    ),
    Mutant(
        "libraries not quieted",
        "rltune/cli.py",
        "        quiet_libraries()",
        "        pass",
        ["tests/test_day_one.py::test_console_is_quiet_with_a_preflight_block_and_one_line_per_step"],
    ),
    Mutant(
        "no model card in checkpoints",
        "rltune/checkpoint.py",
        '        (tmp / "README.md").write_text(card)',
        "        pass",
        ["tests/test_day_one.py::test_checkpoints_carry_a_model_card_and_push_to_the_hub"],
    ),
    Mutant(
        "trainer state pushed to the Hub",
        "rltune/export.py",
        "            ignore_patterns=[STATE_FILE],",
        "            ignore_patterns=[],",
        ["tests/test_day_one.py::test_checkpoints_carry_a_model_card_and_push_to_the_hub"],
    ),
    # --- the trainer honours every algorithm setting ------------------------------------------------
    Mutant(
        "advantage always grpo",
        "rltune/trainer.py",
        "ADVANTAGES.get(cfg.algorithm.advantage)",
        'ADVANTAGES.get("grpo")',
        formula_rows("dr_grpo", "rloo"),
    ),
    Mutant(
        "grpo without std division",
        "rltune/advantages.py",
        "adv[idx] = ((r - r.mean()) / (r.std() + STD_EPS)).to(adv.dtype)",
        "adv[idx] = (r - r.mean()).to(adv.dtype)",
        formula_rows("default"),
    ),
    Mutant(
        "rloo baseline includes the sample",
        "rltune/advantages.py",
        "adv[idx] = (r - (r.sum() - r) / (n - 1)).to(adv.dtype)",
        "adv[idx] = (r - r.sum() / n).to(adv.dtype)",
        formula_rows("rloo"),
    ),
    Mutant(
        "clip bounds swapped",
        "rltune/objectives/clipped.py",
        "self.clip_low = algorithm.clip_low\n        self.clip_high = algorithm.clip_high",
        "self.clip_low = algorithm.clip_high\n        self.clip_high = algorithm.clip_low",
        formula_rows("clip_tight_high", "clip_tight_low"),
    ),
    Mutant(
        "dual clip ignored",
        "rltune/objectives/clipped.py",
        "    if dual_clip is not None:\n        capped",
        "    if False:\n        capped",
        formula_rows("dual_clip"),
    ),
    Mutant(
        "aggregation always token_mean",
        "rltune/update.py",
        "loss = aggregate(per_token, mb.completion_mask, self.cfg.algorithm.loss_aggregation, norm)",
        'loss = aggregate(per_token, mb.completion_mask, "token_mean", norm)',
        formula_rows("seq_mean_token_mean", "constant", "sum"),
    ),
    Mutant(
        "seq_mean_token_mean without the per-sequence mean",
        "rltune/losses.py",
        "per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)",
        "per_seq = (per_token * mask).sum(-1)",
        formula_rows("seq_mean_token_mean"),
    ),
    Mutant(
        "loss_constant ignored",
        "rltune/update.py",
        "constant = self.cfg.algorithm.loss_constant or self.cfg.rollout.max_tokens",
        "constant = self.cfg.rollout.max_tokens",
        formula_rows("constant", "sum"),
    ),
    Mutant(
        "constant divisor defaults to 1000 instead of max_tokens",
        "rltune/update.py",
        "constant = self.cfg.algorithm.loss_constant or self.cfg.rollout.max_tokens",
        "constant = self.cfg.algorithm.loss_constant or 1000",
        formula_rows("constant_default_divisor"),
    ),
    Mutant(
        "sampling temperature ignored by the trainer",
        "rltune/update.py",
        "temperature = self.cfg.rollout.temperature\n        rows, cols",
        "temperature = 1.0\n        rows, cols",
        formula_rows("default"),
    ),
    Mutant(
        "loss terms subtracted (every term's sign flipped)",
        "rltune/update.py",
        "per_token = per_token + coef * term_loss",
        "per_token = per_token - coef * term_loss",
        formula_rows("kl", "entropy_bonus", "tea"),
    ),
    Mutant(
        "loss term coefficient ignored",
        "rltune/update.py",
        "per_token = per_token + coef * term_loss",
        "per_token = per_token + term_loss",
        formula_rows("kl", "entropy_bonus", "tea"),
    ),
    Mutant(
        "KL sign flipped",
        "rltune/loss_terms/kl.py",
        'return kl, {"kl"',
        'return -kl, {"kl"',
        formula_rows("kl"),
    ),
    Mutant(
        "KL estimator k1 instead of k3",
        "rltune/loss_terms/kl.py",
        "return (torch.exp(delta) - delta - 1.0).clamp(max=KL_CLAMP)",
        "return -delta",
        formula_rows("kl"),
    ),
    Mutant(
        "entropy bonus sign flipped",
        "rltune/loss_terms/entropy.py",
        "return -self.scale * out.entropy",
        "return self.scale * out.entropy",
        formula_rows("entropy_bonus"),
    ),
    Mutant(
        "adaptive entropy moves the wrong way",
        "rltune/loss_terms/entropy.py",
        'gap = self.target - metrics["entropy"]',
        'gap = metrics["entropy"] - self.target',
        ["tests/test_exploration.py"],
    ),
    Mutant(
        "dynamic anchor never moves",
        "rltune/loss_terms/kl.py",
        'if self.anchor == "ema" and trainer.step % self.update_every == 0:',
        "if False:",
        ["tests/test_exploration.py"],
    ),
    Mutant(
        "TEA bonus sign flipped",
        "rltune/loss_terms/tea.py",
        "return -weights * out.entropy",
        "return weights * out.entropy",
        formula_rows("tea"),
    ),
    Mutant(
        "TEA weight cap ignored",
        "rltune/loss_terms/tea.py",
        "(cov_alpha * weights).clamp(0.0, clip_cov_ub)",
        "(cov_alpha * weights).clamp(min=0.0)",
        formula_rows("tea"),
    ),
    Mutant(
        "NFT negative weight ignored",
        "rltune/objectives/nft.py",
        "self.neg_weight * (1.0 - correct) * negative",
        "(1.0 - correct) * negative",
        formula_rows("nft"),
    ),
    Mutant(
        "NFT normalize=2 weights like normalize=1",
        "rltune/objectives/nft.py",
        "weight = torch.sqrt((1.0 - accuracy) / accuracy)",
        "weight = 1.0 - accuracy",
        formula_rows("nft"),
    ),
    Mutant(
        "oversampling keeps every sample",
        "rltune/trainer.py",
        "if self.cfg.algorithm.keep_per_group is not None:",
        "if False:",
        formula_rows("keep_per_group"),
    ),
    Mutant(
        "oversampling 'extreme' keeps the smallest advantages",
        "rltune/advantages.py",
        "picked = sorted(idx, key=lambda i: -abs(float(score[i])))[:keep]",
        "picked = sorted(idx, key=lambda i: abs(float(score[i])))[:keep]",
        formula_rows("keep_per_group"),
    ),
    Mutant(
        "mini_batches ignored",
        "rltune/update.py",
        "for mini in _chunks(order, algo.mini_batches):",
        "for mini in _chunks(order, 1):",
        formula_rows("mini_batches"),
    ),
    Mutant(
        "epochs ignored",
        "rltune/update.py",
        "for _ in range(algo.epochs):",
        "for _ in range(1):",
        formula_rows("epochs", "default"),
    ),
    Mutant(
        "token-level returns not added to the advantages",
        "rltune/trainer.py",
        "adv = (adv[:, None] if adv.dim() == 1 else adv) + batch.token_returns",
        "adv = adv",
        formula_rows("token_level_reward"),
    ),
    Mutant(
        "token-level returns undiscounted",
        "rltune/reward_pipeline.py",
        "running = rewards[:, t] + gamma * running",
        "running = rewards[:, t] + running",
        formula_rows("token_level_reward"),
    ),
    Mutant(
        "reward weights ignored",
        "rltune/reward_pipeline.py",
        "batch.rewards = sum(c.weight * batch.reward_components[c.name]",
        "batch.rewards = sum(batch.reward_components[c.name]",
        formula_rows("default"),
    ),
    Mutant(
        "flat groups keep a rounding-error advantage",
        "rltune/advantages.py",
        "        if len(idx) > 1 and not is_flat(r):\n            adv[idx] = ((r - r.mean())",
        "        if len(idx) > 1:\n            adv[idx] = ((r - r.mean())",
        ["tests/test_advantages.py"],
    ),
    # --- the learning signal: old log-probs, importance weights, sync check ------------------------------
    Mutant(
        "recomputed old log-probs ignored",
        "rltune/update.py",
        'for key in ("ref_logprobs", "old_logprobs", "is_weights")',
        'for key in ("ref_logprobs", "is_weights")',
        formula_rows("recompute", "tis"),
    ),
    Mutant(
        "importance weights not applied",
        "rltune/update.py",
        "per_token = per_token * mb.is_weights",
        "per_token = per_token",
        formula_rows("tis", "mis", "seq_mask"),
    ),
    Mutant(
        "truncated IS without the cap",
        "rltune/mismatch.py",
        "weights = ratio.clamp(max=cap)",
        "weights = ratio",
        formula_rows("tis") + ["tests/test_signal.py"],
    ),
    Mutant(
        "sync check never stops the run",
        "rltune/update.py",
        "        check_sync(float(drift), self.sync_tolerance, self.cfg.rollout.engine, step)\n",
        "",
        ["tests/test_signal.py"],
    ),
    Mutant(
        "mismatch measured against the old policy instead of the sampler",
        "rltune/update.py",
        "measure.append((out.logprobs.detach(), mb.sampling_logprobs, mb.completion_mask))",
        "measure.append((out.logprobs.detach(), out.logprobs.detach(), mb.completion_mask))",
        ["tests/test_signal.py"],
    ),
    Mutant(
        "GSPO ratio not length-normalised",
        "rltune/objectives/gspo.py",
        "log_ratio = ((out.logprobs - mb.old_logprobs) * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)",
        "log_ratio = ((out.logprobs - mb.old_logprobs) * mask).sum(-1)",
        formula_rows("gspo"),
    ),
    Mutant(
        "CISPO weight keeps its gradient",
        "rltune/objectives/cispo.py",
        "torch.exp((out.logprobs - mb.old_logprobs).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)).detach()",
        "torch.exp((out.logprobs - mb.old_logprobs).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))",
        formula_rows("cispo"),
    ),
    # --- DAPO dynamic sampling ----------------------------------------------------------------------
    Mutant(
        "dynamic sampling keeps every group",
        "rltune/rollout/stage.py",
        "varied = [g for g, idx in enumerate(batch.groups()) if not is_flat(spread[idx])]",
        "varied = list(range(batch.num_groups))",
        [f"{FORMULAS}::test_dynamic_sampling_drops_flat_groups_refills_and_trains_the_rest"],
    ),
    Mutant(
        "dynamic sampling stops after one round",
        "rltune/rollout/stage.py",
        "            if not any_process(n_kept < want):\n                break",
        "            break",
        [f"{FORMULAS}::test_dynamic_sampling_drops_flat_groups_refills_and_trains_the_rest"],
    ),
    Mutant(
        "dynamic_sampling_reward ignored",
        "rltune/rollout/stage.py",
        "                if algo.dynamic_sampling_reward\n",
        "                if False\n",
        [f"{FORMULAS}::test_dynamic_sampling_drops_flat_groups_refills_and_trains_the_rest"],
    ),
    Mutant(
        "dynamic sampling tops up with nothing",
        "rltune/rollout/stage.py",
        "pool = RolloutBatch.concat(kept + flat)",
        "pool = RolloutBatch.concat(kept)",
        [f"{FORMULAS}::test_dynamic_sampling_drops_flat_groups_refills_and_trains_the_rest"],
    ),
    # --- rewards from the methods table -------------------------------------------------------------
    Mutant(
        "async rewards awaited one by one",
        "rltune/reward_pipeline.py",
        "await asyncio.gather(*(one(i) for i in range(len(calls))))",
        "[await one(i) for i in range(len(calls))]",
        ["tests/test_rewards.py"],
    ),
    Mutant(
        "number_between: the upper bound counts as inside",
        "rewards/number_between.py",
        "low < value < high else None",
        "low < value <= high else None",
        ["tests/test_rewards.py"],
    ),
    Mutant(
        "number_between: a gold that is not two bounds fails without saying what it needs",
        "rewards/number_between.py",
        "if len(bounds) != 2 or not all(",
        "if False and not all(",
        ["tests/test_rewards.py"],
    ),
    Mutant(
        "claims --table-only: a row read at the larger of its two runs' recorded seeds",
        "benchmarks/claims.py",
        "seeds = {c.key: min(len(results[c.run]), len(results[c.baseline])) for c in claims}",
        "seeds = {c.key: max(len(results[c.run]), len(results[c.baseline])) for c in claims}",
        ["tests/test_perf_scripts.py::test_claims_table_only_reads_each_row_at_its_recorded_paired_seeds"],
    ),
    Mutant(
        "real_model_methods: a row over one seed prints a nan interval over seeds",
        "benchmarks/real_model_methods.py",
        'if n > 1 else "[one seed]"',
        'if n > 0 else "[one seed]"',
        [
            "tests/test_perf_scripts.py::test_real_model_runs_are_recorded_by_method_and_recipe_and_tables_come_from_the_record"
        ],
    ),
    Mutant(
        "real_model_methods: the distinct right answers' difference read from the accuracy",
        "benchmarks/real_model_methods.py",
        'return [float(n) for n in run["right_answers"]]',
        'return [c / SAMPLES for c in run["correct"]]',
        ["tests/test_perf_scripts.py::test_between_rows_give_the_paired_difference_of_distinct_right_answers"],
    ),
    Mutant(
        "real_model_methods: the right answers' offsets counted from A+1 instead of the bound A",
        "benchmarks/real_model_methods.py",
        '"right_offsets": [[r - low for r in rs if r is not None]',
        '"right_offsets": [[r - low - 1 for r in rs if r is not None]',
        ["tests/test_perf_scripts.py::test_between_task_has_many_right_answers_graded_by_number_between"],
    ),
    Mutant(
        "real_model_methods: distinct right answers measured against every right number, not what 4 samples hold",
        "benchmarks/real_model_methods.py",
        "len(set(problem)) / max(min(SAMPLES, possible), 1)",
        "len(set(problem)) / max(possible, 1)",
        ["tests/test_perf_scripts.py::test_between_rows_give_the_paired_difference_of_distinct_right_answers"],
    ),
    Mutant(
        "real_model_methods: a record without the per-problem right answers read as if it had them",
        "benchmarks/real_model_methods.py",
        'kept = all("right_answers" in r for r in runs[:n] + baseline[:n])',
        "kept = True",
        ["tests/test_perf_scripts.py::test_between_rows_give_the_paired_difference_of_distinct_right_answers"],
    ),
    Mutant(
        "real_model_methods: distinct texts told apart by their outer whitespace",
        "benchmarks/real_model_methods.py",
        'return text.strip().split("\\n")[0] if first_line else text.strip()',
        'return text.split("\\n")[0] if first_line else text',
        ["tests/test_perf_scripts.py::test_between_task_has_many_right_answers_graded_by_number_between"],
    ),
    Mutant(
        "real_model_methods: distinct first lines counted on whole texts",
        "benchmarks/real_model_methods.py",
        'return text.strip().split("\\n")[0] if first_line else text.strip()',
        "return text.strip()",
        ["tests/test_perf_scripts.py::test_between_task_has_many_right_answers_graded_by_number_between"],
    ),
    Mutant(
        "the rltune command imports torch before main() quiets the libraries",
        "rltune/cli.py",
        'exit code 1."""\n    try:\n        code = main()',
        'exit code 1."""\n    import torch  # noqa: F401\n\n    try:\n        code = main()',
        ["tests/test_day_one.py::test_console_is_quiet_with_a_preflight_block_and_one_line_per_step"],
    ),
    Mutant(
        "final_number judge: texts without a number are one partition",
        "rewards/diversity_partition.py",
        "if numbers[i] is not None and numbers[i] == numbers[j]",
        "if numbers[i] == numbers[j]",
        ["tests/test_diversity_partition.py"],
    ),
    Mutant(
        "DARLING fusion additive when multiplicative is asked",
        "rewards/diversity_partition.py",
        'if self.fusion == "multiplicative":',
        'if self.fusion == "additive":',
        ["tests/test_diversity_partition.py"],
    ),
    Mutant(
        "cosine length reward: correct and wrong schedules swapped",
        "rewards/length.py",
        "return cosine_schedule(length, self.max_length, eta_min=self.r_cL, eta_max=self.r_c0)",
        "return cosine_schedule(length, self.max_length, eta_min=self.r_wL, eta_max=self.r_w0)",
        ["tests/test_exploration.py", "tests/test_rewards.py"],
    ),
    Mutant(
        "DAPO overlong penalty never applies",
        "rewards/length.py",
        "return min(0.0, (expected - length) / self.cache_length) * self.penalty",
        "return 0.0",
        ["tests/test_exploration.py", "tests/test_rewards.py"],
    ),
    Mutant(
        "repetition penalty sign flipped",
        "rewards/repetition.py",
        "return (1.0 - len(set(grams)) / len(grams)) * max_penalty",
        "return -(1.0 - len(set(grams)) / len(grams)) * max_penalty",
        ["tests/test_exploration.py", "tests/test_rewards.py"],
    ),
    Mutant(
        "dense repetition penalises only the first token of a repeated n-gram",
        "rewards/repetition.py",
        "            for t in range(start, start + ngram_size):\n                values[t] = penalty",
        "            values[start] = penalty",
        ["tests/test_exploration.py"],
    ),
    Mutant(
        "thinking efficiency ignores where the answer is first reached",
        "rewards/thinking_efficiency.py",
        'return self.scale * self.reached_fraction(completion.text, str(row["gold"]))',
        "return self.scale",
        ["tests/test_thinking.py"],
    ),
    Mutant(
        "entropy-SFT selects tokens without the entropy term",
        "rltune/sft.py",
        "score = ce - cfg.entropy_coef * token_entropy(logits.float(), with_grad=False)",
        "score = ce",
        ["tests/test_sft.py"],
    ),
    Mutant(
        "DTO keeps a drop whatever the forced answer rate",
        "rltune/dto.py",
        "            if res.rate >= threshold:\n                item.kept",
        "            if True:\n                item.kept",
        ["tests/test_dto.py"],
    ),
    # --- eval numbers -------------------------------------------------------------------------------
    Mutant(
        "pass@k reported as pass@1 for every k",
        "eval/runner.py",
        'values = [pass_at_k(p["n"], p["correct"], k) for p in problems]',
        'values = [pass_at_k(p["n"], p["correct"], 1) for p in problems]',
        ["tests/test_eval_numbers.py"],
    ),
    Mutant(
        "maj@k votes by string equality",
        "eval/runner.py",
        "classes = answer_classes(answers, equivalent)",
        "classes = answer_classes(answers, lambda a, b: a == b)",
        ["tests/test_eval_numbers.py"],
    ),
    Mutant(
        "CI over the wrong values",
        "eval/runner.py",
        'metrics[f"pass@{k}_ci"] = bootstrap_ci(values, seed=settings.seed)',
        'metrics[f"pass@{k}_ci"] = bootstrap_ci(means, seed=settings.seed)',
        ["tests/test_eval_numbers.py"],
    ),
    # --- the grader and eval results -------------------------------------------------------------------
    Mutant(
        "grader reads thousands separators as operators",
        "eval/grading.py",
        'text = _TRAILING_PUNCTUATION.sub("", _DIGIT_GROUP.sub("", text.strip()))',
        'text = _TRAILING_PUNCTUATION.sub("", text.strip())',
        ["tests/test_grading.py"],
    ),
    Mutant(
        "several boxes graded by the last one alone",
        "eval/grading.py",
        "        if listed is not None:\n",
        "        if False:\n",
        ["tests/test_grading.py"],
    ),
    Mutant(
        "grading workers import from the working folder",
        "eval/grading.py",
        "    \"if sys.path and sys.path[0] in ('', os.getcwd()):\\n\"",
        '    "if False:\\n"',
        ["tests/test_grading.py::test_a_library_named_file_in_the_working_folder_cannot_replace_the_graders"],
    ),
    Mutant(
        "eval cache keyed on the model path",
        "eval/runner.py",
        'return f"{model} (sha256 {digest.hexdigest()[:16]})"',
        "return model",
        ["tests/test_eval_cache.py::test_the_cache_follows_the_weights_not_the_path"],
    ),
    Mutant(
        "eval compare plots runs that are not comparable",
        "rltune/cli.py",
        "    if differences and not args.force:",
        "    if False:",
        ["tests/test_eval_cache.py::test_compare_refuses_runs_with_other_settings_or_problems_unless_forced"],
    ),
    # --- checkpoints, resume and weight sync --------------------------------------------------------
    Mutant(
        "resume does not sync the engine",
        "rltune/trainer.py",
        '        self.engine.sync_weights(self.policy)\n        log.info("resumed from',
        '        log.info("resumed from',
        ["tests/test_trainer.py::test_resume_continues_exactly"],
    ),
    Mutant(
        "resume skips the optimizer state",
        "rltune/update.py",
        '        self.optimizer.load_state_dict(state["optimizer"])\n',
        "",
        ["tests/test_trainer.py::test_resume_continues_exactly"],
    ),
    Mutant(
        "LoRA adapters not merged into the engine's weights",
        "rltune/rollout/vllm_engine.py",
        "        model.merge_adapter()\n        try:",
        "        try:",
        ["tests/test_trainer.py::test_lora_trains_adapters_and_the_vllm_engine_samples_from_them"],
    ),
    # --- performance paths --------------------------------------------------------------------------
    Mutant(
        "fused head: entropy gradient sign flipped",
        "rltune/lm_head.py",
        "add_(grad_logprobs[:, None]).mul_(p).neg_()",
        "add_(grad_logprobs[:, None]).mul_(p)",
        ["tests/test_lm_head.py"],
    ),
    Mutant(
        "fused head: temperature ignored",
        "rltune/lm_head.py",
        "scaled = hidden / temperature\n",
        "scaled = hidden\n",
        ["tests/test_lm_head.py"],
    ),
    Mutant(
        "packing: positions do not restart per sample",
        "rltune/batch.py",
        "positions[row] += range(len(seq))",
        "positions[row] += range(len(positions[row]), len(positions[row]) + len(seq))",
        ["tests/test_trainer.py::test_lm_head_shortcuts_and_packing_change_nothing"],
    ),
    Mutant(
        "token budget ignored when grouping micro-batches",
        "rltune/update.py",
        "or (budget is not None and layout.tokens_with(prompt, completion) > budget)",
        "or False",
        ["tests/test_trainer.py::test_token_budget_groups_samples_by_length_with_the_same_update"],
    ),
    Mutant(
        "skip_zero_advantage drops samples with an advantage",
        "rltune/update.py",
        "nonzero = (adv != 0) if adv.dim() == 1 else (adv != 0).any(-1)",
        "nonzero = (adv > 0) if adv.dim() == 1 else (adv > 0).any(-1)",
        ["tests/test_trainer.py::test_zero_advantage_samples_are_left_out_with_the_same_update"],
    ),
    Mutant(
        "logits_to_keep shortcut off by one column",
        "rltune/update.py",
        'keep = {"logits_to_keep": mb.input_ids.shape[1] - first} if self.model_keeps_logits else {}',
        'keep = {"logits_to_keep": mb.input_ids.shape[1] - first - 1} if self.model_keeps_logits else {}',
        ["tests/test_trainer.py::test_lm_head_shortcuts_and_packing_change_nothing"],
    ),
    Mutant(
        "gradient clipping ignored",
        "rltune/update.py",
        "bound = t.max_grad_norm or math.inf",
        "bound = math.inf",
        [f"{FORMULAS}::test_gradients_are_clipped_to_max_grad_norm"],
    ),
    Mutant(
        "hf engine: a stop string does not end the completion",
        "rltune/rollout/hf_engine.py",
        "        if not self.stops or not self._found(text(tokens)):\n",
        "        if True:\n",
        ["tests/test_hf_engine.py::test_hf_engine_honours_stop_strings_and_top_k"],
    ),
    Mutant(
        "hf engine: top-k cut-off ignored",
        "rltune/rollout/hf_engine.py",
        "        if 0 < self.top_k < probs.shape[-1]:\n",
        "        if False:\n",
        ["tests/test_hf_engine.py"],
    ),
    Mutant(
        "vLLM engines: the recipe's sampling settings beyond temperature and top-p are not sent",
        "rltune/rollout/base.py",
        "        return {**fields, **self.generation_kwargs}\n",
        "        return {k: fields[k] for k in ('n', 'temperature', 'top_p', 'max_tokens')}\n",
        ["tests/test_vllm_engine.py::test_vllm_logprobs_match_the_policy_before_and_after_a_weight_sync"],
    ),
    Mutant(
        "rollout stage: sampled without the recipe's stop strings and cut-offs",
        "rltune/rollout/stage.py",
        "        sampling = SamplingSettings.from_rollout(r, prompt_seeds=seeds)\n",
        "        sampling = SamplingSettings(n=r.group_size, temperature=r.temperature, top_p=r.top_p, "
        "max_tokens=r.max_tokens, prompt_seeds=seeds)\n",
        ["tests/test_trainer.py"],
    ),
    Mutant(
        "per-source rewards: each process reduces only the sources it sampled",
        "rltune/metrics.py",
        "        names = sorted(set().union(*everyone))\n",
        "        pass\n",
        ["tests/test_multiprocess.py::test_two_processes_follow_the_single_process_loss_curve"],
    ),
    Mutant(
        "multi-turn: observation tokens are trained on like the model's",
        "rltune/update.py",
        "        masks = [batch.model_mask(i) for i in indices]\n",
        "        masks = [[1] * len(c) for c in completions]\n",
        ["tests/test_multi_turn.py::test_the_update_trains_on_the_models_tokens_only"],
    ),
    Mutant(
        "multi-turn: the trajectory is re-tokenised from its text for the next turn",
        "rltune/rollout/multi_turn.py",
        "            contexts = [t.prompt + t.tokens for t in waiting]\n",
        "            contexts = [tokenizer(tokenizer.decode(t.prompt + t.tokens), add_special_tokens=False)"
        "['input_ids'] for t in waiting]\n",
        ["tests/test_multi_turn.py::test_each_turn_continues_from_the_sampled_ids_not_from_the_text_tokenised_again"],
    ),
    Mutant(
        "multi-turn: the observation is tokenised together with the model's last turn",
        "rltune/rollout/multi_turn.py",
        '                ids = tokenizer(observation, add_special_tokens=False)["input_ids"]\n',
        '                ids = tokenizer(t.turns[-1]["content"] + observation, add_special_tokens=False)'
        '["input_ids"]\n',
        ["tests/test_multi_turn.py::test_multi_turn_trajectories_on_the_hf_engine"],
    ),
    Mutant(
        "sandbox: no wall-clock timeout",
        "rltune/sandbox.py",
        "                proc.wait(timeout=limits.timeout_s)\n",
        "                proc.wait()\n",
        ["tests/test_multi_turn.py::test_the_sandbox_contains_each_escape_and_returns_it_as_the_tools_error"],
    ),
    Mutant(
        "sandbox: no audit hook",
        "rltune/sandbox.py",
        "sys.addaudithook(hook)\n",
        "pass\n",
        ["tests/test_multi_turn.py::test_the_sandbox_contains_each_escape_and_returns_it_as_the_tools_error"],
    ),
    Mutant(
        "multi-turn: the answer read from the whole trajectory (a box the tool printed counts)",
        "rewards/__init__.py",
        "        return self.text if self.turns is None else final_model_turn(self.turns)\n",
        "        return self.text\n",
        ["tests/test_multi_turn.py::test_rewards_read_the_models_answer_and_words_not_the_tools_output"],
    ),
    Mutant(
        "multi-turn: DARLING compares the trajectories with the tool's observations in them",
        "rewards/diversity_partition.py",
        "self.diversity([c.model_text for c in completions])",
        "self.diversity([c.text for c in completions])",
        ["tests/test_multi_turn.py::test_rewards_read_the_models_answer_and_words_not_the_tools_output"],
    ),
    Mutant(
        "multi-turn: trl rewards get one assistant message, the tool messages lost",
        "rltune/reward_pipeline.py",
        "[dict(m) for m in batch.turns[i]] if batch.turns is not None else",
        "[dict(m) for m in batch.turns[i]] if False else",
        ["tests/test_multi_turn.py::test_rewards_read_the_models_answer_and_words_not_the_tools_output"],
    ),
    Mutant(
        "a package left out of the wheel (pyproject's list)",
        "pyproject.toml",
        '"rltune.loss_terms", "rltune.environments",',
        '"rltune.loss_terms",',
        ["tests/test_day_one.py::test_the_wheel_holds_every_module_and_recipe_of_the_tree"],
    ),
    Mutant(
        "multi-turn: the trackers' tables get the raw message list, not the episode by role",
        "rltune/metrics.py",
        '[trajectory_text(row[c]) if c == "turns" else row[c] for c in columns]',
        "[row[c] for c in columns]",
        ["tests/test_multi_turn.py::test_a_multi_turn_run_logs_its_episodes_and_trajectories"],
    ),
    Mutant(
        "grader: a mixed number read as its parts (the unboxed fallback grades `2 3/5` as 2)",
        "eval/grading.py",
        "    text = _MIXED_NUMBER.sub(_improper_fraction, text)\n",
        "",
        ["tests/test_grading.py::test_the_agreement_benchmark_cases_all_hold"],
    ),
    Mutant(
        "grader: boxes joined by words or spacing no longer answer a multi-valued gold together",
        "eval/grading.py",
        "        if not _joins_a_list(text[prev[1] : box[0]]):\n",
        '        if not re.match(r"^[\\s,;$&]*(?:and[\\s,;$]*)?$", text[prev[1] : box[0]]):\n',
        ["tests/test_grading.py::test_the_agreement_benchmark_cases_all_hold"],
    ),
    Mutant(
        "grader: a final run of different boxes is not a hedge against a single-valued gold",
        "eval/grading.py",
        "    return len({content for _, _, content in _final_run(text, boxes)}) > 1\n",
        "    return False\n",
        ["tests/test_grading.py::test_the_agreement_benchmark_cases_all_hold"],
    ),
    Mutant(
        "grader: a set in plain braces not read as several values",
        "eval/grading.py",
        '    if text.startswith("{") and _closing_bracket(text) == len(text) - 1:\n',
        "    if False:\n",
        ["tests/test_grading.py::test_the_agreement_benchmark_cases_all_hold"],
    ),
    Mutant(
        "grader: sums told apart by sympy's simplification alone (seconds), no numeric verdict",
        "eval/grading.py",
        "    if quick is not None:\n        return quick\n",
        "",
        ["tests/test_grading.py::test_costly_comparisons_are_decided_numerically"],
    ),
    Mutant(
        "rltune eval --base-url: the served engine's answers mixed with the progress bar's return values",
        "rltune/rollout/vllm_server.py",
        "                    answers.append(answer)\n                    bar.update(1)",
        "                    answers.append(bar.update(1) or answer)",
        ["tests/test_vllm_server.py::test_rltune_eval_of_a_served_model_equals_the_in_process_engines"],
    ),
    Mutant(
        "eval: pass^k computed as pass@k",
        "eval/runner.py",
        '(f"pass^{k}", pass_hat_k)',
        '(f"pass^{k}", pass_at_k)',
        [
            "tests/test_runner.py::test_the_summary_reports_pass_hat_k_lengths_of_right_and_wrong_answers_and_each_breakdown"
        ],
    ),
    Mutant(
        "eval: MATH-500 not broken down by level",
        "eval/benchmarks.py",
        'groups=columns("level", "subject"),',
        'groups=columns("subject"),',
        ["tests/test_runner.py::test_the_shipped_benchmarks_break_down_by_their_own_fields"],
    ),
    Mutant(
        "weights never synced into the vLLM engine after a step",
        "rltune/rollout/vllm_engine.py",
        '            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})\n',
        "            pass\n",
        ["tests/test_vllm_engine.py"],
    ),
    Mutant(
        "exit_processes skips the exit handlers with a process group",
        "rltune/distributed.py",
        "    atexit._run_exitfuncs()",
        "    pass",
        [
            "tests/test_distributed.py::test_a_process_exits_with_its_code_after_its_exit_handlers_with_or_without_a_group"
        ],
    ),
    Mutant(
        "exit_processes leaves through the interpreter's teardown with a process group",
        "rltune/distributed.py",
        "    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):\n        sys.exit(code)",
        "    sys.exit(code)",
        [
            "tests/test_distributed.py::test_a_process_exits_with_its_code_after_its_exit_handlers_with_or_without_a_group"
        ],
    ),
]


def copy_tree(dest: Path) -> None:
    """The working tree's tracked and untracked (not ignored) files, importable as the rltune package."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO / name.decode()
        if source.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name.decode())
    # setuptools maps rltune.rewards to rewards/ and rltune.eval to eval/; on the path, links do the same.
    (dest / "rltune" / "rewards").symlink_to("../rewards")
    (dest / "rltune" / "eval").symlink_to("../eval")
    (dest / "rltune" / "recipes").symlink_to("../recipes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", help="run the mutants whose names contain one of these")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or any(o in m.name for o in args.only)]
    if args.list:
        print("\n".join(f"{m.name}  ({m.path})" for m in chosen))
        return 0
    for m in chosen:
        count = (REPO / m.path).read_text().count(m.old)
        if count != 1:
            print(f"mutant {m.name!r}: its code occurs {count} times in {m.path} (must be once); update the list")
            return 2

    results = []
    with tempfile.TemporaryDirectory(prefix="rltune-mutants-") as tmp:
        root = Path(tmp)
        copy_tree(root)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
            # the copy has no ../shared beside it: the benchmark data stays where it is
            "RLTUNE_BENCHDATA": os.environ.get("RLTUNE_BENCHDATA", str(REPO.parent / "shared" / "benchdata")),
        }
        for m in chosen:
            target = root / m.path
            original = target.read_text()
            target.write_text(original.replace(m.old, m.new))
            started = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests],
                    cwd=root,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=args.timeout,
                )
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = -1
            finally:
                target.write_text(original)
            verdict = {0: "SURVIVED", 1: "killed"}.get(code, f"error (exit {code})")
            seconds = time.perf_counter() - started
            results.append((m, verdict))
            print(f"{verdict:>16}  {seconds:6.1f}s  {m.name}", flush=True)
            if code not in (0, 1) and code != -1:
                print(proc.stdout[-2000:], proc.stderr[-2000:])
    killed = sum(v == "killed" for _, v in results)
    print(f"\n{killed} of {len(results)} mutants killed ({100 * killed / max(len(results), 1):.0f}%)")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
