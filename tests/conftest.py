"""Shared fixtures: tiny models built from configs (no downloads), demo data, recipe writing."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rltune.config import RecipeConfig, load_recipe
from rltune.demo import arithmetic_rows, build_tiny_model, build_tokenizer, write_demo_assets


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An untrained 2-layer Qwen2 with the character tokenizer (2048 positions: room for benchmark prompts)."""
    path = tmp_path_factory.mktemp("tiny-model")
    tokenizer = build_tokenizer()
    model = build_tiny_model(len(tokenizer), seed=0, max_positions=2048)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def arithmetic_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "arithmetic.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in arithmetic_rows()))
    return path


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory) -> tuple[Path, Path]:
    """The demo's warmed-up model (right about 30% of the time) and its prompts."""
    root = tmp_path_factory.mktemp("demo")
    prebuilt = os.environ.get("RLTUNE_TEST_DEMO_ASSETS")
    if prebuilt:  # `make mutation-score` warms them up once, from the unmutated tree, for every mutant's run
        shutil.copytree(prebuilt, root, dirs_exist_ok=True)
    else:
        write_demo_assets(root / "model", root / "arithmetic.jsonl")
    return root / "model", root / "arithmetic.jsonl"


REPO = Path(__file__).resolve().parents[1]


def run_rltune(*args: str, cwd: Path, ok: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """`python -m rltune ARGS` in a subprocess from `cwd`; with `ok`, it must exit 0 (its stderr is shown if not)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "rltune", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(config: str, *args: str, port: int | None = None) -> list[str]:
    """`accelerate launch` with the shipped config recipes/accelerate/CONFIG.yaml, on `port` (default: a free
    one); `args`: launch flags, then the program."""
    port = port or free_port()
    config_file = REPO / "recipes" / "accelerate" / f"{config}.yaml"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file)]
    return [*launcher, "--main_process_port", str(port), *args]


def two_machines(launch: str, env: dict, args: list[str], cwd: Path) -> list[subprocess.Popen]:
    """Two `accelerate launch` commands with recipes/accelerate/LAUNCH.yaml, as on two machines: machine
    ranks 0 and 1 of 2, one process each, meeting at 127.0.0.1; `args`: the program."""
    port = free_port()
    machines = []
    for rank in (0, 1):
        flags = ["--num_machines", "2", "--machine_rank", str(rank), "--num_processes", "2"]
        cmd = accelerate_launch(launch, *flags, "--main_process_ip", "127.0.0.1", *args, port=port)
        pipes = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
        machines.append(subprocess.Popen(cmd, cwd=cwd, env=env, **pipes))
    return machines


def deep_merge(dst: dict, src: dict) -> dict:
    """Merge `src` into `dst` in place; nested mappings merge key by key."""
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            deep_merge(dst[key], value)
        else:
            dst[key] = value
    return dst


def write_recipe(tmp_path: Path, overrides: dict, base: str = "recipes/demo_cpu.yaml") -> Path:
    """The demo recipe with sections updated from `overrides`, written to tmp_path/recipe.yaml."""
    recipe = deep_merge(yaml.safe_load((REPO / base).read_text()), overrides)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def demo_recipe(tmp_path: Path, model_dir: Path, data_file: Path, sections: dict | None = None) -> RecipeConfig:
    """The demo recipe on the given model and data, quiet, writing into tmp_path/run."""
    base = {
        "model": {"path": str(model_dir)},
        "data": {"path": str(data_file)},
        "train": {"output_dir": str(tmp_path / "run"), "progress_bar": False, "report_to": []},
    }
    return load_recipe(write_recipe(tmp_path, deep_merge(base, sections or {})))


@pytest.fixture(scope="session")
def benchdata() -> Path:
    """../shared/benchdata beside the repository (never copied into it); RLTUNE_BENCHDATA overrides."""
    import os

    path = Path(os.environ.get("RLTUNE_BENCHDATA", REPO.parent / "shared" / "benchdata"))
    if not (path / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"benchmark data not found at {path}")
    return path
