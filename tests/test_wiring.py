"""What a user sets in a recipe or on the command line arrives where it acts.

A component built by hand in a test can be right while the value the user sets never reaches it. These
tests set each value the way a user does (a recipe section, a CLI flag, a changed checkpoint recipe)
and look for it where it acts: the reward pipeline, the eval cache, `rltune eval compare`, resume.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import yaml
from test_trainer import recipe

from rltune.checkpoint import FIXED_ON_RESUME, check_resume_recipe
from rltune.config import RewardSpec, recipe_yaml
from rltune.errors import RLTuneError
from rltune.trainer import Trainer

# --- reward_options reach the trainer's reward pipeline ----------------------------------------------


def test_reward_options_from_the_recipe_reach_the_reward_pipeline(tmp_path, demo_assets):
    raising = [RewardSpec("plugins.my_rewards:always_raises", 1.0)]
    # on_error=fail stops at the first failed call, even where max_error_fraction would let every call fail
    options = {"on_error": "fail", "timeout_s": 7.5, "max_error_fraction": 1.0}
    cfg = recipe(tmp_path, *demo_assets, reward_options=options)
    cfg.rewards = raising
    trainer = Trainer(cfg)
    try:
        assert trainer.rewards.timeout_s == 7.5
        with pytest.raises(RLTuneError, match="always_raises"):
            trainer.collect_rollouts(0)
    finally:
        trainer.close()
    cfg = recipe(tmp_path / "default", *demo_assets)
    cfg.rewards = raising
    trainer = Trainer(cfg)  # on_error left at its default, zero: but every call failed, so the step stops
    try:
        assert trainer.rewards.timeout_s == 30.0
        with pytest.raises(RLTuneError, match="failed on 16 of its 16 calls this step"):
            trainer.collect_rollouts(0)
    finally:
        trainer.close()
    cfg = recipe(tmp_path / "tolerant", *demo_assets, reward_options={"max_error_fraction": 1.0})
    cfg.rewards = raising
    trainer = Trainer(cfg)  # failures allowed on every call: the run goes on, the reward scores 0
    try:
        batch, _ = trainer.collect_rollouts(0)
        assert batch.reward_components["always_raises"].abs().sum() == 0
    finally:
        trainer.close()


# --- resume refuses every setting it promises to refuse ----------------------------------------------


CHANGED = {
    "model.path": ("model", "path", "another-model"),
    "model.lora": ("model", "lora", {"r": 8}),
    "data.path": ("data", "path", "other.jsonl"),
    "data.subset": ("data", "subset", "main"),
    "data.split": ("data", "split", "test"),
    "data.shuffle": ("data", "shuffle", False),
    "train.seed": ("train", "seed", 7),
    "algorithm.loss_terms": ("algorithm", "loss_terms", [{"name": "entropy", "coef": 0.01}]),
    "train.async_steps": ("train", "async_steps", 1),
}


def test_every_fixed_setting_is_listed_for_the_refusal_test():
    assert set(CHANGED) == set(FIXED_ON_RESUME)


@pytest.mark.parametrize("key", sorted(CHANGED))
def test_resume_refuses_each_setting_it_cannot_apply(tmp_path, demo_assets, key):
    cfg = recipe(tmp_path, *demo_assets)
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    saved = yaml.safe_load(recipe_yaml(cfg))
    (checkpoint / "recipe.yaml").write_text(yaml.safe_dump(saved))
    section, field, value = CHANGED[key]
    assert saved[section][field] != value
    current = json.loads(json.dumps(saved))
    current[section][field] = value
    current["train"]["lr"] = saved["train"]["lr"] * 2  # applied, not refused
    with pytest.raises(RLTuneError, match=f"{key}: .* -> "):
        check_resume_recipe(checkpoint, yaml.safe_dump(current))
    current[section][field] = saved[section][field]
    changes = check_resume_recipe(checkpoint, yaml.safe_dump(current))
    assert [c[0] for c in changes] == ["train.lr"]


def test_resume_refusal_is_by_whole_key_not_by_prefix(tmp_path):
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    (checkpoint / "recipe.yaml").write_text(yaml.safe_dump({"train": {"seed": 0, "seed_offset": 1}}))
    changes = check_resume_recipe(checkpoint, yaml.safe_dump({"train": {"seed": 0, "seed_offset": 2}}))
    assert changes == [("train.seed_offset", 1, 2)]


# --- rltune eval: every flag reaches the run, every cache key field misses the cache ------------------


@pytest.fixture
def bench(tmp_path):
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps({"question": f"{a}+{a}=", "answer": str(2 * a)}) + "\n" for a in range(5)))
    return path


def eval_run(model, bench, out, *flags):
    """`rltune eval` in this process (a subprocess per run would cost a torch import each)."""
    from rltune.cli import main

    base = ["eval", "--model", str(model), "--benchmarks", f"{bench}:question:answer", "--engine", "hf",
            "--out", str(out), "--verbose"]  # fmt: skip
    assert main([*base, *flags]) == 0


def test_every_eval_flag_reaches_the_results(tmp_path, tiny_model_dir, bench):
    out = tmp_path / "eval"
    flags = [
        "--n", "3", "--k", "1,3", "--temperature", "0.9", "--top-p", "0.8", "--max-tokens", "5", "--seed", "11",
        "--limit", "4", "--instruction", "Q: {question} A:", "--no-chat-template", "--answer-fallback",
    ]  # fmt: skip
    eval_run(tiny_model_dir, bench, out, *flags)
    results = json.loads((out / "results.json").read_text())
    s = results["settings"]
    assert (s["n"], s["k"], s["temperature"], s["top_p"], s["max_tokens"], s["seed"], s["limit"]) == (
        3,
        [1, 3],
        0.9,
        0.8,
        5,
        11,
        4,
    )
    assert (s["instruction"], s["use_chat_template"], s["answer_fallback"]) == ("Q: {question} A:", False, True)
    problems = results["benchmarks"]["sums"]["problems"]
    assert [p["question"] for p in problems] == ["0+0=", "1+1=", "2+2=", "3+3="]  # the first 4, in file order
    assert all(len(p["samples"]) == 3 for p in problems)
    assert all(0 < sample["tokens"] <= 5 for p in problems for sample in p["samples"])
    assert {"pass@1", "pass@3", "maj@3"} <= set(results["benchmarks"]["sums"]["metrics"])


CACHE_KEY_FLAGS = {
    "temperature": ("--temperature", "0.9"),
    "top-p": ("--top-p", "0.5"),
    "max-tokens": ("--max-tokens", "3"),
    "seed": ("--seed", "5"),
    "instruction": ("--instruction", "Q: {question}"),
    "same settings": (),
}


def test_each_setting_of_the_eval_cache_key_misses_the_cache(tmp_path, tiny_model_dir, bench, caplog):
    common = ["--n", "2", "--max-tokens", "4", "--no-chat-template"]
    eval_run(tiny_model_dir, bench, tmp_path / "first", *common)
    answered = {}
    for name, flags in CACHE_KEY_FLAGS.items():
        out = tmp_path / name
        shutil.copytree(tmp_path / "first" / "cache", out / "cache")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="rltune"):
            eval_run(tiny_model_dir, bench, out, *common, *flags)
        answered[name] = "answered from the cache" in caplog.text
        if not flags:
            assert "sums: 5 of 5 problems answered from the cache" in caplog.text
    assert answered == {name: flags == () for name, flags in CACHE_KEY_FLAGS.items()}


# --- rltune eval compare: every setting it promises to check ------------------------------------------


def test_compare_names_each_setting_it_checks(tmp_path):
    from rltune.eval.plots import COMPARED_SETTINGS, run_differences
    from rltune.eval.runner import EvalSettings

    assert set(COMPARED_SETTINGS) >= {
        "n",
        "temperature",
        "top_p",
        "max_tokens",
        "instruction",
        "use_chat_template",
        "system_prompt",
        "answer_fallback",
    }
    base = {"settings": vars(EvalSettings()), "benchmarks": {}}
    other_values = {
        "n": 8,
        "temperature": 1.0,
        "top_p": 0.5,
        "max_tokens": 64,
        "instruction": "{question}",
        "use_chat_template": False,
        "system_prompt": "Be brief.",
        "answer_fallback": True,
    }
    for key in COMPARED_SETTINGS:
        other = {"settings": {**base["settings"], key: other_values[key]}, "benchmarks": {}}
        assert [d.split(" (")[0] for d in run_differences([("a", base), ("b", other)])] == [key]
    assert run_differences([("a", base), ("b", {**base, "settings": {**base["settings"], "seed": 3}})]) == []
