"""Every `algorithm.*` setting as the trainer's real update applies it.

For each setting the trainer runs one RL step (hf engine, demo model). The weights before every optimizer
step, its gradient and the samples it ran are recorded; the gradient is then recomputed here from the
formulas of ALGORITHMS.md on a plain per-sample forward of a fresh copy of the model, with nothing from
rltune's loss, objective, advantage or reward code. The trainer's gradient must equal that reference, and
the reference must differ from what the default settings give on the same batch and weights, so that a
trainer ignoring the setting (or flipping a sign, or swapping two bounds) fails.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from test_trainer import recipe
from transformers import AutoModelForCausalLM

from conftest import deep_merge
from plugins.my_rewards import variety, variety_on_odd_sums
from rltune.trainer import Trainer

BASE = {
    "rollout": {"temperature": 0.8},
    "rewards": [{"name": "plugins.my_rewards:variety", "weight": 1.0}, {"name": "math_accuracy", "weight": 0.5}],
    # Two passes over the batch with a large step: the second pass sees ratios far from 1, so the clip
    # bounds, the dual clip and the KL to the reference all act.
    "algorithm": {"clip_low": 0.2, "clip_high": 0.28, "epochs": 2, "mini_batches": 1},
    "train": {"steps": 1, "lr": 1e-2, "max_grad_norm": 1e6},
}
DEFAULT_ALGO = BASE["algorithm"]
# The trainer's packed, fused-head float32 gradient is the reference's to about 2e-6 (relative L2); a
# setting must move the reference 50 times further than the match tolerance to count as acting.
MATCH = 2e-5
DIFFERS = 1e-3


class Recorder:
    """Spies on a trainer: the scored batch, the trained batch, and per optimizer step the weights it
    started from, its gradient and the samples (of the trained batch) its micro-steps ran."""

    def __init__(self, trainer: Trainer):
        self.steps: list[tuple[dict, dict, list[int]]] = []
        pending: list[int] = []
        collect, update, micro_step, step = (
            trainer.collect_rollouts,
            trainer.updater.update,
            trainer.updater.micro_step,
            trainer.optimizer.step,
        )
        params = dict(trainer.policy.named_parameters())

        def collect_rollouts(step=None):
            batch, metrics = collect(step)
            self.scored = copy.copy(batch)
            return batch, metrics

        def spy_update(batch, step):
            self.trained = batch
            return update(batch, step)

        def spy_micro_step(batch, indices, norm, **kwargs):
            pending.extend(indices)
            return micro_step(batch, indices, norm, **kwargs)

        def spy_step(*args, **kwargs):
            weights = {n: p.detach().clone() for n, p in params.items()}
            grads = {n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None}
            self.steps.append((weights, grads, list(pending)))
            pending.clear()
            return step(*args, **kwargs)

        trainer.collect_rollouts = collect_rollouts
        trainer.updater.update, trainer.updater.micro_step = spy_update, spy_micro_step
        trainer.optimizer.step = spy_step


# --------------------------------------------------------------------------------------------------
# the reference: formulas only


def advantages(rewards: list[float], group_ids: list[int], estimator: str) -> list[float]:
    out = [0.0] * len(rewards)
    for g in set(group_ids):
        idx = [i for i, gi in enumerate(group_ids) if gi == g]
        r = [rewards[i] for i in idx]
        n, mean = len(r), sum(r) / len(r)
        for i, ri in zip(idx, r):
            if estimator == "grpo":
                std = math.sqrt(sum((x - mean) ** 2 for x in r) / (n - 1))
                out[i] = (ri - mean) / (std + 1e-6)
            elif estimator == "dr_grpo":
                out[i] = ri - mean
            else:  # rloo
                out[i] = ri - (sum(r) - ri) / (n - 1)
    return out


def token_rewards(completion: list[int]) -> list[float]:
    """plugins.my_rewards.TokenResidue's discounted returns."""
    rewards, returns, running = [(t % 3) / 10 for t in completion], [], 0.0
    for r in reversed(rewards):
        running = r + 0.9 * running
        returns.append(running)
    return returns[::-1]


def total_rewards(batch, specs: list[dict]) -> list[float]:
    """The weighted sum of the recipe's per-sample rewards: the plug-ins recomputed from the texts, the
    grader's verdicts (tested on their own in test_grading.py) read from the batch."""
    funcs = {"plugins.my_rewards:variety": variety, "plugins.my_rewards:variety_on_odd_sums": variety_on_odd_sums}
    out = []
    for i, text in enumerate(batch.completion_texts):
        completion = type("C", (), {"text": text})
        total = 0.0
        for spec in specs:
            if spec["name"] in funcs:
                total += spec["weight"] * funcs[spec["name"]](completion, batch.row_of(i))
            elif spec["name"] == "math_accuracy":
                total += spec["weight"] * float(batch.reward_components["math_accuracy"][i])
        out.append(total)
    return out


def sample_scores(model, prompt: list[int], completion: list[int], temperature: float):
    """Logprobs of the completion's tokens and the entropy of each of their distributions."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : len(prompt) - 1 + len(completion)].float()
    z = logits / temperature
    logp = torch.log_softmax(z, -1)
    picked = logp.gather(-1, torch.tensor(completion)[:, None])[:, 0]
    entropy = -(logp.exp() * logp).sum(-1)
    return picked, entropy


def reference_gradient(model, weights, batch, samples, adv, algo, recipe_cfg, ref_model=None, recomputed=None):
    """The gradient of one optimizer step over `samples` (indices of `batch`) from the formulas;
    `recomputed`: the trainer-side old logprobs of every sample (algorithm.old_logprobs: recompute)."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied to the embeddings
    model.zero_grad()
    T = recipe_cfg.rollout.temperature
    terms = list(algo.get("loss_terms", []))
    if algo.get("kl_coef", 0) > 0:
        terms.append({"name": "kl", "coef": algo["kl_coef"]})
    per_seq = []
    rows = []
    for i in samples:
        lp, ent = sample_scores(model, batch.prompt_ids[i], batch.completion_ids[i], T)
        rows.append((i, lp, ent))
    if any(t["name"] == "tea" for t in terms):  # TEA's means run over the micro-batch's tokens
        all_lp = torch.cat([lp.detach() for _, lp, _ in rows])
        all_a = torch.cat([adv[i].expand_as(lp) if adv[i].dim() == 0 else adv[i][: len(lp)] for i, lp, _ in rows])
        mean_lp, mean_a = all_lp.mean(), all_a.mean()
    for i, lp, ent in rows:
        n = len(lp)
        a = adv[i].expand(n) if adv[i].dim() == 0 else adv[i][:n]
        sampler = torch.tensor(batch.sampling_logprobs[i])
        old = recomputed[i] if algo.get("old_logprobs") == "recompute" else sampler
        ratio = torch.exp((lp - old).clamp(-20, 20))
        objective = algo.get("objective", "clipped")
        if objective == "gspo":
            kw = algo.get("objective_kwargs", {})
            s = torch.exp((lp - old).mean())
            seq = torch.maximum(-a[0] * s, -a[0] * s.clamp(1 - kw.get("clip_low", 3e-4), 1 + kw.get("clip_high", 4e-4)))
            loss = seq.expand(n)
        elif objective == "cispo":
            kw = algo.get("objective_kwargs", {})
            weight = ratio.detach().clamp(1 - kw.get("clip_low", 1.0), 1 + kw.get("clip_high", 3.0))
            loss = -weight * a * lp
        elif objective == "clipped":
            lo, hi = algo["clip_low"], algo["clip_high"]
            loss = torch.maximum(-a * ratio, -a * ratio.clamp(1 - lo, 1 + hi))
            if algo.get("dual_clip"):
                loss = torch.where(a < 0, torch.minimum(loss, -a * algo["dual_clip"]), loss)
        else:  # nft
            kw = algo["objective_kwargs"]
            group = [j for j, g in enumerate(batch.group_ids) if g == batch.group_ids[i]]
            correct = [float(batch.reward_components["math_accuracy"][j] > 0) for j in group]
            r_q = min(max(sum(correct) / len(correct), 0.02), 0.98)
            R = torch.exp((lp - old).clamp(max=10.0))
            weight = math.sqrt((1 - r_q) / r_q) if kw["normalize"] == 2 else 1 - r_q
            if batch.reward_components["math_accuracy"][i] > 0:
                loss = -torch.log(R) * weight
            else:
                proxy = (1 - r_q * R) / (1 - r_q)
                floored = proxy + (proxy.clamp(min=1.0) - proxy).detach()  # value floor 1, gradient kept
                loss = -kw["neg_weight"] * torch.log(floored) * weight
        correction = algo.get("is_correction", "none")
        if correction != "none":
            w = torch.exp(old - sampler)
            cap = algo.get("is_cap") or {"tis": 2.0, "mis": 2.0, "seq_mask": 3.0}[correction]
            if correction == "tis":
                w = w.clamp(max=cap)
            elif correction == "mis":
                w = torch.where(w > cap, torch.zeros_like(w), w)
            else:
                g = torch.exp((old - sampler).mean())
                w = torch.ones_like(w) * float(1 / cap <= g <= cap)
            loss = loss * w
        for term in terms:
            if term["name"] == "kl":
                with torch.no_grad():
                    ref_lp, _ = sample_scores(ref_model, batch.prompt_ids[i], batch.completion_ids[i], T)
                d = (ref_lp - lp).clamp(-10, 10)
                loss = loss + term["coef"] * (torch.exp(d) - d - 1).clamp(max=10)
            elif term["name"] == "entropy":
                loss = loss - term["coef"] * ent
            elif term["name"] == "tea":
                kw = term.get("kwargs", {})
                cov = (a - mean_a) * (lp.detach() - mean_lp)
                lam = (kw.get("cov_alpha", 10.0) * torch.softmax(cov, 0)).clamp(0, kw.get("clip_cov_ub", 5.0))
                loss = loss - term["coef"] * lam * ent
        per_seq.append(loss)
    mode = algo.get("loss_aggregation", "token_mean")
    constant = algo.get("loss_constant") or recipe_cfg.rollout.max_tokens
    tokens = sum(len(x) for x in per_seq)
    if mode == "token_mean":
        total = sum(x.sum() for x in per_seq) / tokens
    elif mode == "seq_mean_token_mean":
        total = sum(x.mean() for x in per_seq) / len(per_seq)
    elif mode == "constant":
        total = sum(x.sum() for x in per_seq) / (constant * len(per_seq))
    else:  # sum
        total = sum(x.sum() for x in per_seq) / constant
    total.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def flat(grads: dict) -> torch.Tensor:
    return torch.cat([grads[n].flatten() for n in sorted(grads)])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def kept_samples(scored, trained) -> list[int]:
    """The indices into `scored` of the samples in `trained` (a subset in the same order)."""
    out, j = [], 0
    for ids, g in zip(trained.completion_ids, trained.group_ids):
        while (scored.completion_ids[j], scored.group_ids[j]) != (ids, g):
            j += 1
        out.append(j)
        j += 1
    return out


PERTURBED = {"rollout": {"engine": "plugins.engines:PerturbedEngine"}, "train": {"sync_check": False}}
# name: (the setting, the settings its gradient must differ from: the default's, or the same without the
# feature where the setting only acts beside another one[, other recipe sections])
SETTINGS = {
    "default": ({}, None),
    "dr_grpo": ({"advantage": "dr_grpo"}, {}),
    "rloo": ({"advantage": "rloo"}, {}),
    "clip_tight_high": ({"clip_low": 0.01, "clip_high": 0.1}, {}),
    "clip_tight_low": ({"clip_low": 0.1, "clip_high": 0.01}, {"clip_low": 0.01, "clip_high": 0.1}),
    "dual_clip": ({"dual_clip": 1.02, "clip_low": 0.9, "clip_high": 5.0}, {"clip_low": 0.9, "clip_high": 5.0}),
    "seq_mean_token_mean": ({"loss_aggregation": "seq_mean_token_mean"}, {}),
    "constant": ({"loss_aggregation": "constant", "loss_constant": 7}, {}),
    "constant_default_divisor": (
        {"loss_aggregation": "constant"},
        {"loss_aggregation": "constant", "loss_constant": 7},
    ),
    "sum": ({"loss_aggregation": "sum", "loss_constant": 50}, {}),
    "kl": ({"kl_coef": 0.5}, {}),
    "entropy_bonus": ({"loss_terms": [{"name": "entropy", "coef": 0.05}]}, {}),
    "tea": ({"loss_terms": [{"name": "tea", "coef": 0.5, "kwargs": {"cov_alpha": 4.0, "clip_cov_ub": 0.5}}]}, {}),
    "nft": (
        {"objective": "nft", "objective_kwargs": {"normalize": 2, "neg_weight": 0.5}, "loss_aggregation": "sum"},
        {"loss_aggregation": "sum"},
    ),
    "keep_per_group": ({"keep_per_group": 2, "keep_rule": "extreme"}, None),
    "mini_batches": ({"mini_batches": 2}, None),  # these two change the steps themselves: checked as such
    "epochs": ({"epochs": 3}, None),
    "token_level_reward": ("rewards", {}),
    "gspo": (
        {
            "objective": "gspo",
            "objective_kwargs": {"clip_low": 0.01, "clip_high": 0.02},
            "loss_aggregation": "seq_mean_token_mean",
        },
        {"loss_aggregation": "seq_mean_token_mean"},
    ),
    "cispo": ({"objective": "cispo", "objective_kwargs": {"clip_high": 0.1}}, {}),
    # A sampler whose weights carry noise: the trainer's own log-probs as the old policy, then each correction
    "recompute": ({"old_logprobs": "recompute"}, {}, PERTURBED),
    "tis": (
        {"old_logprobs": "recompute", "is_correction": "tis", "is_cap": 1.05},
        {"old_logprobs": "recompute"},
        PERTURBED,
    ),
    "mis": (
        {"old_logprobs": "recompute", "is_correction": "mis", "is_cap": 1.05},
        {"old_logprobs": "recompute"},
        PERTURBED,
    ),
    "seq_mask": (
        {"old_logprobs": "recompute", "is_correction": "seq_mask", "is_cap": 1.02},
        {"old_logprobs": "recompute"},
        PERTURBED,
    ),
}
TOKEN_REWARD = {"name": "plugins.my_rewards:TokenResidue", "weight": 2.0}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_update_gradient_follows_the_formulas(tmp_path, demo_assets, name):
    sections = copy.deepcopy(BASE)
    algo = copy.deepcopy(DEFAULT_ALGO)
    setting, without, *others = SETTINGS[name]
    for other in others:
        deep_merge(sections, copy.deepcopy(other))
    if setting == "rewards":
        sections["rewards"].append(TOKEN_REWARD)
    else:
        deep_merge(algo, copy.deepcopy(setting))
        sections["algorithm"] = copy.deepcopy(algo)
    baseline = deep_merge(copy.deepcopy(DEFAULT_ALGO), copy.deepcopy(without or {}))
    cfg = recipe(tmp_path, *demo_assets, **sections)
    trainer = Trainer(cfg)
    reference_model = copy.deepcopy(trainer.ref_model) if trainer.ref_model is not None else None
    rec = Recorder(trainer)
    trainer.train()

    scored = rec.scored
    adv = advantages(total_rewards(scored, sections["rewards"]), scored.group_ids, algo.get("advantage", "grpo"))
    adv_default = advantages(total_rewards(scored, BASE["rewards"]), scored.group_ids, "grpo")
    samples = list(range(len(scored)))
    if "keep_per_group" in algo:
        samples = kept_samples(scored, rec.trained)
        for g in set(scored.group_ids):  # the kept ones have the largest |advantage| of their group (ties aside)
            group = [i for i, gi in enumerate(scored.group_ids) if gi == g]
            kept = [i for i in group if i in samples]
            assert len(kept) == algo["keep_per_group"]
            assert min(abs(adv[i]) for i in kept) >= max(abs(adv[i]) for i in group if i not in kept) - 1e-5
    to_tensor = lambda a: [torch.tensor(x) for x in a]  # noqa: E731
    adv_t, adv_default_t = to_tensor(adv), to_tensor(adv_default)
    if name == "token_level_reward":
        adv_t = [a + 2.0 * torch.tensor(token_rewards(c)) for a, c in zip(adv_t, scored.completion_ids)]
    n = len(samples)

    # Every pass splits the trained samples into `mini_batches` disjoint parts, one optimizer step each.
    assert len(rec.steps) == algo["epochs"] * algo["mini_batches"]
    for epoch in range(algo["epochs"]):
        parts = [s for _, _, s in rec.steps[epoch * algo["mini_batches"] : (epoch + 1) * algo["mini_batches"]]]
        assert sorted(i for p in parts for i in p) == list(range(n))
        assert all(len(p) in (n // algo["mini_batches"], -(-n // algo["mini_batches"])) for p in parts)

    model = AutoModelForCausalLM.from_pretrained(demo_assets[0])
    recomputed = None
    if algo.get("old_logprobs") == "recompute":  # the trainer's logprobs at the step's start weights
        model.load_state_dict(rec.steps[0][0], strict=False)
        with torch.no_grad():
            recomputed = [
                sample_scores(model, p, c, cfg.rollout.temperature)[0]
                for p, c in zip(scored.prompt_ids, scored.completion_ids)
            ]
        sampler_gap = max(
            float((r - torch.tensor(s)).abs().max()) for r, s in zip(recomputed, scored.sampling_logprobs)
        )
        assert sampler_gap > 0.01  # the perturbed sampler disagrees with the trainer
    differs = []
    for weights, grads, trained in rec.steps:
        chosen = [samples[i] for i in trained]
        want = reference_gradient(model, weights, scored, chosen, adv_t, algo, cfg, reference_model, recomputed)
        got = flat(grads)
        assert got.abs().sum() > 0
        assert relative(got, flat(want)) < MATCH, name
        if without is not None:
            other = reference_gradient(model, weights, scored, chosen, adv_default_t, baseline, cfg, None, recomputed)
            differs.append(relative(flat(want), flat(other)))
    if without is not None:
        assert max(differs) > DIFFERS, (name, differs)


@pytest.mark.parametrize(
    "case",
    [
        # the total reward is flat on even sums: those groups are dropped and more prompts sampled
        {"rewards": [{"name": "plugins.my_rewards:variety_on_odd_sums"}], "rounds": 4},
        # the total varies everywhere; the component named by dynamic_sampling_reward decides
        {
            "rewards": [
                {"name": "plugins.my_rewards:variety", "weight": 1.0},
                {"name": "plugins.my_rewards:variety_on_odd_sums", "weight": 0.0},
            ],
            "filter_on": "variety_on_odd_sums",
            "rounds": 4,
        },
        # one round allowed: the varied groups first, then flat ones top the batch up
        {"rewards": [{"name": "plugins.my_rewards:variety_on_odd_sums"}], "rounds": 1},
    ],
    ids=["total", "component", "top_up"],
)
def test_dynamic_sampling_drops_flat_groups_refills_and_trains_the_rest(tmp_path, demo_assets, case):
    cfg = recipe(
        tmp_path,
        *demo_assets,
        rewards=case["rewards"],
        algorithm={
            "dynamic_sampling": True,
            "dynamic_sampling_reward": case.get("filter_on"),
            "max_sampling_rounds": case["rounds"],
            "mini_batches": 1,
        },
        train={"steps": 1},
    )
    trainer = Trainer(cfg)
    rounds, trained = [], []
    stage = trainer.rollout_stage
    generate, update = stage.generate, trainer.updater.update
    stage.generate = lambda step, round_index: rounds.append(generate(step, round_index)) or rounds[-1]
    trainer.updater.update = lambda batch, step: trained.append(batch) or update(batch, step)
    metrics = trainer.train()

    def group_key(batch, g):
        idx = [i for i, gi in enumerate(batch.group_ids) if gi == g]
        return batch.rows[g]["prompt"], tuple(tuple(batch.completion_ids[i]) for i in idx)

    def varied(batch, g):
        idx = [i for i, gi in enumerate(batch.group_ids) if gi == g]
        values = {variety_on_odd_sums(type("C", (), {"text": batch.completion_texts[i]}), batch.rows[g]) for i in idx}
        return len(values) > 1

    kept = [group_key(b, g) for b in rounds for g in range(b.num_groups) if varied(b, g)]
    flat_groups = [group_key(b, g) for b in rounds for g in range(b.num_groups) if not varied(b, g)]
    assert flat_groups, "the seed must give at least one flat group"
    want = 4
    expected = (kept + flat_groups)[:want]
    got = [group_key(trained[0], g) for g in range(trained[0].num_groups)]
    assert got == expected
    assert metrics["dynamic_sampling/kept_groups"] == min(len(kept), want)
    assert metrics["dynamic_sampling/rounds"] == len(rounds)
    if case["rounds"] > 1:
        # sampling stopped at the first round that completed the batch, not before or after
        kept_before_last = sum(varied(b, g) for b in rounds[:-1] for g in range(b.num_groups))
        assert len(rounds) > 1 and kept_before_last < want <= len(kept)
    else:
        assert len(rounds) == 1 and len(kept) < want


def test_gradients_are_clipped_to_max_grad_norm(tmp_path, demo_assets):
    """train.max_grad_norm: the optimizer steps on the gradient scaled to that norm; the logged grad_norm
    is the norm before clipping."""
    sections = copy.deepcopy(BASE)
    sections["train"]["max_grad_norm"] = 1e-3
    trainer = Trainer(recipe(tmp_path, *demo_assets, **sections))
    rec = Recorder(trainer)
    metrics = trainer.train()
    norms = [float(flat(grads).norm()) for _, grads, _ in rec.steps]
    assert norms == pytest.approx([1e-3] * len(norms), rel=1e-4)
    assert metrics["grad_norm"] > 1e-2  # the unclipped norms were far larger
