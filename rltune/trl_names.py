"""trl's GRPOConfig options and where they live in an rltune recipe, for "did you mean" hints on unknown keys
and the README's migration table (`python -m rltune.trl_names` prints it whole).

A value is the rltune key (section.name), or a sentence starting "not supported" / "always" / "no need"
saying why there is none. tests/test_trl_names.py checks that every option of the installed trl's
GRPOConfig that changes training is here, so the table cannot go stale when trl adds options."""

from __future__ import annotations

TRL_NAMES: dict[str, str] = {
    # --- what to train, and on what
    "model_init_kwargs": "model.dtype / model.trust_remote_code (the options rltune passes to from_pretrained)",
    "trust_remote_code": "model.trust_remote_code",
    "gradient_checkpointing": "model.gradient_checkpointing",
    "shuffle_dataset": "data.shuffle",
    "max_prompt_length": "data.max_prompt_tokens",
    "chat_template_kwargs": "not supported: the tokenizer's chat template is applied with its defaults",
    "seed": "train.seed",
    "data_seed": "train.seed (one seed for data order and sampling)",
    # --- generation
    "num_generations": "rollout.group_size",
    "num_generations_eval": "eval.n",
    "max_completion_length": "rollout.max_tokens",
    "temperature": "rollout.temperature",
    "top_p": "rollout.top_p",
    "top_k": "rollout.top_k",
    "min_p": "rollout.min_p",
    "repetition_penalty": "rollout.repetition_penalty",
    "generation_kwargs": "rollout.generation_kwargs (vLLM engines), rollout.stop for stop strings",
    "cache_implementation": "no need: the hf engine manages its KV cache (rollout.hf_compile for a static one)",
    "generation_batch_size": "train.prompts_per_step x rollout.group_size (per process)",
    "steps_per_generation": "algorithm.mini_batches (optimizer steps per generated batch)",
    "use_vllm": "rollout.engine: vllm (colocated) or vllm_server",
    "vllm_mode": "rollout.engine: vllm (colocate) or vllm_server (server)",
    "vllm_model_impl": "not supported: vLLM picks its own implementation",
    "vllm_enable_sleep_mode": "rollout.vllm.sleep",
    "vllm_structured_outputs_regex": "not supported: no constrained decoding",
    "vllm_server_base_url": "rollout.server.url",
    "vllm_server_host": "rollout.server.url",
    "vllm_server_port": "rollout.server.url",
    "vllm_server_timeout": "rollout.server.connect_timeout_s",
    "vllm_group_port": "rollout.server.nccl_port",
    "vllm_gpu_memory_utilization": "rollout.vllm.gpu_memory_utilization",
    "vllm_max_model_length": "rollout.vllm.max_model_len",
    "vllm_tensor_parallel_size": "not supported colocated: serve with --tensor-parallel-size and use "
    "rollout.engine: vllm_server",
    "ds3_gather_for_generation": "always: sharded weights are gathered whole for every engine sync",
    "use_transformers_paged": "rollout.engine: hf (its own batched decoding)",
    "use_transformers_continuous_batching": "rollout.engine: hf (its own batched decoding)",
    "transformers_continuous_batching_config": "not supported: the hf engine has no continuous batching",
    "max_tool_calling_iterations": "rollout.max_turns (with rollout.environment)",
    # --- the objective
    "beta": "algorithm.kl_coef",
    "num_iterations": "algorithm.epochs",
    "epsilon": "algorithm.clip_low",
    "epsilon_high": "algorithm.clip_high",
    "delta": "algorithm.dual_clip",
    "loss_type": "algorithm.loss_aggregation (grpo: seq_mean_token_mean, dapo/bnpo: token_mean, dr_grpo: constant)",
    "scale_rewards": "algorithm.advantage (grpo: std-scaled, dr_grpo: not scaled, rloo)",
    "importance_sampling_level": "algorithm.objective (clipped: token level, gspo: sequence level)",
    "mask_truncated_completions": "rewards: overlong (DAPO's overlong shaping)",
    "reward_weights": "rewards[i].weight",
    "multi_objective_aggregation": "not supported: rewards are summed with their weights",
    "sync_ref_model": "algorithm.kl_anchor: ema",
    "ref_model_mixup_alpha": "algorithm.kl_anchor_decay (1 - alpha)",
    "ref_model_sync_steps": "algorithm.kl_anchor_update_every",
    "top_entropy_quantile": "algorithm.loss_terms: tea (token-wise entropy-adaptive, Light-IF)",
    "entropy_coef": "algorithm.loss_terms: entropy (its coef)",
    "use_adaptive_entropy": "algorithm.loss_terms: entropy (T1's dynamic anchor)",
    "entropy_coef_min": "algorithm.loss_terms: entropy (its kwargs)",
    "entropy_coef_max": "algorithm.loss_terms: entropy (its kwargs)",
    "entropy_coef_delta": "algorithm.loss_terms: entropy (its kwargs)",
    "entropy_target": "algorithm.loss_terms: entropy (its kwargs)",
    "vllm_importance_sampling_correction": "algorithm.is_correction (tis, mis) with algorithm.old_logprobs: recompute",
    "vllm_importance_sampling_mode": "algorithm.is_correction",
    "vllm_importance_sampling_cap": "algorithm.is_cap",
    "vllm_importance_sampling_clip_max": "algorithm.is_cap",
    "vllm_importance_sampling_clip_min": "not supported: the importance weights are capped above only",
    "off_policy_mask_threshold": "not supported: mismatch is measured (mismatch/*) and stopped by train.sync_check",
    "use_bias_correction_kl": "not supported: the KL is the k3 estimate against the reference",
    "sapo_temperature_neg": "not supported: SAPO is not implemented",
    "sapo_temperature_pos": "not supported: SAPO is not implemented",
    "vespo_k_pos": "not supported: VESPO is not implemented",
    "vespo_lambda_pos": "not supported: VESPO is not implemented",
    "vespo_k_neg": "not supported: VESPO is not implemented",
    "vespo_lambda_neg": "not supported: VESPO is not implemented",
    "disable_dropout": "always: rollouts and updates run without dropout",
    "cast_lm_head_to_fp32": "train.fused_lm_head (the LM head's log-probs are computed in float32)",
    "router_aux_loss_coef": "not supported: MoE router losses are not added",
    "pad_to_multiple_of": "not supported: rows are packed (train.packing) or padded to the longest",
    # --- the optimizer and the loop (transformers.TrainingArguments)
    "learning_rate": "train.lr",
    "weight_decay": "train.weight_decay",
    "adam_beta1": "train.betas[0]",
    "adam_beta2": "train.betas[1]",
    "max_grad_norm": "train.max_grad_norm",
    "lr_scheduler_type": "train.lr_scheduler",
    "warmup_steps": "train.warmup_steps",
    "warmup_ratio": "train.warmup_steps (a count of RL steps)",
    "max_steps": "train.steps",
    "num_train_epochs": "train.steps (an RL step samples train.prompts_per_step prompts)",
    "per_device_train_batch_size": "train.micro_batch_size",
    "gradient_accumulation_steps": "train.micro_batch_size and algorithm.mini_batches (each mini-batch "
    "accumulates its micro-batches)",
    "bf16": "train.mixed_precision: bf16 (or model.dtype: bfloat16)",
    "fp16": "train.mixed_precision: fp16",
    "output_dir": "train.output_dir",
    "save_steps": "train.save_every",
    "save_total_limit": "train.keep_checkpoints",
    "logging_steps": "train.log_every",
    "report_to": "train.report_to",
    "run_name": "train.run_name",
    "push_to_hub": "train.push_to_hub",
    "hub_model_id": "train.hub_model_id",
    "hub_private_repo": "train.hub_private",
    "resume_from_checkpoint": "train.resume_from",
    "log_completions": "train.log_completions_every",
    "num_completions_to_print": "train.log_completions_max",
    "log_unique_prompts": "train.log_completions_every (every prompt of the step is logged)",
    "log_multimodal": "not supported: text models only",
    "log_completions_hub_repo": "not supported: completions go to output_dir/completions.jsonl and the trackers",
    "torch_compile": "train.compile",
    "eval_steps": "eval.every",
}


def trl_hint(key: str) -> str | None:
    """ " (trl's X is Y)" for a trl option name used as an rltune key, else None."""
    target = TRL_NAMES.get(key)
    if target is None:
        return None
    return f" (trl's {key!r} is {target})" if "." in target.split(" ")[0] else f" (trl's {key!r}: {target})"


if __name__ == "__main__":
    print("| trl GRPOConfig | rltune |\n|---|---|")
    for name, target in TRL_NAMES.items():
        print(f"| `{name}` | {target} |")
