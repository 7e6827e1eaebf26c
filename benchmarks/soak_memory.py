"""Soak: train the CPU demo recipe for many steps and sample resident memory after every step.

    python benchmarks/soak_memory.py [STEPS] [RECIPE] [key=value ...]

Prints RSS at step 50 and at the end and the growth between them (issue 10 asks for < 10%).
Needs the demo model (`make demo` builds it).
"""

import json
import sys
from pathlib import Path

import psutil

from rltune.config import load_recipe
from rltune.trainer import Trainer


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    recipe = sys.argv[2] if len(sys.argv) > 2 else "recipes/demo_cpu.yaml"
    cfg = load_recipe(
        recipe,
        [
            f"train.steps={steps}",
            "train.output_dir=runs/soak",
            "train.progress_bar=false",
            "train.overwrite_output_dir=true",
            *sys.argv[3:],
        ],
    )
    process = psutil.Process()
    rss: dict[int, float] = {}

    def sample(trainer, step, metrics):
        rss[step] = process.memory_info().rss / 2**20
        metrics["memory/rss_mib"] = rss[step]

    trainer = Trainer(cfg, callbacks=[sample])
    try:
        trainer.train()
    finally:
        trainer.close()
    start = rss[min(50, steps)]
    result = {
        "steps": steps,
        "rss_mib_step_50": round(start, 1),
        "rss_mib_last": round(rss[steps], 1),
        "growth_percent": round(100 * (rss[steps] - start) / start, 2),
        "rss_mib_max": round(max(rss.values()), 1),
    }
    Path("runs/soak/soak.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
