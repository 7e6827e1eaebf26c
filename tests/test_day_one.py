"""What a trl user expects on day one: plug-ins from the working folder under every entry point, the
Python API as the README shows it, trackers (real libraries, offline), completions logs, model cards and
Hub pushes, a quiet console, a CLI that explains itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, demo_recipe, run_rltune, write_recipe
from rltune.config import apply_override
from rltune.console import QUIET_ENVIRONMENT
from rltune.errors import ConfigError, RLTuneError
from rltune.registry import import_object

MY_REWARDS = """
def brevity(completion, row):
    return -len(completion.token_ids) / 1000
"""
EXTRA = """
class Contains:
    def __init__(self, needle):
        self.needle = needle

    def __call__(self, completion, row):
        return float(self.needle in completion.text)
"""


def _plugin_folder(tmp_path: Path, model_dir: Path, data_file: Path, engine: str = "hf") -> Path:
    """A user's working folder: my_rewards.py, sub/extra.py and a recipe naming both (nothing installed)."""
    (tmp_path / "my_rewards.py").write_text(MY_REWARDS)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "extra.py").write_text(EXTRA)
    return write_recipe(
        tmp_path,
        {
            "model": {"path": str(model_dir)},
            "data": {"path": str(data_file)},
            "rollout": {"engine": engine, "group_size": 4},
            "rewards": [
                {"name": "math_accuracy"},
                {"name": "my_rewards:brevity", "weight": 0.2},
                {"name": "sub/extra.py:Contains", "weight": 0.5, "kwargs": {"needle": "boxed"}},
            ],
            "train": {
                "steps": 1,
                "prompts_per_step": 4,
                "output_dir": "run",
                "report_to": [],
                "log_completions_every": 1,
            },
        },
    )


ENTRY_POINTS = {
    "console script": [str(Path(sys.executable).parent / "rltune")],
    "python -m": [sys.executable, "-m", "rltune"],
    "accelerate launch": [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--config_file",
        str(REPO / "recipes" / "accelerate" / "cpu_2proc.yaml"),
        "-m",
        "rltune",
    ],
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_plugins_resolve_from_the_working_folder_under_every_entry_point(
    entry, tmp_path, tiny_model_dir, arithmetic_file
):
    recipe = _plugin_folder(tmp_path, tiny_model_dir, arithmetic_file)
    # the working folder only reaches the import path through rltune itself
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != tmp_path]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.run(
        [*ENTRY_POINTS[entry], "train", str(recipe)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"reward/brevity", "reward/Contains"} <= set(metrics)
    rows = [json.loads(line) for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    processes = 2 if entry == "accelerate launch" else 1
    assert len(rows) == 4 * 4 * processes  # every process's completions, gathered
    for row in rows:
        assert row["reward/Contains"] == float("boxed" in row["completion"])
        assert row["reward/brevity"] == pytest.approx(-row["length"] / 1000)
        parts = row["reward/math_accuracy"] + 0.2 * row["reward/brevity"] + 0.5 * row["reward/Contains"]
        assert row["reward"] == pytest.approx(parts, abs=1e-6)


def test_import_paths_name_files_and_say_what_to_fix(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "rewards.py").write_text("def r(c, row):\n    return 1.0\n")
    (tmp_path / "b" / "rewards.py").write_text("def r(c, row):\n    return 2.0\n")
    first = import_object(f"{tmp_path}/a/rewards.py:r")
    assert import_object(f"{tmp_path}/a/rewards.py:r") is first  # one module per file
    assert import_object(f"{tmp_path}/b/rewards.py:r")(None, None) == 2.0  # same stem, another file
    monkeypatch.chdir(tmp_path)
    assert import_object("a/rewards.py:r")(None, None) == 1.0  # relative to the working folder
    with pytest.raises(ConfigError, match="no file"):
        import_object("a/missing.py:r")
    with pytest.raises(ConfigError, match="working folder"):
        import_object("not_a_module_anywhere:r")
    (tmp_path / "broken.py").write_text("def r(:\n")
    with pytest.raises(ConfigError, match="SyntaxError"):
        import_object("broken:r")
    with pytest.raises(ConfigError, match="has no attribute"):
        import_object("a/rewards.py:nothing")


def _readme_block(heading: str) -> str:
    section = (REPO / "README.md").read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_example_runs_as_written(tmp_path, demo_assets):
    model_dir, _ = demo_assets
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "warmup-model").symlink_to(model_dir)
    (tmp_path / "recipes").symlink_to(REPO / "recipes")  # run from a checkout's root, as the README says
    script = tmp_path / "example.py"
    script.write_text(_readme_block("Python API"))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(x) for x in (tmp_path / "runs" / "api" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]
    assert all("reward/brevity" in m for m in lines)
    assert "step 3: reward" in proc.stdout  # the example's callback ran


def test_public_api_surface():
    import rltune

    for name in rltune.__all__:
        assert getattr(rltune, name) is not None
    assert rltune.Trainer.__module__ == "rltune.trainer" and callable(rltune.load_recipe)
    with pytest.raises(AttributeError):
        rltune.no_such_thing  # noqa: B018


def test_trackers_offline_metrics_config_and_completion_tables(tmp_path, tiny_model_dir, arithmetic_file, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from rltune.trainer import Trainer

    cfg = demo_recipe(
        tmp_path,
        tiny_model_dir,
        arithmetic_file,
        {
            "rollout": {"engine": "hf", "group_size": 4},
            "train": {
                "steps": 2,
                "prompts_per_step": 2,
                "report_to": ["tensorboard", "wandb", "mlflow"],
                "run_name": "day-one",
                "log_completions_every": 1,
                "log_completions_max": 5,
            },
        },
    )
    with Trainer(cfg) as trainer:
        trainer.train()
    assert trainer.metrics.jsonl.closed  # no file left open by a finished run (a sweep runs many in one process)
    run = tmp_path / "run"
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] * 5 + [2] * 5
    # TensorBoard: the scalars and the completions as text
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard" / "rltune"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    assert [e.value for e in events.Scalars("reward/total")] == pytest.approx([m["reward/total"] for m in logged])
    text = events.Tensors("completions/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert rows[-1]["completion"].replace("|", "\\|") in text
    # W&B (offline): metrics and recipe in the run log, the completions as Tables
    (wandb_run,) = (run / "wandb").glob("offline-run-*")
    record = next(wandb_run.glob("*.wandb")).read_bytes()
    assert b"reward/total" in record and b"algorithm.clip_high" in record and b"day-one" in record
    tables = sorted((wandb_run / "files" / "media" / "table").glob("completions_*.table.json"))
    assert len(tables) == 2
    table = json.loads(tables[-1].read_text())
    assert table["columns"][:3] == ["group", "prompt", "completion"] and len(table["data"]) == 5
    assert [r[2] for r in table["data"]] == [r["completion"] for r in rows[5:]]
    # MLflow (file store): metric history, the recipe as params, the completions table
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    (experiment,) = [e for e in client.search_experiments() if e.name == "rltune"]
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.run_name == "day-one" and mlrun.info.status == "FINISHED"  # each tracker finished at close
    history = client.get_metric_history(mlrun.info.run_id, "reward/total")
    assert [h.value for h in sorted(history, key=lambda h: h.step)] == pytest.approx(
        [m["reward/total"] for m in logged]
    )
    assert mlrun.data.params["train.lr"] == str(cfg.train.lr)
    artifacts = [a.path for a in client.list_artifacts(mlrun.info.run_id, "completions")]
    assert artifacts == ["completions/step_000001.json", "completions/step_000002.json"]


def test_missing_tracker_package_stops_before_loading(tmp_path, tiny_model_dir, arithmetic_file):
    from rltune.trainer import Trainer

    cfg = demo_recipe(tmp_path, tiny_model_dir, arithmetic_file, {"train": {"report_to": ["aim"]}})
    with pytest.raises(ConfigError, match="pip install aim"):
        Trainer(cfg)
    with pytest.raises(ConfigError, match="unknown trackers"):
        demo_recipe(tmp_path, tiny_model_dir, arithmetic_file, {"train": {"report_to": ["tensorbord"]}})


def test_checkpoints_carry_a_model_card_and_push_to_the_hub(tmp_path, tiny_model_dir, arithmetic_file, monkeypatch):
    import huggingface_hub

    from rltune.trainer import Trainer

    calls = []
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw))
    )

    def upload_folder(self, **kw):
        calls.append(("upload", kw["repo_id"], kw))
        files = sorted(p.name for p in Path(kw["folder_path"]).iterdir())
        calls[-1][2]["files"] = files
        if len([c for c in calls if c[0] == "upload"]) == 1:
            raise OSError("connection reset")  # the first upload fails: the run goes on

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    sections = {
        "rollout": {"engine": "hf", "group_size": 4},
        "train": {"steps": 2, "prompts_per_step": 2, "save_every": 1, "push_to_hub": True, "hub_model_id": "me/m"},
    }
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    cfg = demo_recipe(tmp_path, tiny_model_dir, arithmetic_file, sections)
    with pytest.raises(RLTuneError, match="no Hugging Face token"):
        Trainer(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # stopped before anything ran
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    with Trainer(cfg) as trainer:
        trainer.train()
    uploads = [c for c in calls if c[0] == "upload"]
    assert [Path(c[2]["folder_path"]).name for c in uploads] == ["checkpoint-1", "checkpoint-2"]
    assert all(c[1] == "me/m" and c[2]["ignore_patterns"] == ["trainer_state.pt"] for c in uploads)
    assert ("create", "me/m", {"private": True, "exist_ok": True}) in calls
    assert {"README.md", "config.json", "model.safetensors", "recipe.yaml"} <= set(uploads[-1][2]["files"])
    card = (tmp_path / "run" / "checkpoint-2" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == str(tiny_model_dir) and "rltune" in front["tags"]
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"| reward/total | {last['reward/total']:.4g} |" in card and "for 2 RL steps" in card


def test_help_shows_every_default_and_describes_every_flag(tmp_path):
    from rltune.cli import build_compare_parser, build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict)).choices
    for name, sub in [*subparsers.items(), ("eval compare", build_compare_parser())]:
        for action in sub._actions:
            assert action.help, f"rltune {name}: {action.option_strings or action.dest} has no help"
    proc = run_rltune("eval", "--help", cwd=tmp_path)
    text = " ".join(proc.stdout.split())
    for shown in ("(default: 0.6)", "(default: 0.95)", "(default: 1024)", "(default: 16)", "(default: [1])"):
        assert shown in text
    assert run_rltune("--version", cwd=tmp_path).stdout.strip() == "rltune 0.1.0"


def test_recipe_show_and_list(tmp_path, tiny_model_dir, arithmetic_file):
    recipe = _plugin_folder(tmp_path, tiny_model_dir, arithmetic_file)
    proc = run_rltune("recipe", "show", recipe, "rewards.0.weight=0.5", "train.lr=1e-3", cwd=tmp_path)
    shown = yaml.safe_load(proc.stdout)
    assert shown["rewards"][0] == {"name": "math_accuracy", "weight": 0.5, "kwargs": {}}
    assert shown["train"]["lr"] == 1e-3 and shown["algorithm"]["clip_low"] == 0.2  # defaults filled in
    assert f"rewards[1]: rewards my_rewards:brevity -> {tmp_path / 'my_rewards.py'}" in proc.stdout
    assert f"-> {tmp_path / 'sub' / 'extra.py'}" in proc.stdout
    listing = run_rltune("list", cwd=tmp_path).stdout
    entries = [line.split(None, 1) for line in listing.splitlines() if line.startswith("  ")]
    assert {"math_accuracy", "grpo", "clipped", "kl", "vllm", "cosine_length"} <= {e[0] for e in entries}
    assert all(len(e) == 2 and len(e[1]) > 20 for e in entries), [e for e in entries if len(e) < 2]
    only = run_rltune("list", "objectives", cwd=tmp_path).stdout
    assert only.startswith("objectives:") and "rewards:" not in only
    bad = run_rltune("recipe", "show", recipe, "rewards.7.weight=1", cwd=tmp_path, ok=False)
    assert bad.returncode == 2 and "rewards is a list of 3" in bad.stderr


def test_overrides_index_lists():
    raw = {"rewards": [{"name": "math_accuracy"}], "algorithm": {"loss_terms": []}}
    apply_override(raw, "rewards.0.weight=0.5")
    apply_override(raw, "rewards.1.name=format")
    apply_override(raw, "algorithm.loss_terms.0={name: entropy, coef: 0.01}")
    assert raw["rewards"] == [{"name": "math_accuracy", "weight": 0.5}, {"name": "format"}]
    assert raw["algorithm"]["loss_terms"] == [{"name": "entropy", "coef": 0.01}]
    for bad, message in [
        ("rewards.3.weight=1", "list of 2"),
        ("rewards.first.weight=1", "not 'first'"),
        ("rewards.0.weight.x=1", "is a value"),
    ]:
        with pytest.raises(ConfigError, match=message):
            apply_override(raw, bad)


def test_plot_refuses_a_key_no_run_logged(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "reward/total": 0.5, "kl": 0.1}\n')
    proc = run_rltune(
        "plot", run, "--keys", "reward/total,reward/nope", "--out", tmp_path / "c.png", cwd=tmp_path, ok=False
    )
    assert proc.returncode == 2 and "'reward/nope'" in proc.stderr and "kl, reward/total" in proc.stderr
    assert not (tmp_path / "c.png").exists()
    run_rltune("plot", run, "--keys", "reward/total,kl", "--out", tmp_path / "c.png", cwd=tmp_path)
    assert (tmp_path / "c.png").stat().st_size > 0


def test_console_is_quiet_with_a_preflight_block_and_one_line_per_step(tmp_path, demo_assets, monkeypatch):
    model_dir, data_file = demo_assets
    for name in QUIET_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)  # set by in-process tests before: the command must quiet them itself
    recipe = write_recipe(
        tmp_path,
        {
            "model": {"path": str(model_dir)},
            "data": {"path": str(data_file)},
            "train": {"steps": 2, "prompts_per_step": 4, "output_dir": str(tmp_path / "run"), "report_to": []},
        },
    )
    quiet = run_rltune("train", recipe, cwd=tmp_path)
    out = quiet.stdout + quiet.stderr
    assert "prompts      4 per process (train.prompts_per_step) x 1 = 4 per step" in out
    assert "completions  8 per prompt = 32 per step" in out
    steps = [line for line in out.splitlines() if " rltune: step " in line]
    assert len(steps) == 2 and all("math_accuracy=" in s and "format=" in s and "total=" in s for s in steps)
    assert "step 2/2" in steps[1]
    noise = [line for line in out.splitlines() if re.search(r"WARNING (?!rltune)|Warning|it/s\]|Loading", line)]
    assert not noise, noise
    verbose = run_rltune("train", recipe, "train.overwrite_output_dir=true", "--verbose", cwd=tmp_path)
    assert "WARNING" in verbose.stderr and "vllm" in verbose.stderr  # the libraries' chatter is back on request


@pytest.mark.parametrize("engine_name", ["hf", "vllm"])
def test_eval_progress_advances_within_a_call(engine_name, tiny_model_dir, capsys):
    from rltune.config import ModelConfig
    from rltune.models import load_causal_lm, load_tokenizer
    from rltune.rollout import SamplingSettings, build_engine

    tokenizer = load_tokenizer(str(tiny_model_dir))
    if engine_name == "hf":
        model = load_causal_lm(str(tiny_model_dir), ModelConfig(path=str(tiny_model_dir)))
        engine = build_engine("hf", model=model, tokenizer=tokenizer, batch_size=4)
    else:
        engine = build_engine("vllm", model_path=str(tiny_model_dir), seed=0, kv_cache_gib=1)
    ids = [tokenizer("1+2=", add_special_tokens=False)["input_ids"]] * 3
    engine.generate(ids, [{}] * 3, SamplingSettings(n=4, max_tokens=3, seed=0, progress="sampling test"))
    err = capsys.readouterr().err
    assert "sampling test" in err and "12/12" in err
    engine.generate(ids, [{}] * 3, SamplingSettings(n=4, max_tokens=3, seed=0))
    assert "sampling" not in capsys.readouterr().err
    engine.close()


def test_the_wheel_holds_every_module_and_recipe_of_the_tree(tmp_path):
    """A `pip install rltune` (not editable) gets every source file: a package missing from pyproject's list
    installs without it and fails at its first import."""
    import shutil
    import zipfile

    # built from the tracked files alone: a build/ folder left in the checkout would fill in what is missing
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    source = tmp_path / "source"
    for path in tracked.split():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, source / path)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("rltune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    layout = {"rltune": "rltune", "rewards": "rltune/rewards", "eval": "rltune/eval", "recipes": "rltune/recipes"}
    expected = {
        layout[path.split("/")[0]] + path[path.index("/") :]
        for path in tracked.split()
        if path.split("/")[0] in layout and path.endswith((".py", ".yaml"))
    }
    assert expected and not expected - names, sorted(expected - names)
