"""The learning signal: sampler/trainer mismatch metrics and importance weights from their formulas, and the
sync check that stops a run whose engine samples from other weights than the trainer's."""

from __future__ import annotations

import math

import pytest
import torch
from test_trainer import recipe

from rltune.errors import RLTuneError
from rltune.mismatch import importance_weights, mismatch_metrics
from rltune.trainer import Trainer

# two sequences, the second one token shorter; d = trainer - sampler per token
TRAINER = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -3.0, 0.0]])
SAMPLER = torch.tensor([[-1.5, -2.0, -0.1], [-0.2, -2.0, 0.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
D = [[0.5, 0.0, -0.4], [0.0, -1.0]]


def test_mismatch_metrics_match_their_formulas():
    tokens = [d for seq in D for d in seq]
    metrics = mismatch_metrics([(TRAINER, SAMPLER, MASK)])
    assert metrics["mismatch/log_ratio_abs_mean"] == pytest.approx(sum(abs(d) for d in tokens) / 5)
    assert metrics["mismatch/kl"] == pytest.approx(sum(math.exp(d) - 1 - d for d in tokens) / 5)
    means = [sum(seq) / len(seq) for seq in D]
    assert metrics["mismatch/seq_ratio_max"] == pytest.approx(math.exp(max(abs(m) for m in means)))
    # split into parts (micro-batches), the same numbers
    halves = mismatch_metrics([(TRAINER[:1], SAMPLER[:1], MASK[:1]), (TRAINER[1:], SAMPLER[1:], MASK[1:])])
    assert halves == pytest.approx(metrics)


def test_importance_weights_match_their_formulas():
    ratio = [[math.exp(d) for d in seq] for seq in D]
    tis, m = importance_weights(TRAINER, SAMPLER, MASK, "tis", 1.5)
    assert tis[0].tolist() == pytest.approx([min(r, 1.5) for r in ratio[0]])
    assert tis[1].tolist() == pytest.approx([min(r, 1.5) for r in ratio[1]] + [0.0])  # padding weighs nothing
    assert m["is/cut_fraction"] == pytest.approx(1 / 5)  # exp(0.5) > 1.5 only
    mis, _ = importance_weights(TRAINER, SAMPLER, MASK, "mis", 1.5)
    assert mis[0].tolist() == pytest.approx([0.0, 1.0, ratio[0][2]])
    # geometric means: exp(0.1/3) = 1.034 (kept), exp(-0.5) = 0.607 (dropped at cap 1.5: below 1/1.5)
    seq, m = importance_weights(TRAINER, SAMPLER, MASK, "seq_mask", 1.5)
    assert seq.tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    assert m["is/cut_fraction"] == pytest.approx(2 / 5)
    default_cap, _ = importance_weights(TRAINER, SAMPLER, MASK, "tis", None)
    assert default_cap[0, 0].item() == pytest.approx(math.exp(0.5))  # below the default cap of 2


def test_a_stale_engine_stops_the_run_at_the_first_step_after_the_broken_sync(tmp_path, demo_assets):
    """A plug-in engine whose sync_weights does nothing: step 1 samples from the right (starting) weights,
    step 2 from weights one update old, and the run stops there, naming the engine and the drift."""
    stale = {"rollout": {"engine": "plugins.engines:StaleEngine"}, "train": {"steps": 3}}
    trainer = Trainer(recipe(tmp_path / "checked", *demo_assets, **stale))
    with pytest.raises(RLTuneError, match=r"samples from stale weights: at step 2 the 'plugins.engines:StaleEngine'"):
        trainer.train()
    assert trainer.step == 1
    stale["train"]["sync_check"] = False
    unchecked = Trainer(recipe(tmp_path / "unchecked", *demo_assets, **stale))
    assert unchecked.train()["mismatch/log_ratio_abs_mean"] > 0.05  # what the check caught, two updates stale


@pytest.mark.parametrize("old_logprobs", ["sampler", "recompute"])
def test_the_sync_check_passes_with_a_working_sync_and_logs_the_mismatch(tmp_path, demo_assets, old_logprobs):
    metrics = Trainer(recipe(tmp_path, *demo_assets, algorithm={"old_logprobs": old_logprobs})).train()
    assert 0 <= metrics["mismatch/log_ratio_abs_mean"] < 1e-5  # the hf engine samples from the policy itself
    assert metrics["mismatch/seq_ratio_max"] == pytest.approx(1.0, abs=1e-5)


def test_a_vllm_engine_whose_sync_is_broken_stops_the_run(tmp_path, demo_assets):
    pytest.importorskip("vllm")
    trainer = Trainer(
        recipe(tmp_path, *demo_assets, rollout={"engine": "vllm", "vllm": {"max_model_len": 64}}, train={"steps": 3})
    )
    try:
        trainer.engine.sync_weights = lambda model: None  # step 1's update never reaches vLLM
        assert trainer.train_step()["mismatch/log_ratio_abs_mean"] < 1e-4  # float32 vLLM on the CPU: ~5e-8
        trainer.step += 1
        with pytest.raises(RLTuneError, match="samples from stale weights: at step 2 the 'vllm' engine"):
            trainer.train_step()
    finally:
        trainer.close()


def test_is_correction_needs_recomputed_old_logprobs(tmp_path, demo_assets):
    from rltune.errors import ConfigError

    with pytest.raises(ConfigError, match="algorithm.is_correction.*set algorithm.old_logprobs=recompute"):
        recipe(tmp_path, *demo_assets, algorithm={"is_correction": "tis"})


def test_a_sampler_with_other_weights_is_measured_and_weighted(tmp_path, demo_assets):
    """A real model sampling with a perturbed copy of the weights: the mismatch metrics see it, the sync
    check (at its default tolerance) stops the run, and with the check off and truncated IS the weights
    move off 1 and the largest are cut."""
    perturbed = {"rollout": {"engine": "plugins.engines:PerturbedEngine"}}
    with pytest.raises(RLTuneError, match="stale weights: at step 1"):
        Trainer(recipe(tmp_path / "checked", *demo_assets, **perturbed)).train()
    metrics = Trainer(
        recipe(
            tmp_path / "corrected",
            *demo_assets,
            **perturbed,
            algorithm={"old_logprobs": "recompute", "is_correction": "tis", "is_cap": 1.2},
            train={"sync_check": False},
        )
    ).train()
    assert metrics["mismatch/log_ratio_abs_mean"] > 0.02 and metrics["mismatch/kl"] > 0
    assert metrics["mismatch/seq_ratio_max"] > 1.05
    assert metrics["is/cut_fraction"] > 0 and metrics["is/weight_mean"] != pytest.approx(1.0, abs=1e-3)
