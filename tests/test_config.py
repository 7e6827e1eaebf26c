import pytest

from conftest import REPO
from rltune.config import load_recipe
from rltune.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


BASE = "model: {path: m}\ndata: {path: d.jsonl}\n"


def test_demo_recipe_loads():
    cfg = load_recipe(REPO / "recipes/demo_cpu.yaml")
    assert cfg.algorithm.clip_high == 0.28 and cfg.rewards[1].name == "format"


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, BASE + "train: {lrr: 0.1}\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert "train.lrr" in str(err.value) and str(path) in str(err.value) and "did you mean 'lr'" in str(err.value)


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train.steps must be of type int, got str"):
        load_recipe(write(tmp_path, BASE + "train: {steps: many}\n"))
    with pytest.raises(ConfigError, match=r"rollout.engine must be of type str"):
        load_recipe(write(tmp_path, BASE + "rollout: {engine: [vllm]}\n"))
    with pytest.raises(ConfigError, match=r"algorithm.loss_aggregation must be one of"):
        load_recipe(write(tmp_path, BASE + "algorithm: {loss_aggregation: total}\n"))
    with pytest.raises(ConfigError, match=r"rewards\[0\].weight must be of type float"):
        load_recipe(write(tmp_path, BASE + "rewards: [{name: format, weight: heavy}]\n"))
    assert load_recipe(write(tmp_path, BASE + "train: {compile: lm_head}\n")).train.compile == "lm_head"
    with pytest.raises(ConfigError, match=r"train.compile: 'head' fits none of"):
        load_recipe(write(tmp_path, BASE + "train: {compile: head}\n"))


def test_values_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="rollout.group_size must be at least 2"):
        load_recipe(write(tmp_path, BASE + "rollout: {group_size: 1}\n"))
    with pytest.raises(ConfigError, match="model.path is required"):
        load_recipe(write(tmp_path, "data: {path: d.jsonl}\n"))
    with pytest.raises(ConfigError, match="rollout.hf_compile applies to the hf engine only"):
        load_recipe(write(tmp_path, BASE + "rollout: {engine: vllm, hf_compile: true}\n"))
    # float32 weights under bf16 autocast: keys come out float32 (rotary), values bf16, one cache dtype
    with pytest.raises(ConfigError, match="load the weights in bfloat16 .model.dtype. with train.mixed_precision=no"):
        load_recipe(write(tmp_path, BASE + "rollout: {engine: hf, hf_compile: true}\ntrain: {mixed_precision: bf16}\n"))
    bf16 = "model: {path: m, dtype: bfloat16}\ndata: {path: d.jsonl}\nrollout: {engine: hf, hf_compile: true}\n"
    assert load_recipe(write(tmp_path, bf16 + "train: {mixed_precision: bf16}\n")).rollout.hf_compile
    with pytest.raises(ConfigError, match="rollout.vllm.sleep applies to the colocated vllm engine only"):
        load_recipe(write(tmp_path, BASE + "rollout: {engine: hf, vllm: {sleep: true}}\n"))


def test_overrides_apply_and_are_validated(tmp_path):
    path = write(tmp_path, BASE)
    cfg = load_recipe(
        path, ["train.lr=1e-5", "rollout.group_size=4", "rewards=[{name: format}]", "algorithm.dual_clip=3"]
    )
    assert cfg.train.lr == 1e-5 and isinstance(cfg.train.lr, float)
    assert cfg.rollout.group_size == 4 and cfg.rewards[0].name == "format"
    assert cfg.algorithm.dual_clip == 3.0
    with pytest.raises(ConfigError, match="unknown key 'train.nope'"):
        load_recipe(path, ["train.nope=1"])
    with pytest.raises(ConfigError, match="must look like"):
        load_recipe(path, ["train.lr"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(write(tmp_path, "model: [unclosed\n"))


RL_RECIPES = sorted(p for p in (REPO / "recipes").glob("*.yaml") if "sft" not in p.name and "dto" not in p.name)


def test_dto_recipes_load():
    from rltune.dto import DTORecipe, check_recipe

    paths = list((REPO / "recipes").glob("dto*.yaml"))
    assert paths
    for path in paths:
        recipe = load_recipe(path, cls=DTORecipe)
        check_recipe(recipe)
        assert recipe.prefer.loss in ("simpo", "dpo")


def test_sft_recipes_load():
    from rltune.sft import SFTRecipe

    for path in (REPO / "recipes").glob("*sft*.yaml"):
        assert load_recipe(path, cls=SFTRecipe).sft.loss in ("ce", "entropy_sft")


@pytest.mark.parametrize("path", RL_RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_builds_its_plug_ins(path):
    from rltune.advantages import ADVANTAGES
    from rltune.loss_terms import LOSS_TERMS
    from rltune.objectives import OBJECTIVES
    from rltune.reward_pipeline import RewardPipeline

    cfg = load_recipe(path)
    RewardPipeline(cfg.rewards)
    ADVANTAGES.get(cfg.algorithm.advantage)
    OBJECTIVES.get(cfg.algorithm.objective)(cfg.algorithm, **cfg.algorithm.objective_kwargs)
    for spec in cfg.algorithm.loss_terms:
        LOSS_TERMS.get(spec.name)(**spec.kwargs)


# one bad value per check of `validate`, each refused by name (a check that is switched off lets it through)
REFUSED = [
    ("rollout: {group_size: 1}", "rollout.group_size must be at least 2"),
    ("rollout: {temperature: 0}", "rollout.temperature must be > 0"),
    ("rollout: {engine: hf, hf_compile: true}\ntrain: {mixed_precision: bf16}", "rollout.hf_compile does not run"),
    ("train: {async_steps: 1}\nrollout: {vllm: {sleep: true}}", "train.async_steps overlaps sampling"),
    ("rollout: {top_k: -1}", "rollout.top_k must be >= 0"),
    ("rollout: {min_p: 1.0}", r"rollout.min_p must be in \[0, 1\)"),
    ("rollout: {repetition_penalty: 0}", "rollout.repetition_penalty must be > 0"),
    ("rollout: {stop: ['']}", "rollout.stop must be a list of non-empty strings"),
    ("rollout: {engine: hf, repetition_penalty: 1.2}", "rollout.repetition_penalty applies to the vLLM engines only"),
    ("rollout: {engine: hf, generation_kwargs: {seed: 1}}", "rollout.generation_kwargs applies to the vLLM engines"),
    ("rollout: {top_k: 20}", "rollout.top_k makes the vllm engine sample from.*set train.sync_check=false"),
    ("rollout: {engine: vllm_server, min_p: 0.1}", "rollout.min_p makes the vllm_server engine"),
    ("rollout: {top_p: 0.9}", "rollout.top_p makes the vllm engine"),
    ("rollout: {repetition_penalty: 1.1}", "rollout.repetition_penalty makes the vllm engine"),
    ("rewards: []", "rewards must name at least one reward"),
    ("rewards: [{weight: 1.0}]", r"rewards\[0\].name is required"),
    ("algorithm: {dual_clip: 1.0}", "algorithm.dual_clip must be > 1"),
    ("algorithm: {keep_per_group: 9}", r"algorithm.keep_per_group must be between 1 and rollout.group_size \(8\)"),
    ("algorithm: {is_correction: tis}", "algorithm.is_correction .tis. weighs"),
    ("algorithm: {is_cap: 1.0, is_correction: tis, old_logprobs: recompute}", "algorithm.is_cap must be > 1"),
    ("train: {report_to: [tensorbord]}", r"train.report_to names unknown trackers \['tensorbord'\]"),
    ("train: {push_to_hub: true}", "train.hub_model_id is required with train.push_to_hub"),
    ("train: {betas: [0.9]}", "train.betas must be two numbers"),
    ("train: {prompts_per_step: 2}\nalgorithm: {mini_batches: 17}", r"algorithm.mini_batches \(17\) exceeds the 16"),
]


@pytest.mark.parametrize("section, message", REFUSED, ids=[m.split(" ")[0] for _, m in REFUSED])
def test_each_value_check_refuses_its_bad_value(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(write(tmp_path, BASE + section + "\n"))


def test_sampling_cut_offs_pass_where_the_engine_and_the_sync_check_allow_them(tmp_path):
    for section in (
        "rollout: {top_k: 20, min_p: 0.05, top_p: 0.9, repetition_penalty: 1.1}\ntrain: {sync_check: false}",
        "rollout: {engine: hf, top_k: 20, min_p: 0.05, top_p: 0.9, stop: ['```']}",
    ):
        load_recipe(write(tmp_path, BASE + section + "\n"))


def test_a_reward_given_as_a_python_object_must_be_callable():
    from rltune.config import RecipeConfig, RewardSpec, validate

    cfg = RecipeConfig()
    cfg.model.path, cfg.data.path = "m", "d.jsonl"
    cfg.rewards = [RewardSpec("mine", function=42)]
    with pytest.raises(ConfigError, match=r"rewards\[0\].function must be callable"):
        validate(cfg)
    cfg.rewards = [RewardSpec("mine", function=len)]
    validate(cfg)


def test_placeholders_resolve_escape_and_refuse_malformed_ones(tmp_path, monkeypatch):
    from rltune.config import recipe_yaml

    monkeypatch.setenv("RLTUNE_TEST_TOKEN", "tok-123")
    text = BASE.replace("{path: m}", "{path: 'org/${env:RLTUNE_TEST_TOKEN}/m'}")
    cfg = load_recipe(write(tmp_path, text + "train: {run_name: 'cost $${HOME} ${env:RLTUNE_TEST_TOKEN}'}\n"))
    assert cfg.model.path == "org/tok-123/m" and cfg.train.run_name == "cost ${HOME} tok-123"
    saved = recipe_yaml(cfg)
    assert "tok-123" not in saved and "cost $${HOME} ${env:RLTUNE_TEST_TOKEN}" in saved
    for bad in ["${env:}", "${env:RLTUNE_TEST_TOKEN", "${ENV:RLTUNE_TEST_TOKEN}", "a ${HOME} b"]:
        with pytest.raises(ConfigError, match=r"train.run_name: a malformed placeholder in .*or \$\$\{ for a literal"):
            load_recipe(write(tmp_path, BASE + f"train: {{run_name: '{bad}'}}\n"))
    with pytest.raises(ConfigError, match=r"train.lr must be of type float: \$\{env:NAME\} placeholders work in text"):
        load_recipe(write(tmp_path, BASE + "train: {lr: '${env:RLTUNE_TEST_TOKEN}'}\n"))


def test_an_uncached_hub_model_offline_is_named_at_once(tmp_path, monkeypatch):
    import time

    from rltune.config import check_before_loading

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    cfg = load_recipe(write(tmp_path, "model: {path: someone/no-such-model}\ndata: {path: d.jsonl}\n"
                                      f"train: {{output_dir: {tmp_path / 'run'}}}\n"))  # fmt: skip
    (tmp_path / "d.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="'someone/no-such-model' is no local folder, and HF_HUB_OFFLINE is set"):
        check_before_loading(cfg)
    assert time.monotonic() - started < 5


def test_a_section_that_is_no_mapping_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"r\.yaml: a recipe is a mapping of sections, got list"):
        load_recipe(write(tmp_path, "- model\n- data\n"))
    with pytest.raises(ConfigError, match=r"r\.yaml: rollout must be a mapping, got int 5"):
        load_recipe(write(tmp_path, BASE + "rollout: 5\n"))


def test_one_model_turn_is_a_valid_episode_limit(tmp_path):
    """rollout.max_turns=1: a single turn with the environment's stop strings, allowed; 0 is refused."""
    assert load_recipe(write(tmp_path, BASE + "rollout: {max_turns: 1}\n")).rollout.max_turns == 1
    with pytest.raises(ConfigError, match="rollout.max_turns must be at least 1"):
        load_recipe(write(tmp_path, BASE + "rollout: {max_turns: 0}\n"))


def test_a_list_override_appends_one_past_the_end_and_names_the_valid_indices(tmp_path):
    path = write(tmp_path, BASE + "rewards: [{name: math_accuracy}, {name: format}]\n")
    cfg = load_recipe(path, ["rewards.2.name=repetition", "rewards.1.weight=0.25"])
    assert [r.name for r in cfg.rewards] == ["math_accuracy", "format", "repetition"]
    assert cfg.rewards[1].weight == 0.25
    with pytest.raises(ConfigError, match=r"rewards is a list of 2; index it with 0\.\.1 \(or 2 to append\), not '5'"):
        load_recipe(path, ["rewards.5.name=format"])


def test_a_recipe_other_than_a_training_one_needs_its_model_and_data_paths(tmp_path):
    from rltune.sft import SFTRecipe

    with pytest.raises(ConfigError, match=r"r\.yaml: data\.path is required"):
        load_recipe(write(tmp_path, "model: {path: m}\n"), cls=SFTRecipe)
    with pytest.raises(ConfigError, match=r"r\.yaml: model\.path is required"):
        load_recipe(write(tmp_path, "data: {path: d.jsonl}\n"), cls=SFTRecipe)


def test_the_output_folder_is_made_with_its_parents_or_its_problem_is_named(tmp_path, demo_assets):
    from conftest import demo_recipe
    from rltune.config import check_before_loading

    cfg = demo_recipe(tmp_path, *demo_assets)
    cfg.train.output_dir = str(tmp_path / "runs" / "nested" / "deeper")
    check_before_loading(cfg)
    assert (tmp_path / "runs" / "nested" / "deeper").is_dir()
    (tmp_path / "a-file").write_text("")
    cfg.train.output_dir = str(tmp_path / "a-file" / "run")
    with pytest.raises(ConfigError, match=r"cannot be written: Not a directory$"):
        check_before_loading(cfg)
