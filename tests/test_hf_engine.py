import torch
from transformers import AutoModelForCausalLM

from rltune.models import load_tokenizer
from rltune.rollout import SamplingSettings, build_engine


def test_hf_engine_groups_logprobs_and_finish_reasons(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    engine = build_engine("hf", model=model, tokenizer=tokenizer)
    prompts = [tokenizer("1+2=")["input_ids"], tokenizer("12+30=")["input_ids"]]
    batch = engine.generate(
        prompts, [{"gold": "3"}, {"gold": "42"}], SamplingSettings(n=3, temperature=0.7, max_tokens=6, seed=0)
    )
    assert batch.group_ids == [0, 0, 0, 1, 1, 1] and batch.groups() == [[0, 1, 2], [3, 4, 5]]
    assert all(len(c) == len(lp) for c, lp in zip(batch.completion_ids, batch.sampling_logprobs))
    for ids, reason in zip(batch.completion_ids, batch.finish_reasons):
        assert (reason == "stop") == (ids[-1] == tokenizer.eos_token_id)
        assert reason == "stop" or len(ids) == 6
    # The sampling logprobs are the model's own (temperature-scaled) logprobs of those tokens.
    i = 4
    seq = torch.tensor([prompts[1] + batch.completion_ids[i]])
    with torch.no_grad():
        logits = model(seq).logits[0, len(prompts[1]) - 1 : -1] / 0.7
    expected = logits.log_softmax(-1).gather(-1, torch.tensor(batch.completion_ids[i])[:, None]).squeeze(-1)
    assert torch.allclose(expected, torch.tensor(batch.sampling_logprobs[i]), atol=1e-4)


def test_hf_engine_samples_a_prompt_the_same_whatever_its_batch(tiny_model_dir):
    """Per-prompt seeds: a prompt's completions depend on its seed only, not on its batch-mates or the
    engine's batch size."""
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [tokenizer(q)["input_ids"] for q in ("1+2=", "3+4=", "5+6=")]
    sampling = SamplingSettings(n=4, temperature=1.0, top_p=0.9, max_tokens=8, prompt_seeds=[7, 8, 9])
    together = build_engine("hf", model=model, tokenizer=tokenizer).generate(prompts, [{}] * 3, sampling)
    alone = build_engine("hf", model=model, tokenizer=tokenizer, batch_size=3).generate(
        prompts[1:2], [{}], SamplingSettings(n=4, temperature=1.0, top_p=0.9, max_tokens=8, prompt_seeds=[8])
    )
    assert together.completion_ids[4:8] == alone.completion_ids
    assert len({tuple(c) for c in together.completion_ids[4:8]}) > 1  # the 4 samples are not copies
    other = SamplingSettings(n=4, temperature=1.0, top_p=0.9, max_tokens=8, prompt_seeds=[7, 80, 9])
    redrawn = build_engine("hf", model=model, tokenizer=tokenizer).generate(prompts, [{}] * 3, other)
    assert redrawn.completion_ids[:4] == together.completion_ids[:4]
    assert redrawn.completion_ids[4:8] != together.completion_ids[4:8]


def test_row_sampler_draws_from_the_tempered_distribution_and_keeps_its_logprobs():
    """Each token is drawn with its softmax(logits / T) probability (min-p, top-k and top-p cut off, in that
    order, never a token outside them), and the logprob kept is that of the drawn token before the cuts."""
    from rltune.rollout.hf_engine import RowSampler

    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -3.0])
    rows = 4000
    scores = logits.expand(rows, -1).clone()
    for temperature, top_p, top_k, min_p in (
        (1.0, 1.0, 0, 0.0),
        (0.5, 1.0, 0, 0.0),
        (1.0, 0.8, 0, 0.0),
        (1.0, 1.0, 3, 0.0),
        (1.0, 1.0, 0, 0.3),
        (1.0, 0.5, 3, 0.0),
    ):
        gens = [torch.Generator().manual_seed(i) for i in range(rows)]
        drawn, logprobs = RowSampler(gens, temperature, top_p, 1, top_k, min_p).draw(scores)
        probs = (logits / temperature).softmax(-1)
        expected = probs.clone()
        if min_p:
            expected[expected < min_p * expected.max()] = 0
        if top_k:
            expected[top_k:] = 0  # the logits are in descending order
        expected /= expected.sum()
        if top_p < 1:
            expected[(expected.cumsum(-1) - expected) > top_p] = 0
            expected /= expected.sum()
        freq = torch.bincount(drawn, minlength=len(logits)).float() / rows
        assert torch.allclose(freq, expected, atol=0.025), (temperature, top_p, top_k, min_p, freq, expected)
        assert (expected[drawn] > 0).all()
        assert torch.allclose(logprobs, probs.log()[drawn])


def test_hf_engine_decodes_like_transformers_generate(tiny_model_dir):
    """The engine's own decoding loop (KV cache, left-padded prompts of different lengths, stop at EOS)
    gives transformers `generate`'s greedy tokens."""
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [tokenizer(q)["input_ids"] for q in ("1+2=", "12+30=", "7=")]
    batch = build_engine("hf", model=model, tokenizer=tokenizer).generate(
        prompts, [{}] * 3, SamplingSettings(n=1, temperature=0.0, max_tokens=10)
    )
    for ids, completion in zip(prompts, batch.completion_ids):
        reference = model.generate(
            torch.tensor([ids]), do_sample=False, max_new_tokens=10, eos_token_id=tokenizer.eos_token_id
        )
        assert completion == reference[0, len(ids) :].tolist()


def test_shared_prompts_once_and_finished_rows_leave_the_batch_without_changing_any_sample(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [tokenizer(q)["input_ids"] for q in ("1+2=", "13+4=", "5=")]
    sampling = SamplingSettings(n=4, temperature=1.0, max_tokens=12, prompt_seeds=[1, 2, 3])
    rows_per_forward = []
    hook = model.register_forward_pre_hook(
        lambda _, args, kw: rows_per_forward.append(len(kw["input_ids"])), with_kwargs=True
    )
    together = build_engine("hf", model=model, tokenizer=tokenizer).generate(prompts, [{}] * 3, sampling)
    hook.remove()
    lengths = sorted(len(c) for c in together.completion_ids)
    assert lengths[0] < lengths[-1]  # some rows end early: the case under test
    # the 3 prompts once each, then after each step the rows still decoding: those whose completion is
    # longer than that step
    assert rows_per_forward == [3] + [sum(n > step for n in lengths) for step in range(1, lengths[-1])]
    one_by_one = build_engine("hf", model=model, tokenizer=tokenizer, batch_size=1).generate(
        prompts, [{}] * 3, sampling
    )
    assert together.completion_ids == one_by_one.completion_ids
    for a, b in zip(together.sampling_logprobs, one_by_one.sampling_logprobs):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)


def test_compiled_static_decoding_samples_what_the_default_loop_does(tiny_model_dir):
    """rollout.hf_compile: the fixed-shape loop through torch.compile gives the default loop's samples and
    logprobs (prompts of different lengths, rows that end early), and a later rollout with other prompts
    within the same cache length replays the compiled step without compiling it again."""
    from torch._dynamo.utils import counters

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch._dynamo.reset()
    counters.clear()
    compiled = build_engine("hf", model=model, tokenizer=tokenizer, compile=True)
    rollouts = (
        (("1+2=", "13+4=", "5="), SamplingSettings(n=4, temperature=1.0, max_tokens=12, prompt_seeds=[1, 2, 3])),
        (
            ("40+2=", "7+7=", "100+1="),  # as many rows, other prompt lengths
            SamplingSettings(n=4, temperature=0.8, top_p=0.9, max_tokens=12, prompt_seeds=[4, 5, 6]),
        ),
    )
    for i, (questions, sampling) in enumerate(rollouts):
        prompts = [tokenizer(q)["input_ids"] for q in questions]
        default = build_engine("hf", model=model, tokenizer=tokenizer).generate(prompts, [{}] * len(prompts), sampling)
        if i == 0:
            static = compiled.generate(prompts, [{}] * len(prompts), sampling)
            assert counters["stats"]["unique_graphs"] >= 1  # the steps did run compiled
        else:
            with torch._dynamo.config.patch(error_on_recompile=True):
                static = compiled.generate(prompts, [{}] * len(prompts), sampling)
        lengths = sorted(len(c) for c in default.completion_ids)
        assert lengths[0] < lengths[-1]  # some rows end early
        assert static.completion_ids == default.completion_ids
        assert static.finish_reasons == default.finish_reasons
        for a, b in zip(static.sampling_logprobs, default.sampling_logprobs):
            assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)


def test_hf_engine_honours_stop_strings_and_top_k(tiny_model_dir):
    """The same checks as the vLLM engines' (test_vllm_engine.check_sampling_settings), on the hf engine."""
    from test_vllm_engine import check_sampling_settings

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    check_sampling_settings(build_engine("hf", model=model, tokenizer=tokenizer), tokenizer)
