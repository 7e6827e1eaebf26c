"""The performance benchmarks run end to end (tiny model, few steps): the numbers themselves are in
benchmarks/RESULTS.md; this only keeps the scripts working."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, out: Path, *args: str) -> tuple[str, list[dict]]:
    """(stdout, result rows) of `python benchmarks/<script> ... --out out`."""
    run = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout, [json.loads(x) for x in out.read_text().splitlines()]


@pytest.mark.slow
def test_vs_trl_and_update_mfu_run(tmp_path):
    stdout, rows = run_benchmark(
        "vs_trl.py", tmp_path / "vs_trl.jsonl", "--sizes", "tiny", "--sides", "rltune-hf,trl", "--steps", "3"
    )
    assert [r["side"] for r in rows] == ["rltune-hf", "trl"]
    assert all(r["step_s"] > 0 and r["completion_tokens"] > 0 for r in rows)
    assert "steps/s vs trl" in stdout

    _, rows = run_benchmark(
        "update_mfu.py",
        tmp_path / "mfu.jsonl",
        *("--size", "tiny", "--seq", "64", "--prompt", "16", "--batch", "4", "--repeats", "2"),
        *("--variants", "plain,rltune,rltune-budget", "--varied-lengths", "--token-budget", "128"),
    )
    assert [r["variant"] for r in rows] == ["plain", "rltune", "rltune-budget"]
    assert all(4 * 16 < r["tokens"] < 4 * 64 and r["tflops"] > 0 for r in rows)  # pads are not counted

    bound = subprocess.run(
        [sys.executable, "benchmarks/matmul_bound.py", "--size", "tiny", "--tokens", "256", "--repeats", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bound.returncode == 0, bound.stderr[-3000:]
    assert "decode step, 32 rows" in bound.stdout and "s of matmuls" in bound.stdout
