"""Synchronous against asynchronous RL on the CPU: steps/s and accuracy of the demo recipe through the
vllm_server engine (or a colocated engine), train.async_steps = 0, 1, 2, paired seeds.

With the vllm_server engine a `vllm serve` process of the demo's warmed-up model samples (on its own core
where the machine has two or more), and this process trains (on the other cores); weights go to the server
by the disk sync after every update, and each run starts by loading the base weights into the server. With
`--engine vllm` or `hf` the engine lives in the training process and shares its cores. Reported per
async_steps: steps per second over the whole run, the mean time the update waited for rollouts and the time
generation waited for weights, mean@8 of the demo problems after training (T=1), and the paired differences
against async_steps=0 with 95% t-intervals over seeds.

    python benchmarks/async_speed.py --seeds 3 --steps 100 --out runs/async-speed
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import darling_vs_grpo

REPO = Path(__file__).resolve().parents[1]


def start_server(model_dir: Path, port: int, core: int | None, log: Path) -> subprocess.Popen:
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    cmd += ["--port", str(port), "--max-model-len", "128", "--dtype", "float32", "--enforce-eager"]
    cmd += ["--logprobs-mode", "processed_logprobs", "--no-enable-chunked-prefill"]
    if core is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = str(core)
        cmd = ["taskset", "-c", str(core), *cmd]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"vllm serve did not come up:\n{log.read_text()[-3000:]}") from None
            time.sleep(1)


def run(
    k: int, seed: int, steps: int, model_dir: Path, data: Path, engine: str, url: str, out: Path
) -> dict[str, float]:
    from transformers import AutoModelForCausalLM

    from rltune.config import VLLMServerConfig, load_recipe
    from rltune.demo import accuracy_settings
    from rltune.eval.runner import evaluate
    from rltune.rollout import build_engine
    from rltune.trainer import Trainer

    where = out / f"{engine}-async{k}-seed{seed}"
    overrides = [f"rollout.engine={engine}"]
    if engine == "vllm_server":
        server = VLLMServerConfig(url=url, weight_sync="disk", sync_dir=str(out / "sync"))
        reset = build_engine("vllm_server", server=server)
        reset.sync_weights(AutoModelForCausalLM.from_pretrained(model_dir))  # every run starts from the base weights
        reset.close()
        overrides += [
            f"rollout.server.url={url}",
            "rollout.server.weight_sync=disk",
            f"rollout.server.sync_dir={out / 'sync'}",
        ]
    overrides += [
        f"model.path={model_dir}",
        f"data.path={data}",
        f"train.async_steps={k}",
        f"train.steps={steps}",
        f"train.seed={seed}",
        f"train.output_dir={where}",
        "train.overwrite_output_dir=true",
        "train.report_to=[]",
        "train.log_completions_every=0",
        "train.progress_bar=false",
    ]
    with Trainer(load_recipe(REPO / "recipes" / "demo_cpu.yaml", overrides)) as trainer:
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        settings = dataclasses.replace(accuracy_settings(data), seed=seed)
        results = evaluate(trainer.engine, trainer.tokenizer, settings, progress=False)
    lines = [json.loads(x) for x in (where / "metrics.jsonl").read_text().splitlines()]

    def mean(key: str) -> float:
        return statistics.mean(m.get(key, 0.0) for m in lines)

    return {
        "steps_per_s": steps / seconds,
        "update_wait_s": mean("async/update_wait_s"),
        "generation_wait_s": mean("async/generation_wait_s"),
        "rollout_s": mean("time/rollout_s"),
        "update_s": mean("time/update_s"),
        "accuracy": next(iter(results["benchmarks"].values()))["metrics"]["mean@8"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setting (paired across settings)")
    parser.add_argument("--steps", type=int, default=100, help="RL steps per run")
    parser.add_argument("--async-steps", default="0,1,2", help="comma-separated train.async_steps values")
    parser.add_argument("--engine", choices=["vllm_server", "vllm", "hf"], default="vllm_server", help="rollout engine")
    parser.add_argument("--port", type=int, default=8311, help="port of the vllm serve process")
    parser.add_argument("--out", default="runs/async-speed", help="output folder")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model_dir, data = out / "model", out / "arithmetic.jsonl"
    if not (model_dir / "config.json").is_file():
        from rltune.demo import write_demo_assets

        write_demo_assets(model_dir, data, progress=False)
    cores = sorted(os.sched_getaffinity(0))
    server_core = cores[-1] if len(cores) >= 2 and args.engine == "vllm_server" else None
    if server_core is not None:  # the trainer keeps the other cores
        os.sched_setaffinity(0, set(cores[:-1]))
        import torch

        torch.set_num_threads(len(cores) - 1)
    url = f"http://127.0.0.1:{args.port}"
    server = (
        start_server(model_dir, args.port, server_core, out / "server.log") if args.engine == "vllm_server" else None
    )
    ks = [int(k) for k in args.async_steps.split(",")]
    try:
        results = {
            k: [run(k, s, args.steps, model_dir, data, args.engine, url, out) for s in range(args.seeds)] for k in ks
        }
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
    (out / f"results-{args.engine}.json").write_text(json.dumps(results, indent=1))
    base = results[ks[0]]
    trainer_cores = sorted(os.sched_getaffinity(0))
    print(
        f"\n{args.engine}, {args.seeds} seeds, {args.steps} steps; "
        f"server core {server_core}, trainer cores {trainer_cores}"
    )
    print("| async_steps | steps/s | speed-up vs sync [95% CI] | update waited (s/step) | generation waited (s/step) | "
          "mean@8 after | accuracy - sync [95% CI] |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for k in ks:
        rows = results[k]
        speedup = darling_vs_grpo.interval([r["steps_per_s"] / b["steps_per_s"] for r, b in zip(rows, base)])
        accuracy = darling_vs_grpo.interval([r["accuracy"] - b["accuracy"] for r, b in zip(rows, base)])
        print(
            f"| {k} | {statistics.mean(r['steps_per_s'] for r in rows):.3f} | {speedup[0]:.2f}x "
            f"[{speedup[1]:.2f}, {speedup[2]:.2f}] | {statistics.mean(r['update_wait_s'] for r in rows):.3f} | "
            f"{statistics.mean(r['generation_wait_s'] for r in rows):.3f} | "
            f"{statistics.mean(r['accuracy'] for r in rows):.3f} | {accuracy[0]:+.3f} [{accuracy[1]:+.3f}, "
            f"{accuracy[2]:+.3f}] |"
        )


if __name__ == "__main__":
    main()
