"""Settings at their documented defaults and guards at their limits, each just under and just over.

A guard tested only far past its threshold passes with a wrong threshold or a wrong reference; a
default tested only by passing the value explicitly passes with another default. These tests leave the
value unset, sit a hair either side of it, and give temporal guards enough points to tell the first
value from the previous one.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_trainer import recipe

from rltune.config import RecipeConfig, from_dict
from rltune.errors import RLTuneError
from rltune.guards import COLLAPSE_SHARE, START_SHARE, CollapseGuard
from rltune.mismatch import check_sync, importance_weights
from rltune.trainer import Trainer
from rltune.update import sync_tolerance

# --- importance-weight caps: unset, they are 2 (tis, mis) and 3 (seq_mask) ---------------------------


def weights_for(ratios: list[float], mode: str) -> list[float]:
    """Token weights of one sequence per ratio (each its own one-token sequence), is_cap left unset."""
    sampler = torch.zeros(len(ratios), 1)
    trainer = torch.tensor([[math.log(r)] for r in ratios])
    weights, _ = importance_weights(trainer, sampler, torch.ones(len(ratios), 1), mode, None)
    return weights[:, 0].tolist()


def test_truncated_is_caps_token_weights_at_two_by_default():
    under, over = weights_for([1.99, 2.01], "tis")
    assert under == pytest.approx(1.99, rel=1e-5) and over == pytest.approx(2.0, rel=1e-6)


def test_masked_is_drops_token_weights_over_two_by_default():
    assert weights_for([1.99, 2.01], "mis") == pytest.approx([1.99, 0.0], rel=1e-5)


def test_sequence_mask_keeps_one_third_to_three_by_default():
    kept = weights_for([2.99, 1 / 2.99], "seq_mask")
    dropped = weights_for([3.01, 1 / 3.01], "seq_mask")
    assert kept == [1.0, 1.0] and dropped == [0.0, 0.0]


def test_the_sequence_mask_uses_the_geometric_mean_not_the_product():
    # Two tokens at 1.9 each: the product (3.61) is over 3, the geometric mean (1.9) is not.
    d = torch.tensor([[math.log(1.9), math.log(1.9)]])
    weights, _ = importance_weights(d, torch.zeros(1, 2), torch.ones(1, 2), "seq_mask", None)
    assert weights.tolist() == [[1.0, 1.0]]


# --- the sync check: 0.005 per token in float32, 0.1 in half precision -------------------------------


def recipe_with(**sections) -> RecipeConfig:
    data = {"model": {"path": "m"}, "data": {"path": "d.jsonl"}}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return from_dict(RecipeConfig, data, "test")


def test_sync_tolerance_follows_the_precision_when_unset():
    assert sync_tolerance(recipe_with(rollout={"engine": "hf"})) == 0.005
    assert sync_tolerance(recipe_with(rollout={"engine": "hf"}, train={"mixed_precision": "bf16"})) == 0.1
    assert sync_tolerance(recipe_with(rollout={"engine": "hf"}, model={"path": "m", "dtype": "bfloat16"})) == 0.1
    assert sync_tolerance(recipe_with(rollout={"engine": "vllm", "vllm": {"dtype": "bfloat16"}})) == 0.1
    assert sync_tolerance(recipe_with(rollout={"engine": "vllm", "vllm": {"dtype": "float32"}})) == 0.005
    assert sync_tolerance(recipe_with(rollout={"engine": "hf"}, train={"sync_check_tolerance": 0.02})) == 0.02


def test_sync_check_stops_just_over_its_tolerance_only():
    check_sync(0.0049, 0.005, "hf", 0)
    with pytest.raises(RLTuneError, match="stale weights: at step 1"):
        check_sync(0.0051, 0.005, "hf", 0)
    with pytest.raises(RLTuneError):
        check_sync(float("nan"), 0.005, "hf", 0)


# --- the collapse guard: 90% of ln V for max_bad_updates steps, in a run that started under 70% ---------


def run_guard(entropies: list[float], vocab: int = 1000, steps: int = 3) -> int | None:
    """The step the guard stops at (1-based), or None."""
    guard = CollapseGuard(vocab, steps)
    for step, share in enumerate(entropies, start=1):
        try:
            guard.check(step, share * math.log(vocab))
        except RLTuneError:
            return step
    return None


def test_collapse_threshold_and_start_share_are_the_documented_ones():
    assert (COLLAPSE_SHARE, START_SHARE) == (0.9, 0.7)
    assert run_guard([0.69, 0.91, 0.91, 0.91]) == 4
    assert run_guard([0.69, 0.89, 0.89, 0.89, 0.89]) is None  # just under the uniform share: not collapsed
    assert run_guard([0.71, 0.95, 0.95, 0.95, 0.95]) is None  # started just over the start share: not applied


def test_collapse_needs_that_many_steps_in_a_row_and_a_good_step_resets_it():
    assert run_guard([0.5, 0.95, 0.95, 0.5, 0.95, 0.95, 0.5]) is None
    assert run_guard([0.5, 0.95, 0.95], steps=2) == 3
    # The start is judged on the first step, not the previous one.
    assert run_guard([0.5, 0.95, 0.95, 0.95, 0.95, 0.95], steps=5) == 6


def test_collapse_guard_counts_the_recipe_max_bad_updates(tmp_path, demo_assets):
    trainer = Trainer(recipe(tmp_path, *demo_assets, train={"steps": 1, "max_bad_updates": 5}))
    try:
        assert trainer.updater.collapse.steps_in_a_row == 5
        assert trainer.updater.collapse.uniform == pytest.approx(math.log(trainer.policy.config.vocab_size))
    finally:
        trainer.close()


# --- weight growth: the norm against the norm the run started with, 3x by default -----------------------


def scale_weights(trainer: Trainer, factor: float) -> None:
    with torch.no_grad():
        for p in trainer.policy.parameters():
            p.mul_(factor)


def test_weight_growth_stops_just_over_three_times_the_first_norm(tmp_path, demo_assets):
    trainer = Trainer(recipe(tmp_path, *demo_assets, train={"steps": 1}))
    try:
        scale_weights(trainer, 2.99)
        trainer.updater.check_weights(0)
        scale_weights(trainer, 3.01 / 2.99)
        with pytest.raises(RLTuneError, match=r"grew from .* \(x3\.0, over train.max_weight_growth=3\)"):
            trainer.updater.check_weights(1)
    finally:
        trainer.close()


def test_a_slow_drift_is_measured_from_the_first_norm_not_the_previous_one(tmp_path, demo_assets):
    trainer = Trainer(recipe(tmp_path, *demo_assets, train={"steps": 1}))
    try:
        for step in range(2):  # x1.5 each time: never 3x the previous norm, 3.4x the first one at the third
            scale_weights(trainer, 1.5)
            trainer.updater.check_weights(step)
        scale_weights(trainer, 1.5)
        with pytest.raises(RLTuneError, match="grew from"):
            trainer.updater.check_weights(2)
    finally:
        trainer.close()


def test_max_weight_growth_from_the_recipe_applies(tmp_path, demo_assets):
    trainer = Trainer(recipe(tmp_path, *demo_assets, train={"steps": 1, "max_weight_growth": 1.5}))
    try:
        scale_weights(trainer, 1.49)
        trainer.updater.check_weights(0)
        scale_weights(trainer, 1.51 / 1.49)
        with pytest.raises(RLTuneError, match="max_weight_growth=1.5"):
            trainer.updater.check_weights(1)
    finally:
        trainer.close()


def test_the_growth_reference_survives_a_resume(tmp_path, demo_assets):
    """A drift split over several resumed runs is measured from the first run's norm, not each resume's."""
    from rltune.guards import weight_norm

    first = Trainer(recipe(tmp_path, *demo_assets, train={"steps": 1, "save_every": 1, "lr": 1e-2}))
    started = first.updater.initial_weight_norm
    first.train()
    first.close()
    resumed = Trainer(
        recipe(tmp_path, *demo_assets, train={"steps": 2, "save_every": 1, "lr": 1e-2, "resume_from": "latest"})
    )
    try:
        assert weight_norm(resumed.policy.parameters()) != pytest.approx(started, rel=1e-6)  # the weights moved
        assert resumed.updater.initial_weight_norm == started
    finally:
        resumed.close()
