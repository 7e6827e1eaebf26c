"""Loading models: the attention rltune switches them to computes what transformers' own sdpa computes."""

import torch
from transformers import AutoModelForCausalLM

from rltune.config import ModelConfig
from rltune.demo import build_tiny_model
from rltune.models import SHARED_KV_SDPA, load_causal_lm


def test_shared_kv_attention_gives_transformers_logits_and_gradients(tmp_path):
    build_tiny_model(40, seed=3, num_attention_heads=4, num_key_value_heads=2).save_pretrained(tmp_path)
    ours = load_causal_lm(str(tmp_path), ModelConfig(path=str(tmp_path)))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert ours.config._attn_implementation == SHARED_KV_SDPA and plain.config._attn_implementation == "sdpa"
    ids = torch.randint(2, 40, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding: the mask goes to the attention, the path this attention changes
    mask[1, :1] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    results = []
    for model in (ours, plain):
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        # one cached decoding step: a single query against the cache, under the mask
        step = model(
            input_ids=ids[:, :1],
            attention_mask=torch.cat([mask, mask[:, :1]], dim=1),
            position_ids=positions[:, -1:] + 1,
            past_key_values=out.past_key_values,
        )
        loss = (out.logits[mask.bool()] ** 2).mean() + step.logits.square().mean()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((out.logits.detach(), step.logits.detach(), grads))
    (logits, step, grads), (plain_logits, plain_step, plain_grads) = results
    torch.testing.assert_close(logits, plain_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step, plain_step, rtol=1e-5, atol=1e-5)
    for g, plain_g in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(g, plain_g, rtol=1e-4, atol=1e-6)


def test_saved_models_keep_transformers_attention(tmp_path):
    build_tiny_model(40, num_attention_heads=4, num_key_value_heads=2).save_pretrained(tmp_path / "a")
    load_causal_lm(str(tmp_path / "a"), ModelConfig(path=str(tmp_path / "a"))).save_pretrained(tmp_path / "b")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "b").config._attn_implementation == "sdpa"
