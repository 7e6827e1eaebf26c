"""Every CPU recipe runs for a few steps through the commands a user types: `rltune demo RECIPE` (accuracy
before and after; the demo recipe and its variants on the real vLLM CPU engine, the other methods on the hf
engine) for the RL recipes, `rltune sft` for the SFT one. They share
one warmed-up demo model; each run checks the metrics its method writes."""

import json
import math

import pytest

from conftest import REPO, run_rltune

pytestmark = pytest.mark.slow

SHORT = ["train.steps=2", "train.prompts_per_step=4", "train.progress_bar=false", "train.report_to=[]"]

# recipe: metrics its method must log, each a finite number (and what else must hold of them)
RL_RECIPES = {
    "demo_cpu": ["reward/math_accuracy", "reward/format"],
    "darling_cpu": ["reward/diversity_partition", "reward/math_accuracy"],
    "nft_cpu": ["nft/question_accuracy", "nft/negative_clamped_fraction", "dynamic_sampling/rounds"],
    "t1_entropy_cpu": ["entropy_bonus/scale", "kl", "reward/overlong"],
    "cosine_length_cpu": ["reward/cosine_length"],
    "thinking_efficiency_cpu": ["reward/thinking_efficiency"],
    # the README's overrides for the objectives that have no recipe of their own
    "demo_cpu algorithm.objective=gspo algorithm.loss_aggregation=seq_mean_token_mean": ["gspo/seq_ratio_mean"],
    "demo_cpu algorithm.objective=cispo": ["cispo/clip_fraction"],
    "demo_cpu algorithm.old_logprobs=recompute algorithm.is_correction=tis": ["is/weight_mean", "mismatch/kl"],
}


# The demo recipe itself runs in `make test`; the other recipes and variants in `make test-all`.
@pytest.mark.parametrize(
    "name", [n if n == "demo_cpu" else pytest.param(n, marks=pytest.mark.heavy) for n in RL_RECIPES]
)
def test_rl_recipe_runs_through_rltune_demo(tmp_path, demo_assets, name):
    model_dir, data_file = demo_assets
    out = tmp_path / "run"
    name, *extra = name.split()
    overrides = [f"model.path={model_dir}", f"data.path={data_file}", f"train.output_dir={out}", *SHORT, *extra]
    if name == "t1_entropy_cpu":  # keep_per_group 8 of group_size 16 is the recipe's own; fewer samples per prompt
        overrides += ["rollout.group_size=8", "algorithm.keep_per_group=4"]
    if name != "demo_cpu":  # the method is what differs: its rollouts on the hf engine, which starts at once
        overrides += ["rollout.engine=hf"]
    proc = run_rltune("demo", REPO / "recipes" / f"{name}.yaml", *overrides, cwd=tmp_path)

    summary = json.loads((out / "demo_summary.json").read_text())
    # the warmed-up model answers about 30% right; two small steps move that by a few points at most
    assert 0.15 < summary["accuracy_before"] < 0.5
    assert abs(summary["accuracy_after"] - summary["accuracy_before"]) < 0.25
    assert f"{summary['accuracy_before']:.3f} -> {summary['accuracy_after']:.3f}" in proc.stdout
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    for key in RL_RECIPES[" ".join([name, *extra])]:
        assert all(math.isfinite(m[key]) for m in lines), key
    last = lines[-1]
    assert last["grad_norm"] > 0
    if name == "t1_entropy_cpu":
        assert last["kl"] > 0  # the policy moved away from the anchor within the step's mini-batches


def test_sft_recipe_runs_through_rltune_sft(tmp_path, demo_assets):
    model_dir, data_file = demo_assets
    proc = run_rltune(
        "sft",
        REPO / "recipes" / "entropy_sft_cpu.yaml",
        f"model.path={model_dir}",
        f"data.path={data_file}",
        f"train.output_dir={tmp_path / 'sft'}",
        "train.steps=3",
        cwd=tmp_path,
    )
    assert "sft: loss" in proc.stdout
    first, last = (float(x) for x in proc.stdout.split("sft: loss", 1)[1].split()[0:3:2])
    assert math.isfinite(first) and math.isfinite(last) and first > 0
