"""The update phase alone: model FLOPs utilisation of rltune's policy update against a plain
transformers forward + backward + AdamW step on the same tokens.

A randomly initialised model (Qwen2.5-0.5B's shape by default, built from a config) is trained on
`--batch` sequences of `--seq` tokens (`--prompt` of them prompt, the rest completion). Each variant
(`--help` lists them) runs in its own subprocess so that peak memory is its own.

--varied-lengths draws each completion's length uniformly from 1 to seq - prompt (seeded), as RL
rollouts have them; the padded variants then compute pads, and MFU counts the real tokens only.

MFU = 6 x parameters x tokens / seconds / peak (dense bf16 989 TFLOP/s on an H100; pass --peak-tflops).

    python benchmarks/update_mfu.py --device cuda [--variants plain,rltune] [--repeats 5]
    python benchmarks/update_mfu.py --size tiny --seq 128 --batch 8        (a quick run on the CPU)
    python benchmarks/update_mfu.py --size smollm2 --batch 32 --seq 266 --prompt 10 --varied-lengths \
        --variants plain,rltune,rltune-budget --token-budget 2048
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from vs_trl import SIZES, build_assets, peak_memory_gb, run_child  # noqa: E402


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(step, repeats: int, device: str) -> list[float]:
    step()
    step()  # warm-up: allocator, kernels, compilation
    times = []
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - started)
    return times


def completion_lengths(args) -> list[int]:
    """Every completion seq - prompt tokens long, or (--varied-lengths) uniform in 1 .. seq - prompt."""
    import torch

    longest = args.seq - args.prompt
    if not args.varied_lengths:
        return [longest] * args.batch
    return torch.randint(1, longest + 1, (args.batch,), generator=torch.Generator().manual_seed(1)).tolist()


def plain_step(model_dir: Path, args) -> tuple:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(args.device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (args.batch, args.seq), generator=g).to(args.device)
    labels = ids.clone()
    labels[:, : args.prompt] = -100  # the same positions are scored as in the RL update
    attention = torch.ones_like(ids)
    for row, length in enumerate(completion_lengths(args)):
        labels[row, args.prompt + length :] = -100
        attention[row, args.prompt + length :] = 0  # right padding, computed but not attended to

    def step():
        model(input_ids=ids, attention_mask=attention, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step


VARIANTS = {
    "plain": "model(input_ids, labels=...) cross-entropy, backward, fused AdamW (the reference; transformers' "
    "Trainer's default optimizer)",
    "rltune": "Trainer.update on the same tokens as a rollout batch (clipped objective, token-mean, fused LM head, "
    "samples packed into rows)",
    "rltune-padded": "the same with train.packing=false (one padded row per sample)",
    "rltune-unfused": "the same with train.fused_lm_head=false (full-vocabulary logits)",
    "rltune-compile": "the same with train.compile=true (decoder layers and the LM head's chunk arithmetic compiled)",
    "rltune-compile-head": "the same with train.compile=lm_head (the LM head's chunk arithmetic only)",
    "rltune-budget": "the same with train.micro_batch_tokens=--token-budget (length-sorted micro-batches)",
    "rltune-mixed": "the same with float32 weights under train.mixed_precision=bf16 (autocast)",
}


def rltune_step(model_dir: Path, data: Path, args, variant: str, out: Path) -> tuple:
    import torch

    from rltune.batch import RolloutBatch
    from rltune.config import RecipeConfig, from_dict
    from rltune.trainer import Trainer

    mixed = variant == "rltune-mixed"
    dtype = "bfloat16" if args.device == "cuda" and not mixed else "float32"
    recipe = {
        "model": {"path": str(model_dir), "dtype": dtype},
        "data": {"path": str(data), "instruction": "{question}", "use_chat_template": False},
        "rollout": {"engine": "hf", "group_size": args.batch, "temperature": 1.0, "max_tokens": args.seq},
        "rewards": [{"name": "vs_trl:parity_reward"}],
        "algorithm": {"clip_low": 0.2, "clip_high": 0.2, "loss_aggregation": "token_mean"},
        "train": {
            "steps": 1,
            "prompts_per_step": 1,
            "micro_batch_size": args.batch,
            "lr": 1e-6,
            "output_dir": str(out),
            "overwrite_output_dir": True,
            "report_to": [],
            "progress_bar": False,
            "fused_lm_head": variant != "rltune-unfused",
            "compile": {"rltune-compile": True, "rltune-compile-head": "lm_head"}.get(variant, False),
            "packing": variant != "rltune-padded",
            "micro_batch_tokens": args.token_budget if variant == "rltune-budget" else None,
            "mixed_precision": "bf16" if mixed else "no",
        },
    }
    trainer = Trainer(from_dict(RecipeConfig, recipe, "update_mfu"))
    vocab = trainer.policy.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (args.batch, args.seq), generator=g).tolist()
    lengths = completion_lengths(args)
    batch = RolloutBatch(
        prompt_ids=[row[: args.prompt] for row in ids],
        completion_ids=[row[args.prompt : args.prompt + n] for row, n in zip(ids, lengths)],
        completion_texts=[""] * args.batch,
        sampling_logprobs=[[0.0] * n for n in lengths],
        finish_reasons=["length"] * args.batch,
        group_ids=[0] * args.batch,
        rows=[{}],
    )
    batch.advantages = torch.randn(args.batch, generator=g)
    # Sampling logprobs from the policy itself, as after a rollout: importance ratios start at 1.
    with torch.no_grad():
        mb = trainer.updater.collate(batch, list(range(args.batch)))
        logprobs = trainer.updater.policy_forward(trainer.model, mb).logprobs.float().cpu()
    batch.sampling_logprobs = [row[:n] for row, n in zip(logprobs.tolist(), lengths)]
    return trainer.policy, lambda: trainer.updater.update(batch, trainer.step)


def child(args) -> None:
    import torch

    from rltune.metrics import training_flops

    root = Path(args.workdir)
    model_dir, data = root / f"model-{args.size}", root / "prompts.jsonl"
    if args.variant == "plain":
        model, step = plain_step(model_dir, args)
    else:
        model, step = rltune_step(model_dir, data, args, args.variant, root / f"out-{args.variant}")
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = time_steps(step, args.repeats, args.device)
    params = sum(p.numel() for p in model.parameters())
    seconds = statistics.median(times)
    tokens = args.batch * args.prompt + sum(completion_lengths(args))  # real tokens, pads not counted
    flops = training_flops(params, tokens)
    result = {
        "variant": args.variant,
        "size": args.size,
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "params": params,
        "tokens": tokens,
        "step_s": seconds,
        "steps_s": times,
        "tflops": flops / seconds / 1e12,
        "mfu": flops / seconds / (args.peak_tflops * 1e12),
        "peak_gb": peak_memory_gb(args.device),
    }
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="variants:\n" + "\n".join(f"  {name:20} {text}" for name, text in VARIANTS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", default="qwen0.5b", choices=sorted(SIZES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--variants", default="plain,rltune,rltune-unfused,rltune-compile", help="see below")
    parser.add_argument("--varied-lengths", action="store_true", help="completion lengths uniform in 1..seq-prompt")
    parser.add_argument("--token-budget", type=int, default=4096, help="train.micro_batch_tokens of rltune-budget")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per variant")
    parser.add_argument("--out", help="also write the results here (JSON lines)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return child(args)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown --variants {','.join(unknown)}; choose from {','.join(VARIANTS)}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        build_assets(args.size, Path(tmp), args.device)
        for variant in args.variants.split(","):
            cmd = [sys.executable, __file__, *sys.argv[1:], "--variant", variant, "--workdir", tmp]
            result = run_child(cmd, variant, args.timeout, args.out)
            if result is not None:
                results.append(result)
    plain = next((r for r in results if r["variant"] == "plain"), None)
    print(f"\n{'variant':16} {'s/update':>9} {'TFLOP/s':>8} {'MFU':>6} {'peak GB':>8} {'speed vs plain':>14}")
    for r in results:
        ratio = f"{plain['step_s'] / r['step_s']:13.2f}x" if plain else f"{'-':>14}"
        print(f"{r['variant']:16} {r['step_s']:9.3f} {r['tflops']:8.1f} {r['mfu']:6.1%} {r['peak_gb']:8.2f} {ratio}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
