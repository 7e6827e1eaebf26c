"""Trainer mechanics on a tiny model with the hf engine (fast; the vLLM path is in test_e2e.py)."""

import json
import math

import pytest
import torch
from accelerate.state import AcceleratorState

from conftest import deep_merge, demo_recipe
from rltune.errors import RLTuneError
from rltune.trainer import Trainer


def recipe(tmp_path, model_dir, data_file, **sections):
    """A fast variant of the demo recipe: hf engine, 2 steps of 4 prompts x 4 samples."""
    fast = {
        "rollout": {"engine": "hf", "group_size": 4, "max_tokens": 12},
        "train": {"steps": 2, "prompts_per_step": 4, "micro_batch_size": 16, "lr": 1e-3},
    }
    return demo_recipe(tmp_path, model_dir, data_file, deep_merge(fast, sections))


def grads(trainer, batch, micro_size):
    trainer.optimizer.zero_grad()
    indices = list(range(len(batch)))
    norm = trainer.updater.normalizer(batch, indices)
    for start in range(0, len(indices), micro_size):
        loss, _ = trainer.updater.micro_step(batch, indices[start : start + micro_size], norm)
        loss.backward()
    return torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "constant"])
def test_gradient_does_not_depend_on_micro_batch_size(tmp_path, demo_assets, mode):
    model_dir, data_file = demo_assets
    cfg = recipe(tmp_path, model_dir, data_file, algorithm={"loss_aggregation": mode, "kl_coef": 0.01})
    trainer = Trainer(cfg)
    batch, _ = trainer.collect_rollouts()
    batch.advantages = trainer.advantage_fn(batch.rewards, batch.groups())
    batch.extras["ref_logprobs"] = trainer.updater.reference_logprobs(batch)
    assert batch.advantages.abs().sum() > 0
    whole = grads(trainer, batch, len(batch))
    split = grads(trainer, batch, 3)
    assert whole.abs().sum() > 0
    assert torch.allclose(whole, split, rtol=1e-4, atol=1e-7)


def test_reference_model_only_when_kl_is_on(tmp_path, demo_assets):
    off = Trainer(recipe(tmp_path, *demo_assets))
    assert off.ref_model is None and not off.updater.needs_reference
    on = Trainer(recipe(tmp_path, *demo_assets, algorithm={"kl_coef": 0.1, "mini_batches": 2}))
    metrics = on.train()
    assert on.ref_model is not None
    assert metrics["kl"] > 0  # later mini-batches see a policy that moved away from the reference


def test_metrics_and_checkpoint_written(tmp_path, tiny_model_dir, arithmetic_file):
    trainer = Trainer(recipe(tmp_path, tiny_model_dir, arithmetic_file))
    trainer.train()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    for key in (
        "reward/total",
        "reward/math_accuracy",
        "reward/format",
        "entropy",
        "clip_fraction",
        "loss",
        "grad_norm",
        "completion/length_mean",
        "throughput/gen_tokens_per_s",
        "time/step_s",
        "lr",
    ):
        assert key in lines[-1], key
    step = lines[-1]
    assert 0 < step["time/rollout_s"] + step["time/update_s"] <= step["time/step_s"]
    params = sum(p.numel() for p in trainer.policy.parameters())
    assert step["trained_tokens"] >= 1
    expected = 6 * params * step["trained_tokens"] / step["time/update_s"] / 1e12
    assert step["throughput/update_tflops"] == pytest.approx(expected, rel=1e-6)
    from rltune.eval.plots import plot_training_curves

    png = plot_training_curves([("a", tmp_path / "run")], ["reward/total", "entropy"], tmp_path / "curves.png")
    assert png.stat().st_size > 1000
    ckpt = tmp_path / "run" / "checkpoint-2"
    assert (ckpt / "config.json").is_file() and (ckpt / "trainer_state.pt").is_file()
    assert not list((tmp_path / "run").glob(".checkpoint-*"))


@pytest.mark.parametrize("engine", ["hf", "vllm", "hf-lora", "vllm-lora"])
def test_resume_continues_exactly(tmp_path, demo_assets, engine):
    """A run resumed from its step-2 checkpoint ends with the weights of the uninterrupted run. With vLLM
    the resumed engine starts from the base model's files, so this holds only if the restore syncs the
    checkpoint's weights into it. A LoRA run's checkpoint holds adapters and no model config."""
    engine, _, lora = engine.partition("-")
    if engine == "vllm":
        pytest.importorskip("vllm")
    model_dir, data_file = demo_assets
    engine_section = {"engine": engine, "vllm": {"max_model_len": 64}}
    model_section = {"lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}} if lora else {}

    def run(folder, **train):
        trainer = Trainer(
            recipe(
                tmp_path / folder,
                model_dir,
                data_file,
                rollout=engine_section,
                model=model_section,
                train={"steps": 4, "output_dir": str(tmp_path / folder / "run"), **train},
            )
        )
        try:
            start = trainer.step
            trainer.train()
            return start, {k: v.clone() for k, v in trainer.policy.state_dict().items()}
        finally:
            trainer.close()

    _, expected = run("a", save_every=2)
    from transformers import AutoModelForCausalLM

    if not lora:
        at_step_2 = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "run" / "checkpoint-2").state_dict()
        assert any(not torch.allclose(at_step_2[k], expected[k]) for k in expected)  # steps 3-4 did train
    start, resumed = run("b", resume_from=str(tmp_path / "a" / "run" / "checkpoint-2"))
    assert start == 2
    for name, value in resumed.items():
        assert torch.allclose(value, expected[name], atol=1e-6), name


def test_resume_from_latest_without_checkpoint_fails_clearly(tmp_path, tiny_model_dir, arithmetic_file):
    with pytest.raises(RLTuneError, match="holds no complete checkpoint"):
        Trainer(recipe(tmp_path, tiny_model_dir, arithmetic_file, train={"resume_from": "latest"}))


def test_dynamic_sampling_keeps_groups_with_reward_variance(tmp_path, demo_assets):
    model_dir, data_file = demo_assets
    cfg = recipe(
        tmp_path,
        model_dir,
        data_file,
        rewards=[{"name": "math_accuracy"}],
        algorithm={"dynamic_sampling": True, "max_sampling_rounds": 6},
        train={"prompts_per_step": 6},
    )
    trainer = Trainer(cfg)
    batch, metrics = trainer.collect_rollouts()
    assert batch.num_groups == 6 and len(batch) == 24
    varied = sum(bool(batch.rewards[idx].std() > 0) for idx in batch.groups())
    assert varied == metrics["dynamic_sampling/kept_groups"]
    # With ~30% accuracy and 4 samples most groups vary; the kept ones come first.
    assert varied >= 4
    assert all(batch.rewards[idx].std() > 0 for idx in batch.groups()[:varied])


def test_lora_trains_adapters_and_the_vllm_engine_samples_from_them(tmp_path, demo_assets):
    """LoRA through the default engine: the adapters train, the export to vLLM merges them into plain
    HF names, and after the step's sync vLLM's log-probs are the adapted policy's, not the base's."""
    pytest.importorskip("peft")
    pytest.importorskip("vllm")
    from test_vllm_engine import hf_logprobs
    from transformers import AutoModelForCausalLM

    from rltune.rollout import SamplingSettings
    from rltune.rollout.vllm_engine import _export_state_dict

    model_dir = demo_assets[0]
    cfg = recipe(
        tmp_path,
        *demo_assets,
        rollout={"engine": "vllm", "vllm": {"max_model_len": 64}},
        model={"lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        algorithm={"kl_coef": 0.1},
        train={"lr": 5e-2},
    )
    trainer = Trainer(cfg)
    try:
        assert trainer.ref_model is None  # the adapter-free base is the reference
        trainer.train()
        exported = _export_state_dict(trainer.policy)
        base = AutoModelForCausalLM.from_pretrained(model_dir)
        assert set(exported) == set(base.state_dict())
        assert (tmp_path / "run" / "checkpoint-2" / "adapter").is_dir()

        prompts = [trainer.tokenizer("3+4=")["input_ids"], trainer.tokenizer("9+9=")["input_ids"]]
        batch = trainer.engine.generate(prompts, [{}, {}], SamplingSettings(n=4, temperature=1.0, max_tokens=8, seed=1))
        drift_from_base = 0.0
        for i in range(len(batch)):
            sampled = torch.tensor(batch.sampling_logprobs[i])
            adapted = hf_logprobs(trainer.policy, batch.prompt_ids[i], batch.completion_ids[i], 1.0)
            assert torch.allclose(adapted, sampled, atol=1e-3)
            original = hf_logprobs(base, batch.prompt_ids[i], batch.completion_ids[i], 1.0)
            drift_from_base = max(drift_from_base, float((original - sampled).abs().max()))
        assert drift_from_base > 1e-2  # the adapters moved the policy well beyond the tolerance above
    finally:
        trainer.close()


def test_oversampling_trains_on_a_subset_per_group(tmp_path, demo_assets):
    cfg = recipe(
        tmp_path,
        *demo_assets,
        rollout={"group_size": 8},
        algorithm={"keep_per_group": 3, "advantage": "rloo"},
        train={"steps": 1},
    )
    trainer = Trainer(cfg)
    seen = []
    update = trainer.updater.update
    trainer.updater.update = lambda batch, step: seen.append(batch) or update(batch, step)
    trainer.train()
    assert len(seen[0]) == 4 * 3 and all(len(idx) == 3 for idx in seen[0].groups())


@pytest.mark.parametrize("entropy_bonus", [False, True])
def test_lm_head_shortcuts_and_packing_change_nothing(tmp_path, tiny_model_dir, arithmetic_file, entropy_bonus):
    """The fused LM head (chunks of scored positions, logits recomputed in the backward pass),
    logits_to_keep (the LM head skips prompt positions) and packed rows (several samples a row) give the
    same loss, logprobs, entropies and gradients as slicing the full logits of one padded row per sample,
    with prompts of different lengths and completions of different lengths; with an entropy bonus the
    entropy's gradient too."""
    terms = {"loss_terms": [{"name": "entropy", "coef": 0.5}]} if entropy_bonus else {}
    trainer = Trainer(recipe(tmp_path, tiny_model_dir, arithmetic_file, algorithm=terms))
    assert (
        trainer.updater.model_keeps_logits
        and trainer.updater._fused_head(trainer.model) is not None
        and trainer.updater.packing
    )
    assert trainer.updater.needs_entropy_grad == entropy_bonus
    batch, _ = trainer.collect_rollouts()
    batch.prompt_ids[0] = batch.prompt_ids[0] + [5, 6, 7]  # a longer prompt: the others get left padding
    for i in range(1, len(batch), 2):  # short completions: right padding, or room to pack two in a row
        batch.completion_ids[i] = batch.completion_ids[i][: 1 + i % 3]
        batch.sampling_logprobs[i] = batch.sampling_logprobs[i][: 1 + i % 3]
    batch.advantages = torch.linspace(-1, 1, len(batch))

    def run(fused: bool, keeps_logits: bool, packing: bool):
        trainer.cfg.train.fused_lm_head, trainer.updater.model_keeps_logits, trainer.updater.packing = (
            fused,
            keeps_logits,
            packing,
        )
        assert (trainer.updater._fused_head(trainer.model) is not None) == fused
        mb = trainer.updater.collate(batch, list(range(len(batch))))
        out = trainer.updater.policy_forward(trainer.model, mb, with_entropy_grad=entropy_bonus)
        rows = mb.input_ids.shape[0]
        return grads(trainer, batch, len(batch)), out.logprobs.detach(), out.entropy.detach(), rows, mb

    reference = run(fused=False, keeps_logits=False, packing=False)
    mask = reference[4].completion_mask.bool()
    assert reference[0].abs().sum() > 0 and mask.sum() < mask.numel() and reference[3] == len(batch)
    for fused, keeps_logits, packing in [
        (True, True, True),
        (True, True, False),
        (False, True, True),
        (False, True, False),
    ]:
        got = run(fused, keeps_logits, packing)
        assert (got[3] < len(batch)) == packing  # packed: fewer rows than samples
        assert torch.allclose(got[0], reference[0], rtol=1e-5, atol=1e-7)
        assert torch.allclose(got[1][mask], reference[1][mask], atol=1e-5)
        assert torch.allclose(got[2][mask], reference[2][mask], atol=1e-5)


def test_fused_head_multiplies_in_bf16_under_mixed_precision_like_the_plain_head(
    tmp_path, tiny_model_dir, arithmetic_file
):
    """train.mixed_precision=bf16 (float32 weights, bf16 autocast): the fused LM head runs outside the model's
    forward, which accelerate wrapped in autocast, and must still multiply in bf16 as the plain head inside
    it does: the same logprobs and gradients up to float32 rounding, not a float32 head that is several
    times slower on a GPU (and differs from the plain head by bf16's rounding of the logits). The reference
    model, which accelerate does not wrap, scores alike: before any update its logprobs are the policy's."""
    # accelerate keeps one state per process, fixed by its first Accelerator; this test needs another, so
    # it resets the state before and after (as accelerate's own tests do).
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        cfg = recipe(
            tmp_path, tiny_model_dir, arithmetic_file, train={"mixed_precision": "bf16"}, algorithm={"kl_coef": 0.1}
        )
        trainer = Trainer(cfg)
        assert trainer.accelerator.mixed_precision == "bf16" and trainer.ref_model is not None
        check_fused_head_equals_plain_head(trainer)
        trainer.cfg.train.fused_lm_head = True
        metrics = trainer.train()  # whole steps under autocast: rollouts, reference, update, checkpoint
        assert all(math.isfinite(metrics[key]) for key in ("loss", "kl", "grad_norm", "entropy"))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def check_fused_head_equals_plain_head(trainer):
    batch, _ = trainer.collect_rollouts()
    batch.advantages = torch.linspace(-1, 1, len(batch))
    batch.extras["ref_logprobs"] = trainer.updater.reference_logprobs(batch)
    mb = trainer.updater.collate(batch, list(range(len(batch))))
    mask = mb.completion_mask.bool()
    assert torch.equal(mb.ref_logprobs, trainer.updater.policy_forward(trainer.model, mb).logprobs.detach())
    results = []
    for fused in (False, True):
        trainer.cfg.train.fused_lm_head = fused
        out = trainer.updater.policy_forward(trainer.model, mb)
        results.append((out.logprobs.detach()[mask], grads(trainer, batch, len(batch))))
    (plain_logprobs, plain_grads), (fused_logprobs, fused_grads) = results
    assert torch.allclose(fused_logprobs, plain_logprobs, atol=1e-4)
    assert plain_grads.abs().sum() > 0
    assert (fused_grads - plain_grads).norm() / plain_grads.norm() < 1e-3


def test_compile_lm_head_compiles_the_heads_arithmetic_and_not_the_layers(tmp_path, tiny_model_dir, arithmetic_file):
    """train.compile=lm_head: the fused head's chunk arithmetic goes through torch.compile (a forward and a
    backward call of `rltune.lm_head.compiled`), the decoder layers stay eager, and the gradients are the
    eager head's."""
    from rltune import lm_head
    from rltune.models import base_model

    trainer = Trainer(recipe(tmp_path, tiny_model_dir, arithmetic_file, train={"compile": "lm_head"}))
    layers = base_model(trainer.policy).get_decoder().layers
    assert all(getattr(layer, "_compiled_call_impl", None) is None for layer in layers)
    batch, _ = trainer.collect_rollouts()
    batch.advantages = torch.linspace(-1, 1, len(batch))
    calls = lm_head.compiled.cache_info()
    compiled_grads = grads(trainer, batch, len(batch))
    after = lm_head.compiled.cache_info()
    assert (after.hits + after.misses) - (calls.hits + calls.misses) == 2
    trainer.cfg.train.compile = False
    assert torch.allclose(compiled_grads, grads(trainer, batch, len(batch)), rtol=1e-5, atol=1e-7)


def test_zero_advantage_samples_are_left_out_with_the_same_update(tmp_path, tiny_model_dir, arithmetic_file):
    """Samples whose advantages are zero add exactly nothing under the clipped objective: leaving them out
    of the forward/backward gives the same gradients at every optimizer step, the same logged loss, and
    fewer sequences run. With a loss term (here an entropy bonus) every sample is trained."""
    results = {}
    for skip in (True, False):
        cfg = recipe(
            tmp_path / str(skip),
            tiny_model_dir,
            arithmetic_file,
            # a negligible lr: Adam would turn float32 rounding of near-zero gradients into whole steps
            train={"skip_zero_advantage": skip, "micro_batch_size": 3, "lr": 1e-12},
            algorithm={"mini_batches": 2},
        )
        trainer = Trainer(cfg)
        batch, _ = trainer.collect_rollouts()
        adv = torch.linspace(-1, 1, len(batch))
        adv[[g for group in batch.groups()[1:3] for g in group]] = 0.0  # two flat groups
        batch.advantages = adv
        seen, grads = [], []
        forward, step = trainer.updater.policy_forward, trainer.optimizer.step
        trainer.updater.policy_forward = lambda model, mb, seen=seen, forward=forward, **kw: (
            seen.append(len(mb.indices)) or forward(model, mb, **kw)
        )
        trainer.optimizer.step = lambda *a, grads=grads, step=step, trainer=trainer, **kw: (
            grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters()])) or step(*a, **kw)
        )
        metrics = trainer.updater.update(batch, trainer.step)
        results[skip] = (grads, metrics, sum(seen))
    (g_skip, m_skip, n_skip), (g_all, m_all, n_all) = results[True], results[False]
    assert n_all == 16 and n_skip == 8
    assert len(g_skip) == len(g_all) == 2  # two mini-batches
    for a, b in zip(g_skip, g_all):
        assert a.abs().sum() > 0
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)  # float32 summation order
    assert m_skip["loss"] == pytest.approx(m_all["loss"], rel=1e-5, abs=1e-8)
    assert m_skip["grad_norm"] == pytest.approx(m_all["grad_norm"], rel=1e-5)

    with_term = Trainer(
        recipe(tmp_path / "term", tiny_model_dir, arithmetic_file, algorithm={"loss_terms": [{"name": "entropy"}]})
    )
    assert with_term.updater.trained_samples(batch, list(range(16))) == list(range(16))
    assert Trainer(recipe(tmp_path / "flat", tiny_model_dir, arithmetic_file)).updater.trained_samples(
        batch, [4, 5, 6, 7]
    ) == [4]  # all flat: one sample still runs, so every process takes part in the backward pass


@pytest.mark.parametrize("packing", [False, True])
def test_token_budget_groups_samples_by_length_with_the_same_update(tmp_path, tiny_model_dir, arithmetic_file, packing):
    """train.micro_batch_tokens: every forward's input (packed rows, or one padded row a sample) stays within
    the token budget (or holds one sample), fewer positions run than in one fixed micro-batch, and the
    gradients and logged loss are those of the whole batch in one forward."""
    results = {}
    for budget in (None, 60):
        cfg = recipe(
            tmp_path / str(budget),
            tiny_model_dir,
            arithmetic_file,
            # the batch below is rewritten, so the engine never sampled it: no sync check on it
            train={
                "micro_batch_size": 16,
                "micro_batch_tokens": budget,
                "lr": 1e-12,
                "packing": packing,
                "sync_check": False,
            },
            algorithm={"mini_batches": 1},
        )
        trainer = Trainer(cfg)
        assert trainer.updater.packing == packing
        batch, _ = trainer.collect_rollouts()
        for i in range(len(batch)):  # completions of 1 to 12 tokens in no particular order, prompts of 3 to 14
            keep = 1 + (i * 5) % 12
            batch.prompt_ids[i] = (batch.prompt_ids[i] * 14)[: 15 - keep]
            batch.completion_ids[i] = (batch.completion_ids[i] * 12)[:keep]
            batch.sampling_logprobs[i] = (batch.sampling_logprobs[i] * 12)[:keep]
        batch.advantages = torch.linspace(-1, 1, len(batch))
        shapes, grads = [], []
        forward, step = trainer.updater.policy_forward, trainer.optimizer.step
        trainer.updater.policy_forward = lambda model, mb, shapes=shapes, forward=forward, **kw: (
            shapes.append((len(mb.indices), *mb.input_ids.shape)) or forward(model, mb, **kw)
        )
        trainer.optimizer.step = lambda *a, grads=grads, step=step, trainer=trainer, **kw: (
            grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters()])) or step(*a, **kw)
        )
        metrics = trainer.updater.update(batch, trainer.step)
        results[budget] = (shapes, grads[0], metrics)
    (whole_shapes, whole_grad, whole_metrics), (shapes, grad, metrics) = results[None], results[60]
    assert len(whole_shapes) == 1 and len(shapes) > 1
    assert sum(samples for samples, _, _ in shapes) == 16
    assert all(rows * width <= 60 or samples == 1 for samples, rows, width in shapes)
    if packing:  # the budget counts packed rows: a micro-batch closes only when the next sample needs a new row
        assert all(rows * width > 60 - width for _, rows, width in shapes[:-1])
    else:  # padded rows: grouping by length runs fewer pads than one micro-batch of everything
        _, rows, width = whole_shapes[0]
        assert sum(r * w for _, r, w in shapes) < rows * width
    assert grad.abs().sum() > 0
    assert torch.allclose(grad, whole_grad, rtol=1e-4, atol=1e-7)  # float32 summation order
    assert metrics["loss"] == pytest.approx(whole_metrics["loss"], rel=1e-5, abs=1e-8)


def test_compiled_hf_engine_samples_from_the_updated_weights(tmp_path, demo_assets):
    """rollout.hf_compile with train.compile: after an update, the compiled decoding step (the weights are
    its inputs, not constants) samples what the default loop samples from the new weights."""
    from rltune.rollout import SamplingSettings, build_engine

    model_dir, data_file = demo_assets  # right some of the time: the rewards differ, the update moves weights
    cfg = recipe(tmp_path, model_dir, data_file, rollout={"hf_compile": True}, train={"compile": True, "lr": 1e-2})
    trainer = Trainer(cfg)
    prompts = [trainer.tokenizer(q)["input_ids"] for q in ("1+2=", "13+4=", "5=")]
    sampling = SamplingSettings(n=4, temperature=1.0, max_tokens=12, prompt_seeds=[1, 2, 3])
    before = trainer.engine.generate(prompts, [{}] * 3, sampling)
    trainer.train_step()  # a rollout through the compiled step, an update, the weight sync
    after = trainer.engine.generate(prompts, [{}] * 3, sampling)
    default = build_engine("hf", model=trainer.engine.model, tokenizer=trainer.tokenizer).generate(
        prompts, [{}] * 3, sampling
    )
    assert after.completion_ids == default.completion_ids
    assert after.completion_ids != before.completion_ids  # the update changed what is sampled


def test_fused_optimizer_takes_the_loop_optimizers_step(tmp_path, demo_assets):
    trainers = {
        fused: Trainer(
            recipe(tmp_path / str(fused), *demo_assets, train={"fused_optimizer": fused}, algorithm={"mini_batches": 1})
        )
        for fused in (True, False)
    }
    assert trainers[True].optimizer.optimizer.defaults["fused"]
    assert not trainers[False].optimizer.optimizer.defaults["fused"]
    start = [p.detach().clone() for p in trainers[True].policy.parameters()]
    batch, _ = trainers[True].collect_rollouts()
    batch.advantages = trainers[True].advantage_fn(batch.rewards, batch.groups())
    assert batch.advantages.abs().sum() > 0
    for trainer in trainers.values():
        trainer.updater.update(batch, trainer.step)
    fused, loop = ([p.detach() for p in trainer.policy.parameters()] for trainer in trainers.values())
    moved = max((a - s).abs().max().item() for a, s in zip(fused, start))
    assert moved > 1e-4
    for a, b in zip(fused, loop):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=moved * 1e-3)


def test_update_counts_the_tokens_it_trains_on(tmp_path, demo_assets):
    cfg = recipe(tmp_path, *demo_assets, algorithm={"epochs": 2}, train={"skip_zero_advantage": False})
    trainer = Trainer(cfg)
    batch, _ = trainer.collect_rollouts()
    batch.advantages = trainer.advantage_fn(batch.rewards, batch.groups())
    metrics = trainer.updater.update(batch, trainer.step)
    sample_tokens = sum(len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids))
    assert metrics["trained_tokens"] == 2 * sample_tokens


def test_the_recipes_stop_strings_end_the_training_samples(tmp_path, demo_assets):
    """rollout.stop reaches the engine: a sample ends with the token that closes the demo's \\boxed{...}."""
    trainer = Trainer(recipe(tmp_path, *demo_assets, rollout={"stop": ["}"]}, train={"steps": 1}))
    trainer.train()
    batch, tokenizer = trainer.last_batch, trainer.tokenizer
    closed = [ids for ids in batch.completion_ids if "}" in tokenizer.decode(ids)]
    assert len(closed) >= len(batch) // 2
    for ids in closed:
        assert tokenizer.decode(ids, skip_special_tokens=True).endswith("}")
        assert "}" not in tokenizer.decode(ids[:-1])


def test_the_periodic_eval_runs_only_when_the_recipe_asks_for_it(tmp_path, demo_assets):
    model_dir, data_file = demo_assets
    bench = {"benchmarks": [f"{data_file}:question:answer"], "n": 2, "limit": 2}
    for eval_section, wanted in (({"every": 0}, False), ({"every": 2}, True), ({"every": 0, "at_start": True}, True)):
        with Trainer(
            recipe(tmp_path / str(len(str(eval_section))), model_dir, data_file, eval={**bench, **eval_section})
        ) as trainer:
            assert (trainer.periodic_eval is not None) is wanted
            assert (trainer.periodic_eval in trainer.callbacks) is wanted
