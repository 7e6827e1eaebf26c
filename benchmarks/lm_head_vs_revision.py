"""The fused LM head (`rltune/lm_head.py`) against its version at another git revision, side by side in one
process: forward and backward seconds of `token_scores` on the same random inputs, and how far the two
versions' values and gradients are apart.

    python benchmarks/lm_head_vs_revision.py --rev e5a55d6
    python benchmarks/lm_head_vs_revision.py --rev HEAD~1 --shapes 2048x151936x896:bf16 --entropy

Each shape is POSITIONSxVOCABxHIDDEN:DTYPE (float32 or bf16). The versions alternate, --repeats times each.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}


def module_at(rev: str):
    """rltune/lm_head.py as it was at `rev`, imported under its own name."""
    source = subprocess.run(
        ["git", "show", f"{rev}:rltune/lm_head.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "lm_head_at_revision.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("lm_head_at_revision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(module, hidden, weight, targets, entropy: bool):
    """(forward s, backward s, logprobs, hidden's gradient, weight's gradient) of one call."""
    # Built on the meta device: no random initialisation of a weight that is replaced at once.
    head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    head.weight = torch.nn.Parameter(weight.clone())
    h = hidden.clone().requires_grad_()
    start = time.perf_counter()
    logprobs, ent = module.token_scores(h, head, targets, 0.9)
    middle = time.perf_counter()
    (logprobs.sum() + (ent.sum() if entropy else 0)).backward()
    end = time.perf_counter()
    return middle - start, end - middle, logprobs.detach().float(), h.grad.float(), head.weight.grad.float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", required=True, help="git revision of the version to compare with")
    parser.add_argument("--shapes", default="4096x49152x576:float32,2048x151936x896:bf16")
    parser.add_argument("--entropy", action="store_true", help="the entropy carries a gradient too")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import rltune.lm_head as current

    versions = {args.rev: module_at(args.rev), "working tree": current}
    torch.manual_seed(0)
    for shape in args.shapes.split(","):
        sizes, _, dtype_name = shape.partition(":")
        if dtype_name not in DTYPES or sizes.count("x") != 2:
            parser.error(f"--shapes: {shape!r} is not POSITIONSxVOCABxHIDDEN:DTYPE with DTYPE in {sorted(DTYPES)}")
        positions, vocab, dim = (int(n) for n in sizes.split("x"))
        dtype = DTYPES[dtype_name]
        hidden = torch.randn(positions, dim).to(dtype)
        weight = (torch.randn(vocab, dim) * 0.05).to(dtype)
        targets = torch.randint(0, vocab, (positions,))
        times = {name: ([], []) for name in versions}
        last = {}
        for _ in range(args.repeats):
            for name, module in versions.items():
                forward_s, backward_s, *outputs = run(module, hidden, weight, targets, args.entropy)
                times[name][0].append(forward_s)
                times[name][1].append(backward_s)
                last[name] = outputs
        print(f"{shape} entropy gradient: {args.entropy}")
        for name, (forward_s, backward_s) in times.items():
            fmt = ", ".join
            print(
                f"  {name:14} forward s {fmt(f'{t:.2f}' for t in forward_s):16} "
                f"backward s {fmt(f'{t:.2f}' for t in backward_s)}"
            )
        old, new = last.values()
        for label, a, b in zip(("logprobs", "hidden grad", "weight grad"), old, new):
            print(f"  {label:12} relative difference {((a - b).norm() / a.norm()).item():.2e}")


if __name__ == "__main__":
    main()
