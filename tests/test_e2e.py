"""End to end: the demo recipe learns, with the real vLLM CPU engine (a real `rltune` subprocess) and
with the hf engine. Fixed seeds; the assertion is a clear rise of the sampled accuracy."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, demo_recipe, write_recipe
from rltune.trainer import Trainer

pytestmark = pytest.mark.slow


def accuracy_gain(metrics: list[dict]) -> tuple[float, float]:
    acc = [m["reward/math_accuracy"] for m in metrics]
    return sum(acc[:3]) / 3, sum(acc[-5:]) / 5


def test_vllm_engine_grpo_learns(tmp_path, demo_assets):
    pytest.importorskip("vllm")
    model_dir, data_file = demo_assets
    out = tmp_path / "run"
    recipe = write_recipe(
        tmp_path,
        {
            "model": {"path": str(model_dir)},
            "data": {"path": str(data_file)},
            "train": {"steps": 40, "output_dir": str(out), "progress_bar": False},
        },
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "rltune", "train", str(recipe), "rollout.engine=vllm"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 40
    start, end = accuracy_gain(metrics)
    assert end > start + 0.12, (start, end)
    assert (out / "checkpoint-40" / "model.safetensors").is_file()
    assert (out / "tensorboard").is_dir()


def test_hf_engine_grpo_learns(tmp_path, demo_assets):
    model_dir, data_file = demo_assets
    cfg = demo_recipe(tmp_path, model_dir, data_file, {"rollout": {"engine": "hf"}, "train": {"steps": 40}})
    trainer = Trainer(cfg)
    trainer.train()
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    start, end = accuracy_gain(metrics)
    assert end > start + 0.12, (start, end)


def test_cli_reports_bad_recipe_clearly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {path: m}\ndata: {path: d.jsonl}\ntrain: {stepz: 3}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rltune", "train", str(bad)], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert proc.returncode == 2
    assert "unknown key 'train.stepz'" in proc.stderr and str(bad) in proc.stderr
