"""How much of an RL step is the model's matrix multiplies: the same multiplies with nothing around them.

For every Linear weight of a randomly initialised model (and the LM head), times on this machine:
  decode  one generation step for `--rows` sequences: x[rows, in] @ W^T, each weight once (read from
          memory, as in decoding);
  update  forward and backward over `--tokens` tokens: x @ W^T, then grad @ W and grad^T @ x, plus one
          more forward when gradient checkpointing recomputes the layers (the LM head is not recomputed
          by checkpointing, but rltune's fused head recomputes its logits).
Compare with the measured step (benchmarks/vs_trl.py): decode time x new tokens, update time.

    python benchmarks/matmul_bound.py --size smollm2 --rows 32 --tokens 2368 --new-tokens 64
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from vs_trl import SIZES, build_assets  # noqa: E402


def timed(work, repeats: int) -> float:
    work()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="smollm2", choices=sorted(SIZES))
    parser.add_argument("--rows", type=int, default=32, help="sequences decoded together")
    parser.add_argument("--new-tokens", type=int, default=64, help="decoding steps per rollout")
    parser.add_argument("--tokens", type=int, default=2368, help="tokens in one update")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        model_dir, _ = build_assets(args.size, Path(tmp))
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    params = sum(p.numel() for p in model.parameters())

    with torch.no_grad():
        inputs = {w.shape[1]: torch.randn(args.rows, w.shape[1]) for w in weights}
        decode = timed(lambda: [inputs[w.shape[1]] @ w.T for w in weights], args.repeats)

        acts = {n: torch.randn(args.tokens, n) for w in weights for n in w.shape}

        def forward_backward():
            for w in weights:
                x, grad = acts[w.shape[1]], acts[w.shape[0]]
                x @ w.T, grad @ w, grad.T @ x

        def forward():
            for w in weights:
                acts[w.shape[1]] @ w.T

        update = timed(forward_backward, 1) + timed(forward, 1)
    bytes_read = sum(w.numel() * w.element_size() for w in weights)
    print(
        f"{args.size}: {params / 1e6:.0f}M parameters, {len(weights)} Linear weights (LM head included), float32, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"decode step, {args.rows} rows: {decode * 1e3:.1f} ms of matmuls "
        f"({2 * args.rows * sum(w.numel() for w in weights) / decode / 1e9:.0f} GFLOP/s, weights streamed at "
        f"{bytes_read / decode / 1e9:.1f} GB/s); x {args.new_tokens} steps = {decode * args.new_tokens:.1f} s"
    )
    flops = 8 * sum(w.numel() for w in weights) * args.tokens
    print(
        f"update, {args.tokens} tokens with recompute: {update:.1f} s of matmuls ({flops / update / 1e9:.0f} GFLOP/s)"
    )


if __name__ == "__main__":
    main()
