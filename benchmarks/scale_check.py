"""The sharded launches against one process, on whatever machine this runs: the demo recipe (hf engine, one
mini-batch, 3 steps, global batch 8 prompts) on one process, then through `accelerate launch` with each
config named, on --processes processes. Prints one JSON line per launch: the largest difference of the final
weights from the one-process run's, the loss curves, and the per-process shares and peak memory.

On a GPU machine (benchmarks/gpu_check.sh, SCALE=1) it runs recipes/accelerate/fsdp2.yaml and, where
DeepSpeed is installed, zero3.yaml; the CPU tests (tests/test_scale.py) run fsdp2_cpu_2proc.yaml.
    python benchmarks/scale_check.py --configs fsdp2,zero3 --processes 2 --out runs/gpu/scale.jsonl
On the CPU, the figures of benchmarks/RESULTS.md (SmolLM2-135M, full fine-tuning):
    python benchmarks/scale_check.py --configs cpu_2proc,fsdp2_cpu_2proc --processes 2 --model SMOLLM2_DIR \
        --group-size 4 --max-tokens 24
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]


def run(work: Path, name: str, model: Path, data: Path, processes: int, config: str | None, args) -> dict:
    out = work / name
    recipe = yaml.safe_load((REPO / "recipes" / "demo_cpu.yaml").read_text())
    recipe["model"]["path"], recipe["data"]["path"] = str(model), str(data)
    recipe["rollout"]["engine"] = "hf"
    recipe["rollout"].update(group_size=args.group_size, max_tokens=args.max_tokens)
    recipe["algorithm"]["mini_batches"] = 1
    # every sample through forward and backward in every launch (FSDP2 never skips zero-advantage ones)
    recipe["train"].update(
        steps=args.steps, prompts_per_step=8 // processes, output_dir=str(out), report_to=[], progress_bar=False,
        skip_zero_advantage=False,
    )  # fmt: skip
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    launch = [sys.executable]
    if config is not None:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
        launch += [str(REPO / "recipes" / "accelerate" / f"{config}.yaml"), "--num_processes", str(processes)]
        launch += ["--mixed_precision", "no", "--main_process_port", str(29400 + processes)]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
    proc = subprocess.run([*launch, "-m", "rltune", "train", str(path)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"launch": name, "error": proc.stderr[-2000:]}
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "launch": name,
        "loss": [m["loss"] for m in metrics],
        "params_held": metrics[-1]["memory/params_held"],
        "optimizer_state_held": metrics[-1]["memory/optimizer_state_held"],
        "peak_rss_gib_max": metrics[-1]["memory/peak_rss_gib_max"],
        "step_s_median": sorted(m["time/step_s"] for m in metrics)[len(metrics) // 2],
        "update_s_median": sorted(m["time/update_s"] for m in metrics)[len(metrics) // 2],
        "weights": out / f"checkpoint-{args.steps}" / "model.safetensors",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="fsdp2", help="comma-separated recipes/accelerate/ config names")
    parser.add_argument("--processes", type=int, default=max(1, torch.cuda.device_count()))
    parser.add_argument("--work", default="runs/scale-check")
    parser.add_argument("--out", default=None, help="a JSON-lines file for the results")
    parser.add_argument("--model", default=None, help="a model folder (default: the demo's tiny model, built)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=12)
    args = parser.parse_args()
    from rltune.demo import write_demo_assets

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model, data = work / "model", work / "arithmetic.jsonl"
    if not data.exists():
        write_demo_assets(model, data, progress=False)
    model = Path(args.model).resolve() if args.model else model
    base = run(work, "one-process", model, data, 1, None, args)
    reference = load_file(base.pop("weights"))
    rows = [base]
    for config in args.configs.split(","):
        row = run(work, config, model, data, args.processes, config, args)
        if "weights" in row:
            weights = load_file(row.pop("weights"))
            row["max_weight_diff"] = max((weights[k] - reference[k]).abs().max().item() for k in reference)
        rows.append(row)
    for row in rows:
        print(json.dumps(row))
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
