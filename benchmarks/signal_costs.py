"""What the learning-signal checks cost and what they measure, on the CPU demo workload.

For each variant: the mean step time over the last `--steps - 1` steps (the first warms up) of one run of
recipes/demo_cpu.yaml on the warmed-up demo model, and the sampler/trainer mismatch metrics of those steps.
Variants run one after another in this process, so their times share the machine's state.

    python benchmarks/signal_costs.py --model runs/demo/warmup-model --data runs/demo/arithmetic.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name: key=value overrides of recipes/demo_cpu.yaml
VARIANTS = {
    "default (sampler old logprobs, sync check on)": [],
    "sync check off": ["train.sync_check=false"],
    "old_logprobs=recompute": ["algorithm.old_logprobs=recompute"],
    "recompute + is_correction=tis": ["algorithm.old_logprobs=recompute", "algorithm.is_correction=tis"],
    "hf engine, float32": ["rollout.engine=hf"],
    "hf engine, train.mixed_precision=bf16": ["rollout.engine=hf", "train.mixed_precision=bf16"],
    "vllm bfloat16, trainer float32": ["rollout.vllm.dtype=bfloat16", "train.sync_check=false"],
    "vllm bfloat16, trainer bf16 autocast": ["rollout.vllm.dtype=bfloat16", "train.mixed_precision=bf16"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--only", nargs="*", help="variants whose names contain one of these")
    args = parser.parse_args()

    from accelerate.state import AcceleratorState

    from rltune.config import load_recipe
    from rltune.trainer import Trainer

    rows = []
    for name, overrides in VARIANTS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        with tempfile.TemporaryDirectory() as out:
            cfg = load_recipe(
                REPO / "recipes" / "demo_cpu.yaml",
                [
                    f"model.path={args.model}",
                    f"data.path={args.data}",
                    f"train.steps={args.steps}",
                    f"train.output_dir={out}",
                    "train.progress_bar=false",
                    "train.report_to=[]",
                    *overrides,
                ],
            )
            # accelerate keeps one mixed-precision setting per process; each variant sets its own
            AcceleratorState._reset_state(reset_partial_state=True)
            trainer = Trainer(cfg)
            try:
                trainer.train()
            finally:
                trainer.close()
            lines = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()][1:]
        row = {
            "variant": name,
            "step_s": statistics.mean(m["time/step_s"] for m in lines),
            **{k: statistics.mean(m[k] for m in lines) for k in lines[0] if k.startswith("mismatch/")},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]["step_s"]
    print("\n| variant | step s | x default | |d| mean | k3 KL | seq ratio max |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['step_s']:.2f} | {r['step_s'] / base:.2f} | {r['mismatch/log_ratio_abs_mean']:.2e} "
            f"| {r['mismatch/kl']:.2e} | {r['mismatch/seq_ratio_max']:.4f} |"
        )


if __name__ == "__main__":
    main()
