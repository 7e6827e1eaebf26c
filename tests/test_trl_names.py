"""trl's GRPOConfig names: every option of the installed trl that changes training has a row in the
migration table (so it cannot go stale when trl adds one), each row names a real rltune key, and a trl name
in a recipe gets the hint."""

import dataclasses
import re
import subprocess
import sys
import typing

import pytest

from rltune.config import RecipeConfig, load_recipe
from rltune.errors import ConfigError
from rltune.trl_names import TRL_NAMES

trl = pytest.importorskip("trl")

# TrainingArguments options that change what a GRPO run trains (the rest set up logging, hardware, the Hub)
TRAINING_ARGUMENTS = [
    "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm", "lr_scheduler_type",
    "warmup_steps", "warmup_ratio", "max_steps", "num_train_epochs", "per_device_train_batch_size",
    "gradient_accumulation_steps", "bf16", "fp16", "seed", "gradient_checkpointing", "output_dir", "save_steps",
    "save_total_limit", "resume_from_checkpoint",
]  # fmt: skip


def rltune_keys() -> set[str]:
    keys = set()

    def walk(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[field.name]):
                walk(hints[field.name], f"{prefix}{field.name}.")
            else:
                keys.add(prefix + field.name)

    walk(RecipeConfig)
    return keys


def test_every_grpo_option_of_the_installed_trl_is_in_the_table():
    from transformers import TrainingArguments

    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    grpo_only = [f.name for f in dataclasses.fields(trl.GRPOConfig) if f.name not in base]
    assert len(grpo_only) > 40  # the installed trl's own options were read
    missing = [name for name in grpo_only + TRAINING_ARGUMENTS if name not in TRL_NAMES]
    assert not missing, f"add these trl options to rltune/trl_names.py: {missing}"


def test_every_rltune_key_the_table_names_exists():
    keys = rltune_keys() | {"rewards"}
    named = {
        m
        for target in TRL_NAMES.values()
        for m in re.findall(r"\b(?:model|data|rollout|algorithm|train|eval|rewards)(?:\.\w+)+", target)
    }
    named = {re.sub(r"\[\d+\]", "", n) for n in named}
    assert named and not named - keys, sorted(named - keys)


def test_a_trl_name_in_a_recipe_says_where_it_lives():
    with pytest.raises(ConfigError, match=r"unknown key 'train.learning_rate' \(trl's 'learning_rate' is train.lr\)"):
        load_recipe("recipes/demo_cpu.yaml", ["train.learning_rate=1e-5"])
    with pytest.raises(ConfigError, match=r"trl's 'beta' is algorithm.kl_coef"):
        load_recipe("recipes/demo_cpu.yaml", ["algorithm.beta=0.04"])


def test_python_m_prints_the_whole_table_and_importing_prints_nothing():
    table = subprocess.run(
        [sys.executable, "-m", "rltune.trl_names"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert table[:2] == ["| trl GRPOConfig | rltune |", "|---|---|"]
    rows = [re.match(r"\| `([^`]+)` \| (.+) \|$", line) for line in table[2:]]
    assert all(rows) and {m.group(1): m.group(2) for m in rows} == TRL_NAMES
    imported = subprocess.run([sys.executable, "-c", "import rltune.trl_names"], capture_output=True, text=True)
    assert imported.returncode == 0 and imported.stdout == ""
