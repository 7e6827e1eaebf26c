"""Where one RL step's time goes, on the GPU: the hf engine's generation against transformers' own sampling
(as trl calls it), and a torch.profiler table of rltune's update at the update_mfu.py shape.

    python benchmarks/profile_step.py [--size qwen0.5b]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from update_mfu import rltune_step, sync  # noqa: E402
from vs_trl import SIZES, build_assets  # noqa: E402


def timed(name: str, work, device: str) -> None:
    sync(device)
    started = time.perf_counter()
    work()
    sync(device)
    print(f"{name:40} {time.perf_counter() - started:7.2f} s", flush=True)


@torch.no_grad()
def generation_times(model_dir: Path, max_tokens: int, device: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rltune.rollout import run_with_timeout
    from rltune.rollout.base import SamplingSettings
    from rltune.rollout.hf_engine import HFEngine

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = [tokenizer(f"{a}+{a}=")["input_ids"] for a in range(4)]
    engine = HFEngine(model, tokenizer)
    sampling = SamplingSettings(n=8, temperature=1.0, top_p=1.0, max_tokens=max_tokens, prompt_seeds=[1, 2, 3, 4])
    flat = torch.tensor([p for p in prompts for _ in range(8)], device=device)
    native = dict(
        input_ids=flat, attention_mask=torch.ones_like(flat), do_sample=True, top_k=0, max_new_tokens=max_tokens
    )
    model.generate(**{**native, "max_new_tokens": 8})
    for _ in range(2):
        timed("transformers generate, do_sample", lambda: model.generate(**native), device)
        timed("hf engine, main thread", lambda: engine.generate(prompts, [{}] * 4, sampling), device)
        timed(
            "hf engine, rollout thread",
            lambda: run_with_timeout(lambda: engine.generate(prompts, [{}] * 4, sampling), 600, "stuck"),
            device,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="qwen0.5b", choices=sorted(SIZES))
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--seq", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, data = build_assets(args.size, Path(tmp), args.device)
        generation_times(model_dir, SIZES[args.size][1], args.device)
        if args.device == "cuda":
            torch.cuda.empty_cache()
        update_args = argparse.Namespace(device=args.device, batch=16, seq=args.seq, prompt=64)
        _, step = rltune_step(model_dir, data, update_args, "rltune", Path(tmp) / "out")
        step()
        step()
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
        with profile(activities=activities) as prof:
            timed(f"rltune update 16 x {args.seq} (profiled)", step, args.device)
        sort = "cuda_time_total" if args.device == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=30, max_name_column_width=60))


if __name__ == "__main__":
    main()
