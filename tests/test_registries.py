"""Registries: a name is taken once, a plug-in cannot replace a built-in, a clash is found when it is made."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rltune.errors import ConfigError
from rltune.registry import Registry


def test_a_plugin_cannot_take_a_builtin_name_even_before_the_builtins_load():
    # A fresh interpreter: the user's module registers before anything looked a reward up.
    code = (
        "from rltune.rewards import REWARDS\n"
        "def format(completion, row):\n    return 1.0\n"
        "REWARDS.register('format')(format)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "reward 'format' is registered twice: by rltune.rewards.format.format_reward" in proc.stderr


def test_two_plugins_cannot_share_a_name_and_the_same_one_again_is_no_clash():
    registry = Registry("objective")

    def mine(*args):
        return None

    def theirs(*args):
        return None

    registry.register("mine")(mine)
    registry.register("mine")(mine)  # the same object again: a re-imported module
    with pytest.raises(ConfigError, match=r"objective 'mine' is registered twice: by .*\.mine and by .*\.theirs"):
        registry.register("mine")(theirs)
    assert registry.get("mine") is mine


@pytest.mark.parametrize("name", ["", "  ", "pkg.mod:attr"])
def test_names_that_could_never_be_looked_up_are_refused(name):
    with pytest.raises(ConfigError, match="non-empty word without ':'"):
        Registry("reward").register(name)


def test_an_unknown_name_suggests_the_closest_and_import_paths_bypass_the_registry():
    from rltune.rewards import REWARDS

    with pytest.raises(ConfigError, match="Did you mean 'math_accuracy'"):
        REWARDS.get("math_acuracy")
    assert REWARDS.get("plugins.my_rewards:brevity").__name__ == "brevity"


def test_a_local_file_named_like_an_installed_module_is_named_not_silently_replaced(tmp_path, monkeypatch):
    from rltune.registry import import_object

    (tmp_path / "math_verify.py").write_text("def f(completion, row):\n    return 1.0\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"'math_verify' is the installed module .*math_verify/__init__.py, not "
        rf"{tmp_path / 'math_verify.py'} in the working folder; name the file instead: './math_verify.py:f'",
    ):
        import_object("math_verify:f", "reward")
    assert import_object("./math_verify.py:f", "reward")(None, {}) == 1.0


BUILT_IN = {
    "rewards": "cosine_length digit_sum diversity_partition final_number format llm_judge math_accuracy "
    "number_between overlong repetition repetition_dense reward_model thinking_efficiency",
    "advantages": "dr_grpo grpo rloo",
    "objectives": "cispo clipped gspo nft",
    "loss-terms": "entropy kl tea",
    "engines": "hf vllm vllm_server",
    "environments": "python_tool tool_calling",
}


def test_every_built_in_is_listed_in_a_fresh_process():
    """`rltune list` in a new interpreter (nothing imported beforehand): each registry finds its built-ins by
    itself, the environments included."""
    out = subprocess.run(
        [sys.executable, "-m", "rltune", "list"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    listed: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            kind = line[:-1]
        elif line.strip():
            listed.setdefault(kind, []).append(line.split()[0])
    assert {kind: sorted(names) for kind, names in listed.items()} == {k: v.split() for k, v in BUILT_IN.items()}
