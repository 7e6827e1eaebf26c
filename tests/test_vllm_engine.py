"""The colocated vLLM engine: sampling logprobs, finish reasons, and in-place weight sync."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from rltune.models import load_tokenizer
from rltune.rollout import SamplingSettings, build_engine

pytestmark = pytest.mark.slow


def hf_logprobs(model, prompt, completion, temperature):
    seq = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(seq).logits[0, len(prompt) - 1 : -1].float() / temperature
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def check_engine_follows_the_policy(engine, model, tokenizer, sampling) -> None:
    """The engine's sampling logprobs equal the policy's, before and after the policy changes and is
    synced into the engine; finish reasons agree with the end-of-sequence token."""
    prompts = [tokenizer("3+4=")["input_ids"], tokenizer("9+9=")["input_ids"]]
    batch = engine.generate(prompts, [{}, {}], sampling)
    assert batch.group_ids == [0, 0, 0, 0, 1, 1, 1, 1]
    for i in range(len(batch)):
        ids = batch.completion_ids[i]
        assert (batch.finish_reasons[i] == "stop") == (ids[-1] == tokenizer.eos_token_id)
        expected = hf_logprobs(model, batch.prompt_ids[i], ids, sampling.temperature)
        assert torch.allclose(expected, torch.tensor(batch.sampling_logprobs[i]), atol=1e-3)

    # Change the policy; after the sync the engine must sample from the new weights.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    engine.sync_weights(model)
    batch = engine.generate(prompts, [{}, {}], sampling)
    for i in range(len(batch)):
        expected = hf_logprobs(model, batch.prompt_ids[i], batch.completion_ids[i], sampling.temperature)
        assert torch.allclose(expected, torch.tensor(batch.sampling_logprobs[i]), atol=1e-3)


def test_vllm_logprobs_match_the_policy_before_and_after_a_weight_sync(demo_assets):
    pytest.importorskip("vllm")
    model_dir, _ = demo_assets
    tokenizer = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    engine = build_engine("vllm", model_path=str(model_dir), dtype="float32", max_model_len=64)
    try:
        check_engine_follows_the_policy(
            engine, model, tokenizer, SamplingSettings(n=4, temperature=0.8, max_tokens=12, seed=0)
        )
    finally:
        engine.close()
