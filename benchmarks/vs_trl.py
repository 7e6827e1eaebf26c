"""rltune's trainer and trl's GRPOTrainer side by side at equal settings.

Same randomly initialised model (built from a config: the demo's tiny Qwen2, SmolLM2-135M's shape, or
Qwen2.5-0.5B's shape for the GPU), same prompts (the demo's single-digit additions), 4 prompts x 8
samples per step, same max tokens, AdamW at lr 1e-6, one update per rollout batch, token-mean loss,
clip 0.2, no KL, gradient checkpointing on both sides (trl's default; --no-gradient-checkpointing turns it
off on both), float32 on the CPU and bfloat16 weights on the GPU, and the same generation engine
(transformers `generate`: rltune's `hf` engine; rltune's vLLM engine reported beside; side
`rltune-hf-compiled` is the hf engine with rollout.hf_compile, CUDA graphs on a GPU). Each side runs in
its own subprocess so that its peak memory (resident on the CPU, allocated on the GPU) is its own.

    python benchmarks/vs_trl.py [--sizes tiny,smollm2] [--steps 6]      (or `make bench`)
    python benchmarks/vs_trl.py --device cuda --sizes qwen0.5b --sides rltune-hf,trl --steps 8

Prints one JSON line per run and a table with the rltune/trl ratios (`--repeats N`: medians over N
alternating runs of every side, and the range of the ratio).

`--workload` picks the prompts and how completions end, the same for both sides:
- `demo` (default): the demo's 5-10 token additions. At the larger shapes a random model practically
  never samples its end token among 49k, so every completion runs to the token limit.
- `gsm8k-shape`: the proportions of a real GSM8K step, scaled to the token limit C. SmolLM2-135M-Instruct
  on GSM8K in its chat template has prompts of ~100 tokens and completions of 11-256 tokens (median 166)
  at C=256 (RESULTS.md). Here: prompts of 0.3-0.5 C random characters, and ~1/64 of the vocabulary are
  end tokens (in the generation config, which both trainers read), so a completion ends with probability
  about 1/64 a token: geometric lengths, median about 44, about a third reaching C=64.
- `gsm8k`: a real model and real prompts instead (`--model DIR`, a local transformers model with a chat
  template, e.g. SmolLM2-135M-Instruct from `rltune demo-model --smollm2`; `--data-dir` holding
  gsm8k/test.jsonl): GSM8K test questions in the model's chat template, the same text for both sides.

    python benchmarks/vs_trl.py --workload gsm8k --model runs/smollm2-135m-instruct \
        --data-dir ../shared/benchdata --max-tokens 128 --sides rltune-hf,trl --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPTS_PER_STEP, GROUP = 4, 8
SIZES = {
    # name: (model config overrides, max new tokens)
    "tiny": ({}, 64),
    "smollm2": (
        dict(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            head_dim=64,
        ),
        64,
    ),
    "qwen0.5b": (  # Qwen2.5-0.5B's shape (494M parameters with tied embeddings): the GPU size
        dict(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            head_dim=64,
        ),
        256,
    ),
}


def parity_reward(*args, **kwargs):
    """The same cheap reward for both trainers (1 for an even number of characters), so that the
    comparison measures the trainers, not a grader. rltune calls it per completion, trl per batch."""
    if args and hasattr(args[0], "text"):  # rltune: (completion, row)
        return float(len(args[0].text) % 2 == 0)
    return [float(len(c) % 2 == 0) for c in kwargs["completions"]]


def gsm8k_shape_rows(max_tokens: int, count: int = 100, seed: int = 0) -> list[dict]:
    """Prompts of 0.3-0.5 x max_tokens characters (one token each) drawn from the demo's digits and signs."""
    import random

    rng = random.Random(seed)
    chars = "0123456789+-= "
    lengths = [rng.randint(int(0.3 * max_tokens), int(0.5 * max_tokens)) for _ in range(count)]
    return [{"question": "".join(rng.choice(chars) for _ in range(n)), "answer": ""} for n in lengths]


def build_assets(
    size: str, root: Path, device: str = "cpu", workload: str = "demo", max_tokens: int | None = None
) -> tuple[Path, Path]:
    """The model (saved in bfloat16 for the GPU), the demo tokenizer and the prompts, under `root`; the
    gsm8k-shape prompts are scaled to `max_tokens` (default: the size's). For
    the larger shapes the tokenizer gets filler tokens ('<t0>', ...) up to the model's vocabulary, so that
    every sampled id decodes to text and the parity reward varies within a group (ids past a tokenizer
    decode to nothing: every reward would be equal and every advantage zero)."""
    import torch

    from rltune.demo import CHARS, arithmetic_rows, build_tiny_model, build_tokenizer

    overrides, size_max_tokens = SIZES[size]
    extra = overrides.get("vocab_size", 0) - len(build_tokenizer())
    tokenizer = build_tokenizer(CHARS + [f"<t{i}>" for i in range(max(extra, 0))])
    model = build_tiny_model(**{"vocab_size": len(tokenizer), "max_positions": 2048, **overrides})
    if device == "cuda":
        model = model.to(torch.bfloat16)
    rows, end_ids = arithmetic_rows(), [1]
    if workload == "gsm8k-shape":
        rows = gsm8k_shape_rows(max_tokens or size_max_tokens)
        # The tiny vocabulary (25 tokens) already ends a random model's completions at ~1/25 a token.
        first_filler = len(build_tokenizer())
        end_ids += list(range(first_filler, first_filler + len(tokenizer) // 64 - 1))
    model.generation_config.eos_token_id = end_ids
    model.generation_config.pad_token_id = 0
    model_dir, data = root / f"model-{size}", root / "prompts.jsonl"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model_dir, data


def build_gsm8k_prompts(model_dir: Path, data_dir: Path, root: Path, count: int = 100) -> Path:
    """The first `count` GSM8K test questions in the model's chat template, as JSON lines under `root`."""
    from transformers import AutoTokenizer

    from rltune.config import DEFAULT_INSTRUCTION  # the recipes' own request for a boxed answer

    source = data_dir / "gsm8k" / "test.jsonl"
    if not source.is_file():
        raise SystemExit(f"--workload gsm8k needs {source}: pass --data-dir, the folder that holds gsm8k/")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(x) for x in source.read_text().splitlines()[:count]]
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": DEFAULT_INSTRUCTION.format(question=r["question"])}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for r in rows
    ]
    data = root / "prompts.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": ""}) + "\n" for q in prompts))
    return data


def run_rltune(
    model_dir: Path,
    data: Path,
    max_tokens: int,
    steps: int,
    engine: str,
    out: Path,
    device: str,
    checkpointing: bool,
    compiled: bool = False,
) -> dict:
    from rltune.config import RecipeConfig, from_dict
    from rltune.trainer import Trainer

    recipe = {
        "model": {
            "path": str(model_dir),
            "dtype": "bfloat16" if device == "cuda" else "float32",
            "gradient_checkpointing": checkpointing,
        },
        "data": {"path": str(data), "instruction": "{question}", "use_chat_template": False},
        "rollout": {
            "engine": engine,
            "group_size": GROUP,
            "temperature": 1.0,
            "max_tokens": max_tokens,
            "hf_compile": compiled,
        },
        "rewards": [{"name": "vs_trl:parity_reward"}],
        "algorithm": {"clip_low": 0.2, "clip_high": 0.2, "loss_aggregation": "token_mean"},
        "train": {
            "steps": steps,
            "prompts_per_step": PROMPTS_PER_STEP,
            "micro_batch_size": PROMPTS_PER_STEP * GROUP,
            "lr": 1e-6,
            "output_dir": str(out),
            "overwrite_output_dir": True,
            "report_to": [],
            "progress_bar": False,
        },
    }
    trainer = Trainer(from_dict(RecipeConfig, recipe, "vs_trl"))
    try:
        trainer.train()
    finally:
        trainer.close()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steady = rows[2:]
    return {
        "step_s": statistics.median(r["time/step_s"] for r in steady),
        "rollout_s": statistics.median(r["time/rollout_s"] for r in steady),
        "update_s": statistics.median(r["time/update_s"] for r in steady),
        "completion_tokens": statistics.mean(r["completion/length_mean"] for r in steady) * PROMPTS_PER_STEP * GROUP,
    }


def run_trl(
    model_dir: Path, data: Path, max_tokens: int, steps: int, out: Path, device: str, checkpointing: bool
) -> dict:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    rows = [json.loads(x) for x in data.read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": r["question"], "answer": r["answer"]} for r in rows])
    times: list[float] = []
    lengths: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.started)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    cfg = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=PROMPTS_PER_STEP * GROUP,
        num_generations=GROUP,
        max_completion_length=max_tokens,
        max_steps=steps,
        learning_rate=1e-6,
        beta=0.0,
        epsilon=0.2,
        loss_type="dapo",
        temperature=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=device == "cpu",
        gradient_checkpointing=checkpointing,
        bf16=device == "cuda",
        model_init_kwargs={"dtype": torch.bfloat16 if device == "cuda" else torch.float32},
        seed=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=parity_reward,
        args=cfg,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Timer()],
    )
    generation: list[float] = []
    generate = trainer._generate  # trl's private generation step (1.16), timed like rltune's rollout

    def timed_generate(*args, **kwargs):
        started = time.perf_counter()
        out = generate(*args, **kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
        generation.append(time.perf_counter() - started)
        return out

    trainer._generate = timed_generate
    trainer.train()
    return {
        "step_s": statistics.median(times[2:]),
        "rollout_s": statistics.median(generation[2:]),
        "completion_tokens": statistics.mean(lengths[2:]) * PROMPTS_PER_STEP * GROUP,
    }


def peak_memory_gb(device: str) -> float:
    """Peak allocated GPU memory on the GPU, peak resident memory on the CPU, of this process."""
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_child(cmd: list[str], name: str, timeout: float, out: str | None, env: dict | None = None) -> dict | None:
    """Run one measurement in its own process and return its RESULT line (None, with the reason printed,
    when it failed or ran out of time); also appended to `out` as a JSON line."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{name}: timed out after {timeout:.0f}s", flush=True)
        return None
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        print(f"{name} failed:\n{proc.stderr[-3000:]}", flush=True)
        return None
    result = json.loads(line[len("RESULT ") :])
    print(json.dumps(result), flush=True)
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(result) + "\n")
    return result


def child(args: argparse.Namespace) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).parent))  # rltune finds `vs_trl:parity_reward`
    root = Path(args.workdir)
    model_dir, data, max_tokens = Path(args.model_dir), root / "prompts.jsonl", args.max_tokens
    out = root / f"out-{args.side}-{args.size}"
    if args.side == "trl":
        result = run_trl(model_dir, data, max_tokens, args.steps, out, args.device, args.gradient_checkpointing)
    else:
        engine = args.side.split("-")[1]
        compiled = args.side.endswith("-compiled")  # rollout.hf_compile
        result = run_rltune(
            model_dir, data, max_tokens, args.steps, engine, out, args.device, args.gradient_checkpointing, compiled
        )
    result.update(
        side=args.side,
        size=args.size,
        device=torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        peak_gb=peak_memory_gb(args.device),
    )
    result["gen_tokens_per_s"] = result["completion_tokens"] / result["step_s"]
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,smollm2")
    parser.add_argument("--steps", type=int, default=6, help="RL steps per run; the first 2 are warm-up")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every side, alternating")
    parser.add_argument("--sides", default="rltune-hf,trl,rltune-vllm")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: bfloat16 weights")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on both sides (trl's GRPOConfig turns it on by default)",
    )
    parser.add_argument(
        "--workload", default="demo", choices=["demo", "gsm8k-shape", "gsm8k"], help="prompts and completion ends"
    )
    parser.add_argument("--model", help="--workload gsm8k: a local transformers model folder (replaces --sizes)")
    parser.add_argument("--data-dir", default="../shared/benchdata", help="--workload gsm8k: holds gsm8k/test.jsonl")
    parser.add_argument(
        "--max-tokens", type=int, help="completion tokens at most (default: the size's; 256 with --model)"
    )
    parser.add_argument("--out", help="also write the results here (JSON lines)")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return child(args)
    if (args.workload == "gsm8k") != (args.model is not None):
        parser.error("--workload gsm8k and --model go together")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in [Path(args.model).name] if args.model else args.sizes.split(","):
            max_tokens = args.max_tokens or (256 if args.model else SIZES[size][1])
            if args.model:
                model_dir = Path(args.model).resolve()
                build_gsm8k_prompts(model_dir, Path(args.data_dir), Path(tmp))
            else:
                model_dir, _ = build_assets(size, Path(tmp), args.device, args.workload, max_tokens)
            for repeat in range(args.repeats):  # sides alternate, so that drifts in machine speed hit both
                for side in args.sides.split(","):
                    cmd = [
                        sys.executable,
                        __file__,
                        "--side",
                        side,
                        "--size",
                        size,
                        "--workdir",
                        tmp,
                        "--model-dir",
                        str(model_dir),
                        "--max-tokens",
                        str(max_tokens),
                        "--steps",
                        str(args.steps),
                        "--device",
                        args.device,
                        "--gradient-checkpointing" if args.gradient_checkpointing else "--no-gradient-checkpointing",
                    ]
                    env = {**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())}
                    result = run_child(cmd, f"{side} on {size}", args.timeout, args.out, env)
                    if result is not None:
                        results.append({**result, "repeat": repeat, "workload": args.workload})
    print_table(results)


def print_table(results: list[dict]) -> None:
    """Per size and side: median seconds per step over the repeats; the ratios to trl from the medians, and
    their range over the repeats (each repeat's rltune against the same repeat's trl)."""
    print(f"\nworkload: {results[0]['workload'] if results else '-'}")
    head = f"{'size':8} {'side':18} {'s/step':>7} {'tokens/step':>11} {'gen tok/s':>9} {'peak GB':>8}"
    print(f"\n{head} {'steps/s vs trl':>14} {'tok/s vs trl':>12} {'range over repeats':>18}")
    keys = list(dict.fromkeys((r["size"], r["side"]) for r in results))
    runs = {key: [r for r in results if (r["size"], r["side"]) == key] for key in keys}
    median = {
        key: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k.endswith(("_s", "_gb", "tokens"))}
        for key, rs in runs.items()
    }
    for size, side in keys:
        m = median[size, side]
        tok_s = m["completion_tokens"] / m["step_s"]
        cells = f"{'-':>14} {'-':>12} {'-':>18}"  # --sides without trl: nothing to compare with
        if (size, "trl") in median:
            t = median[size, "trl"]
            trl_runs = {r["repeat"]: r["step_s"] for r in runs[size, "trl"]}
            ratios = [trl_runs[r["repeat"]] / r["step_s"] for r in runs[size, side] if r["repeat"] in trl_runs]
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}x" if ratios else "-"
            tok_ratio = tok_s / (t["completion_tokens"] / t["step_s"])
            cells = f"{t['step_s'] / m['step_s']:13.2f}x {tok_ratio:11.2f}x {spread:>18}"
        tokens = m["completion_tokens"]
        print(f"{size:8} {side:18} {m['step_s']:7.2f} {tokens:11.0f} {tok_s:9.0f} {m['peak_gb']:8.2f} {cells}")


if __name__ == "__main__":
    main()
